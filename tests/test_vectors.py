"""The golden vectors the ChiselSim specs stream (make vectors): every layer type and the unroll covered."""
import json

import numpy as np

from hashiflex import ref
from hashiflex.export import load_design
from hashiflex.sim.stream import from_beats
from hashiflex.vectors import cases, write_vectors


def test_cases_cover_every_layer_type_and_parallel_beats():
    from hashiflex.export import design_from_graph

    ops, depthwise, par, par_change, per_side = set(), False, False, False, False
    for g, target in cases().values():
        d = design_from_graph(g, 2, target)
        ops |= {l["op"] for l in d["layers"]}
        depthwise |= any(l.get("groups", 1) > 1 for l in d["layers"])
        per_side |= any(isinstance(l.get("padding"), list) for l in d["layers"])
        pars = [d["input"]["parallelism"]] + [l["parallelism"] for l in d["layers"]]
        par |= max(pars) > 1
        par_change |= len(set(pars)) > 1
    from hashiflex.ops import OPS

    assert ops == {op.op for op in OPS.values()}  # every registered layer type
    assert depthwise and par and par_change and per_side


def test_vectors_decode_to_the_golden_outputs(tmp_path):
    for folder in write_vectors(tmp_path, images=3):
        d, g = load_design(folder / "design.json")
        v = json.loads((folder / "vectors.json").read_text())
        last = d["layers"][-1]
        x = from_beats(np.asarray(v["in_beats"]), tuple(d["input"]["shape"]), d["input"]["parallelism"],
                       d["input"]["bits"], d["input"]["signed"])
        y = from_beats(np.asarray(v["out_beats"]), tuple(last["out_shape"]), last["parallelism"],
                       last["out_width"], last["out_signed"])
        assert np.array_equal(ref.run(g, x), y.reshape(len(x), -1))
        assert v["ii_cycles_per_image"] == d["hardware"]["ii_cycles_per_image"]
