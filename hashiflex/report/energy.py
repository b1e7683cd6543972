"""Energy per image, estimated from adder and register counts and widths (a model, not a measurement).

Per-operation energies: M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014,
45 nm at 0.9 V: 8-bit integer add 0.03 pJ, 32-bit add 0.1 pJ, i.e. ~3.1 fJ per added bit (the 32-bit figure
per bit). Scaled to 7 nm at 0.7 V by dynamic energy ~ C V^2 with C ~ feature size: (7/45) * (0.7/0.9)^2.

Assumptions, stated so they can be changed: every adder of a layer switches once per beat of that layer's
stream (a beat carries P pixels and the layer has P lanes, so each lane's adders switch once per pixel), with
the width of the layer's accumulator (an upper bound: inner nodes are narrower); a requant rounding adder once
per beat; every flip-flop bit is clocked every cycle (no clock gating) and costs as much as one added bit.
Wires, control and leakage are not counted.

The NPU head (when there is one): Horowitz's 8-bit multiply (0.2 pJ at 45 nm) scaled by the product of the operand
widths over 8 x 8 (array multipliers grow with both widths), plus an accumulator-wide add, for every MAC slot of the
schedule (tiles x chunks x lanes x width per image, padding included: the array always runs); and every weight bit
read once per image at Horowitz's 8 KB SRAM read (10 pJ per 64 bits at 45 nm), both scaled to 7 nm like the adders.
"""
from __future__ import annotations

from dataclasses import dataclass

ADD_FJ_PER_BIT_45NM = 100.0 / 32          # Horowitz 2014: 32-bit add 0.1 pJ
SCALE_45_TO_7 = (7 / 45) * (0.7 / 0.9) ** 2
ADD_FJ_PER_BIT = ADD_FJ_PER_BIT_45NM * SCALE_45_TO_7
FF_FJ_PER_BIT_CYCLE = ADD_FJ_PER_BIT
MUL8_FJ = 200.0 * SCALE_45_TO_7                # Horowitz 2014: 8-bit multiply 0.2 pJ
SRAM_FJ_PER_BIT = 10_000.0 / 64 * SCALE_45_TO_7  # Horowitz 2014: 8 KB SRAM, 64-bit read 10 pJ


@dataclass(frozen=True)
class Energy:
    adders_pj: float
    registers_pj: float
    npu_pj: float = 0.0

    @property
    def total_pj(self) -> float:
        return self.adders_pj + self.registers_pj + self.npu_pj


def npu_energy_pj(n: dict) -> float:
    """Energy per image of the NPU's MACs and weight reads (design.json ``npu`` section)."""
    from ..npu import NpuConfig

    cfg = NpuConfig.from_json(n)
    slots = cfg.tiles * cfg.chunks * cfg.macs
    in_width, in_signed = cfg.in_format
    mac_fj = MUL8_FJ * cfg.weight_bits * (in_width + (0 if in_signed else 1)) / 64 + cfg.acc_width * ADD_FJ_PER_BIT
    return (slots * mac_fj + slots * cfg.weight_bits * SRAM_FJ_PER_BIT) / 1000


def modelled_flip_flop_bits(hw_params: dict) -> int:
    """Flip-flop bits the generator reports: adder-graph pipeline registers plus line buffers, plus with an NPU its
    registers as the module table's parameters count them (:func:`npu_flip_flop_bits`) (skip FIFOs, control and
    the pool accumulators' counters are not in it; a Yosys count has everything)."""
    return hw_params["register_bits"] + hw_params["line_buffer_bits"] + npu_flip_flop_bits(hw_params)


def npu_flip_flop_bits(hw_params: dict) -> int:
    """The NPU module's flip-flop bits (0 without an NPU): its input copies, registered products, partial sums,
    dot products, accumulators, requantization stages, both bias banks and both logits buffers, counted from its
    parameters in hw_params.json's module table as the area model prices them."""
    if not hw_params.get("npu"):
        return 0
    from .area_model import module_features

    name = hw_params["npu"]["module"]
    f = module_features(name, hw_params)
    if f is None:
        raise ValueError(f"hw_params.npu.module: {name!r} is not in the module table (hw_params.modules)")
    return int(f["flip_flop_bits"])


def energy_per_image(design: dict, hw_params: dict, flip_flop_bits: int | None = None) -> Energy:
    """``flip_flop_bits``: a netlist count; None uses :func:`modelled_flip_flop_bits`."""
    if flip_flop_bits is None:
        flip_flop_bits = modelled_flip_flop_bits(hw_params)
    add_fj = 0.0
    for hw in hw_params["layers"]:
        beats = hw["beats_in"] if hw["op"] == "sum_pool" else hw["beats_out"]
        # a max pool's comparator costs about an adder of its width
        add_fj += (hw["adders"] + hw["comparators"]) * hw["out_width"] * beats * ADD_FJ_PER_BIT
    reg_fj = flip_flop_bits * hw_params["ii_cycles_per_image"] * FF_FJ_PER_BIT_CYCLE
    return Energy(add_fj / 1000, reg_fj / 1000, npu_energy_pj(design["npu"]) if design.get("npu") else 0.0)
