"""Channel liveness (analysis.live_channels): a channel it calls dead never reaches the network's output."""
import numpy as np

from hashiflex.analysis import annotate, live_channels
from hashiflex.ops import op_of
from tests.helpers import random_graph, random_inputs


def _golden_with(g, x, tensor: str, channel: int, values: np.ndarray) -> np.ndarray:
    """The golden model (each op's ``golden``, as ref's NumPy spec runs them) with ``tensor``'s ``channel``
    replaced by ``values``."""
    infos = annotate(g)
    acts, exps = {"input": np.asarray(x, dtype=np.int64)}, {"input": g.input.type.exp}
    if tensor == "input":
        acts["input"] = acts["input"].copy()
        acts["input"][:, channel] = values
    for layer, info, srcs in zip(g.layers, infos, g.sources()):
        y = op_of(layer).golden(layer, info, [acts[s] for s in srcs], [exps[s] for s in srcs])
        if layer.name == tensor:
            y = y.copy()
            y[:, channel] = values
        acts[layer.name], exps[layer.name] = y, info.out_exp
    y = acts[g.layers[-1].name]
    return y.reshape(len(y), -1)


def _kill_columns(g, rng) -> None:
    """Zero every weight that reads one random input channel of each dense conv and linear layer."""
    for layer in g.layers:
        q = getattr(layer, "q", None)
        if q is None or getattr(layer, "groups", 1) != 1:
            continue
        j = int(rng.integers(q.shape[1]))
        codes = q.term_codes
        codes[:, :, j] = 0
        object.__setattr__(q, "codes", codes if q.terms > 1 else codes[0])


def test_a_dead_channel_never_reaches_the_output():
    """On random graphs (residual adds, pools, concatenations, lookup tables, channel selections, multi-term
    weights) with one input column of every dense conv and linear zeroed: setting any channel the liveness calls
    dead to either end of its tensor's bounds leaves the network's output unchanged."""
    graphs_with_dead = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        g = random_graph(seed, max_c=4, max_hw=6, convs=3, dag=True, max_pool=seed % 2 == 0, concat=seed % 3 == 0,
                         lut=seed % 4 == 1, select=seed % 3 == 1, max_terms=1 + seed % 2)
        _kill_columns(g, rng)
        live = live_channels(g)
        bounds = {"input": g.input.range, **{i.name: i.out_bounds for i in annotate(g)}}
        assert set(live) == set(bounds) and live[g.layers[-1].name].all()
        x = random_inputs(g, 2, seed)
        want = _golden_with(g, x, "input", 0, x[:, 0])
        dead = [(t, int(c)) for t, v in live.items() for c in np.flatnonzero(~v)]
        for t, c in dead:
            for v in bounds[t]:  # any value in the tensor's bounds, whatever the rest computes
                assert np.array_equal(_golden_with(g, x, t, c, v), want), (seed, t, c, v)
        graphs_with_dead += bool(dead)
    assert graphs_with_dead >= 6  # not vacuous: the zeroed columns kill channels in most graphs


def test_liveness_through_every_op_type():
    """Each op's channels_read on a graph that holds every layer type the random graphs draw (see the fixture of
    the golden tests): none raises, and the output is always live."""
    from hashiflex.ops import OPS

    seen = set()
    for seed in range(40):
        g = random_graph(seed, max_c=4, max_hw=6, convs=3, dag=True, max_pool=True, concat=True, lut=True,
                         select=True)
        live = live_channels(g)
        assert live[g.layers[-1].name].all()
        seen |= {op_of(l).op for l in g.layers}
    assert seen == {op.op for op in OPS.values()}, sorted({op.op for op in OPS.values()} - seen)
