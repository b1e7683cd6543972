"""The energy model's register count (hashiflex.report.energy): with an NPU its registers are counted from the
module table, as the area model prices them."""
import pytest

from hashiflex.report.area_model import module_features
from hashiflex.report.energy import FF_FJ_PER_BIT_CYCLE, energy_per_image, modelled_flip_flop_bits, npu_flip_flop_bits
from tests.report.test_area_model import NPU, NPU_HW


def test_the_npus_registers_are_in_the_modelled_flip_flops_and_clocked_every_cycle():
    base = {"register_bits": 1000, "line_buffer_bits": 24, "ii_cycles_per_image": 16, "layers": []}
    ff = npu_flip_flop_bits(NPU_HW)
    assert ff == module_features(NPU["name"], NPU_HW)["flip_flop_bits"]
    # the registered products alone: lanes x width x (input bits + sign + weight bits)
    assert ff > 5 * 16 * (8 + 1 + 8)
    assert npu_flip_flop_bits(base) == 0 and modelled_flip_flop_bits(base) == 1024
    with_npu = dict(base, npu=NPU_HW["npu"], modules=NPU_HW["modules"])
    assert modelled_flip_flop_bits(with_npu) == 1024 + ff
    e0, e1 = energy_per_image({}, base), energy_per_image({}, with_npu)
    assert e1.registers_pj - e0.registers_pj == pytest.approx(ff * 16 * FF_FJ_PER_BIT_CYCLE / 1000)
    lost = dict(with_npu, npu={"module": "Npu_x"})
    with pytest.raises(ValueError, match=r"hw_params.npu.module: 'Npu_x' is not in the module table"):
        modelled_flip_flop_bits(lost)
