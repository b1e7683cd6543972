"""Read VCD traces (Verilator's, or any) and decode the ready/valid streams in them.

A :class:`Trace` holds every signal's value changes; values are sampled at the clock's rising edges (what the
registers see), so a cycle here is a cycle of the simulation. Streams are found by name: a scope with
``<p>_valid`` and ``<p>_ready`` has a stream ``<p>`` (Chisel's Decoupled ports: ``in``, ``out``, ``load``, ``a``...);
:func:`stream_stats` counts, per stream and over a window of cycles, the transfers (valid and ready), the stalls
(valid, not ready: back-pressure) and the starved cycles (ready, not valid). With the design, :func:`layer_activity`
turns the layer instances' output transfers into pixels, and :func:`images_in_flight` follows the images between
the top's input and output.

``python -m hashiflex.sim.vcd TRACE.vcd`` prints the stream table; the same file opens in GTKWave.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

UNKNOWN = -1  # x or z


@dataclass
class Signal:
    name: str            # hierarchical: TOP.Hashiflex_digits_cnn.conv1.out_valid
    width: int
    times: np.ndarray    # int64, increasing: when the value changed
    values: np.ndarray   # int64 (object for buses over 62 bits; UNKNOWN for x/z): the value from that time on

    def at(self, t: np.ndarray | int) -> np.ndarray:
        """Values in effect at times ``t`` (the last change at or before t; UNKNOWN before the first)."""
        i = np.searchsorted(self.times, np.asarray(t), side="right") - 1
        return np.where(i >= 0, self.values[np.maximum(i, 0)], UNKNOWN)

    @property
    def scope(self) -> str:
        return self.name.rsplit(".", 1)[0]

    @property
    def short(self) -> str:
        return self.name.rsplit(".", 1)[1]


@dataclass
class Trace:
    signals: dict[str, Signal]
    edges: np.ndarray            # times of the clock's rising edges
    cycle_time: int | None       # time units per cycle (None: a single edge or none)
    path: Path | None = None
    clock: str | None = None
    _sampled: dict = field(default_factory=dict, repr=False)

    @property
    def cycles(self) -> np.ndarray:
        """Cycle number of each rising edge (time // cycle_time; StreamSim's traces count from reset)."""
        if self.cycle_time:
            return self.edges // self.cycle_time
        return np.arange(len(self.edges))

    def names(self, pattern: str | None = None) -> list[str]:
        """Signal names, optionally those matching a regular expression (case-insensitive search)."""
        if pattern is None:
            return sorted(self.signals)
        rx = re.compile(pattern, re.IGNORECASE)
        return sorted(n for n in self.signals if rx.search(n))

    def scopes(self) -> list[str]:
        return sorted({s.scope for s in self.signals.values()})

    def sampled(self, name: str) -> np.ndarray:
        """The signal's value just before each rising edge: what a register clocked at that edge sees."""
        if name not in self._sampled:
            if name not in self.signals:
                raise KeyError(f"no signal {name!r} in the trace (see Trace.names())")
            self._sampled[name] = self.signals[name].at(self.edges - 1)
        return self._sampled[name]

    def window(self, first: int, stop: int) -> np.ndarray:
        """Mask over the rising edges whose cycle is in [first, stop)."""
        c = self.cycles
        return (c >= first) & (c < stop)


def read_vcd(path: str | Path, clock: str | None = None) -> Trace:
    """Parse a VCD file. ``clock``: the clock's hierarchical name (default: the shallowest signal named
    ``clock`` or ``clk``)."""
    from vcd.reader import TokenKind, tokenize

    scope: list[str] = []
    names: dict[str, list[str]] = {}   # id code -> names (aliases share a code)
    widths: dict[str, int] = {}
    changes: dict[str, list[tuple[int, int]]] = {}
    t = 0
    with open(path, "rb") as f:
        for tok in tokenize(f):
            k = tok.kind
            if k is TokenKind.CHANGE_TIME:
                t = int(tok.data)
            elif k is TokenKind.CHANGE_SCALAR:
                v = tok.data.value
                changes.setdefault(tok.data.id_code, []).append((t, int(v) if v in "01" else UNKNOWN))
            elif k is TokenKind.CHANGE_VECTOR:
                v = tok.data.value
                changes.setdefault(tok.data.id_code, []).append((t, v if isinstance(v, int) else UNKNOWN))
            elif k is TokenKind.SCOPE:
                scope.append(tok.data.ident)
            elif k is TokenKind.UPSCOPE:
                scope.pop()
            elif k is TokenKind.VAR:
                d = tok.data
                names.setdefault(d.id_code, []).append(".".join(scope + [d.reference]))
                widths[d.id_code] = d.size
    signals = {}
    for code, ns in names.items():
        ch = changes.get(code, [])
        times = np.fromiter((c[0] for c in ch), dtype=np.int64, count=len(ch))
        if widths[code] <= 62:
            values = np.fromiter((c[1] for c in ch), dtype=np.int64, count=len(ch))
        else:  # wide buses (memory words) stay Python ints
            values = np.array([c[1] for c in ch] or [], dtype=object)
        if len(times) > 1:  # several changes at one time: the last one holds
            keep = np.append(times[1:] != times[:-1], True)
            times, values = times[keep], values[keep]
        for n in ns:
            signals[n] = Signal(n, widths[code], times, values)
    if clock is None:
        cands = [n for n in signals if n.rsplit(".", 1)[-1].lower() in ("clock", "clk")]
        clock = min(cands, key=lambda n: (n.count("."), n)) if cands else None
    edges = np.zeros(0, dtype=np.int64)
    if clock is not None:
        s = signals[clock]
        rising = (s.values[1:] == 1) & (s.values[:-1] == 0)
        edges = s.times[1:][rising]
    cycle_time = int(np.median(np.diff(edges))) if len(edges) > 1 else None
    return Trace(signals, edges, cycle_time, Path(path), clock)


# ------------------------------------------------------------------------------------------------ streams
@dataclass(frozen=True)
class Stream:
    scope: str
    port: str                  # in, out, load, a, b, out_0 ...

    @property
    def name(self) -> str:
        return f"{self.scope}.{self.port}"

    @property
    def valid(self) -> str:
        return f"{self.name}_valid"

    @property
    def ready(self) -> str:
        return f"{self.name}_ready"


def streams(trace: Trace) -> list[Stream]:
    """Every ready/valid pair in the trace, by scope (signals shared with a parent scope appear in both)."""
    out = []
    for n in trace.names(r"_valid$"):
        base = n[: -len("_valid")]
        if base + "_ready" in trace.signals:
            scope, port = base.rsplit(".", 1)
            out.append(Stream(scope, port))
    return out


@dataclass(frozen=True)
class StreamStats:
    stream: str
    transfers: int     # valid and ready: a beat moved
    stalls: int        # valid, not ready: the consumer held it back
    starved: int       # ready, not valid: the consumer waited for data
    cycles: int


def stream_stats(trace: Trace, first: int = 0, stop: int | None = None,
                 pattern: str | None = None) -> list[StreamStats]:
    """Per stream (optionally those whose name matches ``pattern``), counts over cycles [first, stop)."""
    w = trace.window(first, stop if stop is not None else 1 << 62)
    rx = re.compile(pattern) if pattern else None
    out = []
    for s in streams(trace):
        if rx and not rx.search(s.name):
            continue
        v, r = trace.sampled(s.valid)[w] == 1, trace.sampled(s.ready)[w] == 1
        out.append(StreamStats(s.name, int((v & r).sum()), int((v & ~r).sum()), int((~v & r).sum()), int(w.sum())))
    return out


def top_scope(trace: Trace, design: dict) -> str:
    """The scope of the generated top module (``TOP.Hashiflex_<name>`` in Verilator's traces)."""
    want = f"Hashiflex_{design['name']}"
    for sc in trace.scopes():
        if sc.rsplit(".", 1)[-1] == want:
            return sc
    raise KeyError(f"no scope {want!r} in the trace")


def layer_activity(trace: Trace, design: dict, first: int = 0, stop: int | None = None) -> list[dict]:
    """Per layer of the design: output beats, pixels (beats x parallelism) and stall cycles of its instance's
    output stream over the window. Instances are named after their layers by the generator; with an NPU the
    backbone sits one level down (``backbone``)."""
    top = top_scope(trace, design)
    stats = {s.stream: s for s in stream_stats(trace, first, stop)}
    rows = []
    for l in design["layers"]:
        for base in (f"{top}.{l['name']}", f"{top}.backbone.{l['name']}"):
            s = stats.get(base + ".out")
            if s is not None:
                rows.append({"layer": l["name"], "op": l["op"], "parallelism": l["parallelism"],
                             "beats": s.transfers, "pixels": s.transfers * l["parallelism"], "stalls": s.stalls,
                             "starved": s.starved})
                break
    return rows


def images_in_flight(trace: Trace, design: dict) -> tuple[np.ndarray, np.ndarray]:
    """(cycles, images inside the accelerator at each cycle): whole images entered at the top's input minus
    images left at its output, counted from the start of the trace."""
    top = top_scope(trace, design)
    c, h, w = design["input"]["shape"]
    in_beats = h * w // design["input"]["parallelism"]
    if design.get("npu"):
        out_beats = 1
    else:
        last = design["layers"][-1]
        out_beats = last["out_shape"][1] * last["out_shape"][2] // last["parallelism"]
    t_in = (trace.sampled(f"{top}.in_valid") == 1) & (trace.sampled(f"{top}.in_ready") == 1)
    t_out = (trace.sampled(f"{top}.out_valid") == 1) & (trace.sampled(f"{top}.out_ready") == 1)
    started = np.ceil(np.cumsum(t_in) / in_beats)   # an image is in once its first beat is
    done = np.cumsum(t_out) // out_beats
    return trace.cycles, (started - done).astype(np.int64)


def format_stats(stats: list[StreamStats]) -> str:
    rows = [("stream", "transfers", "stalls", "starved", "cycles")]
    rows += [(s.stream, str(s.transfers), str(s.stalls), str(s.starved), str(s.cycles)) for s in stats]
    w = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(v.ljust(w[i]) if i == 0 else v.rjust(w[i]) for i, v in enumerate(r)) for r in rows)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m hashiflex.sim.vcd", description="ready/valid stream table of a VCD")
    ap.add_argument("vcd", type=Path)
    ap.add_argument("--match", default=None, help="only streams whose name matches this regular expression")
    args = ap.parse_args(argv)
    t = read_vcd(args.vcd)
    span = f"cycles {t.cycles.min()}..{t.cycles.max()}" if len(t.cycles) else "no clock edges"
    print(f"{len(t.signals)} signals, {len(t.edges)} clock edges ({span})")
    print(format_stats(stream_stats(t, pattern=args.match)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
