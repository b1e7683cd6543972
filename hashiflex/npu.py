"""The programmable NPU head: sizing, quantization, golden model and load images.

The hardened backbone ends in a vector (the global pool's sums); the NPU computes the classification layer on it
with ordinary integer weights held in an on-chip memory, so the head can be replaced after tape-out:

    acc[o]    = sum_i w[o, i] * x[i] + bias[o]                 (exact; ``acc_width`` bits)
    logit[o]  = clamp((acc[o] + 2**(shift-1)) >> shift, out range)   (round half up; shift 0: no rounding)
    top_k     = indices of the k largest logits, ties to the lower index (a stable sort)

Hardware (chosen once here, carried in design.json's ``npu`` section, re-derived by the generator): ``lanes``
outputs in parallel, each a dot product over ``width`` inputs per cycle (``lanes * width`` multipliers); an image
takes ``ceil(capacity / lanes) * ceil(in_features / width)`` cycles. The weights are double-buffered: a new image
arrives over the load port (32-bit words, :func:`encode`), is checked (header, value ranges, length, CRC-32), and
is committed atomically between two images; a bad one is refused with a :class:`Status` code and the previous
weights keep serving.

Load image, one 32-bit word per entry (two's complement for signed values)::

    MAGIC | version<<16 | weight_bits<<8 | bias_bits | in_features<<16 | out_features | shift | tag
    weights (out_features x in_features, row-major) | bias (out_features) | CRC-32 (zlib) of all words before it

The CRC is that of the little-endian bytes of the words (``zlib.crc32``); the last word carries the stream's
``last`` flag.
"""
from __future__ import annotations

import enum
import math
import zlib
from dataclasses import dataclass

import numpy as np

from .numfmt import int_range, requant, width_for
from .quant.ptq import _round_half_up

MAGIC = 0x48464E31          # "HFN1"
IMAGE_VERSION = 1
HEADER_WORDS = 5
# cycles from an image's last issue to its logits buffer being free, beyond the ceil(capacity / scan) top-k steps
# (memory read, products, partial sums, dot product, accumulate and rounding add 6, output beat 1, free seen by the
# issue stage 1)
SCAN_OVERHEAD = 8


class Status(enum.IntEnum):
    """The load port's status codes (the generator reports its own table in hw_params.json; they must agree)."""
    EMPTY = 0          # no weights loaded yet: the NPU holds its input
    OK = 1             # the last image was committed and serves from the next image on
    LOADING = 2        # an image is arriving
    BAD_MAGIC = 3
    BAD_VERSION = 4
    BAD_BITS = 5       # weight_bits / bias_bits differ from the hardware's
    BAD_SHAPE = 6      # in_features differs, or out_features is 0, above the capacity or below top_k
    BAD_SHIFT = 7      # shift above max_shift
    BAD_VALUE = 8      # a weight or bias outside its bits' range
    TOO_SHORT = 9      # `last` came before the image was complete
    TOO_LONG = 10      # the image went on past its CRC word
    BAD_CHECKSUM = 11


class NpuError(ValueError):
    """A head or a load image the NPU cannot take; the message names the field and what was expected."""


@dataclass(frozen=True)
class NpuConfig:
    """The NPU's elaboration-time parameters (design.json ``npu``, without ``head``)."""
    in_features: int
    in_bounds: tuple[int, int]      # exact range of the backbone's vector (the pool's sums)
    capacity: int                   # most classes a loaded head may have
    lanes: int
    width: int
    weight_bits: int = 8
    bias_bits: int = 24
    out_bits: int = 16
    top_k: int = 1
    scan: int = 1                   # logits the top-k unit inserts per cycle

    def __post_init__(self):
        for f, lo, hi in (("in_features", 1, 1 << 16), ("capacity", 1, 1 << 16), ("lanes", 1, self.capacity),
                          ("width", 1, self.in_features), ("weight_bits", 2, 16), ("bias_bits", 2, 32),
                          ("out_bits", 2, 32), ("top_k", 1, self.capacity), ("scan", 1, self.capacity)):
            v = getattr(self, f)
            if not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise NpuError(f"npu.{f}: expected an integer in [{lo}, {hi}], found {v!r}")
        if self.in_bounds[0] > self.in_bounds[1]:
            raise NpuError(f"npu.in_bounds: expected [lo, hi] with lo <= hi, found {list(self.in_bounds)}")

    @property
    def tiles(self) -> int:
        return math.ceil(self.capacity / self.lanes)

    @property
    def chunks(self) -> int:
        return math.ceil(self.in_features / self.width)

    @property
    def in_format(self) -> tuple[int, bool]:
        return width_for(*self.in_bounds)

    @property
    def acc_width(self) -> int:
        """Signed width holding any sum of in_features products plus a bias."""
        m = max(abs(self.in_bounds[0]), abs(self.in_bounds[1]))
        b = self.in_features * m * (1 << (self.weight_bits - 1)) + (1 << (self.bias_bits - 1))
        return width_for(-b, b)[0]

    @property
    def max_shift(self) -> int:
        return self.acc_width - 1

    @property
    def macs(self) -> int:
        return self.lanes * self.width

    @property
    def cycles_per_image(self) -> int:
        """The NPU's initiation interval. Two logits buffers alternate, so image n+2 starts once image n's buffer
        has been scanned and sent (schedule + scan steps + SCAN_OVERHEAD after image n started), and image n+1
        one schedule after image n; the hardware spaces starts evenly by the larger of the two rates."""
        sched = self.tiles * self.chunks
        return max(sched, -(-(sched + math.ceil(self.capacity / self.scan) + SCAN_OVERHEAD) // 2))

    @property
    def memory_bits(self) -> int:
        """Weight memory (two banks) plus bias registers (two banks)."""
        return 2 * self.tiles * self.chunks * self.macs * self.weight_bits + 2 * self.capacity * self.bias_bits

    def to_json(self) -> dict:
        w, s = self.in_format
        return {"in_features": self.in_features, "in_bounds": list(map(int, self.in_bounds)), "in_width": w,
                "in_signed": s, "capacity": self.capacity, "lanes": self.lanes, "width": self.width,
                "weight_bits": self.weight_bits, "bias_bits": self.bias_bits, "acc_width": self.acc_width,
                "out_bits": self.out_bits, "max_shift": self.max_shift, "top_k": self.top_k, "scan": self.scan,
                "cycles_per_image": self.cycles_per_image}

    @staticmethod
    def from_json(d: dict) -> "NpuConfig":
        return NpuConfig(d["in_features"], tuple(d["in_bounds"]), d["capacity"], d["lanes"], d["width"],
                         d["weight_bits"], d["bias_bits"], d["out_bits"], d["top_k"], d["scan"])


def choose_array(in_features: int, capacity: int, target_ii: int) -> tuple[int, int]:
    """The sizing pass: the fewest multipliers (lanes x width) whose schedule ceil(capacity/lanes) *
    ceil(in_features/width) fits ``target_ii`` cycles (always possible: lanes = capacity is one tile); ties go
    to the shorter schedule."""
    if target_ii < 1:
        raise NpuError(f"target_ii: expected >= 1, found {target_ii}")
    best = None
    for lanes in range(1, capacity + 1):
        tiles = math.ceil(capacity / lanes)
        if tiles > target_ii:
            continue
        width = math.ceil(in_features / (target_ii // tiles))
        chunks = math.ceil(in_features / width)
        cand = (lanes * width, tiles * chunks, lanes, width)
        best = cand if best is None or cand < best else best
    return best[2], best[3]


def choose_scan(capacity: int, schedule: int) -> int:
    """Logits per cycle the top-k unit must insert so that it never sets the pace (1 when it can; with a
    schedule under SCAN_OVERHEAD + 1 cycles nothing can, and the most parallel scan is the best)."""
    for scan in range(1, capacity + 1):
        if math.ceil(capacity / scan) + SCAN_OVERHEAD <= schedule:
            return scan
    return capacity


def size_npu(in_features: int, in_bounds: tuple[int, int], capacity: int, target_ii: int, weight_bits: int = 8,
             bias_bits: int = 24, out_bits: int = 16, top_k: int = 1) -> NpuConfig:
    """An NPU that keeps up with ``target_ii`` cycles per image (normally the backbone's II)."""
    lanes, width = choose_array(in_features, capacity, target_ii)
    sched = math.ceil(capacity / lanes) * math.ceil(in_features / width)
    return NpuConfig(in_features, tuple(int(b) for b in in_bounds), capacity, lanes, width, weight_bits, bias_bits,
                     out_bits, min(top_k, capacity), choose_scan(capacity, max(sched, target_ii)))


# ------------------------------------------------------------------------------------------------ heads
@dataclass
class Head:
    """A quantized head: integer weights (out, in) in units of 2**w_exp, bias in units of the accumulator
    (2**(in_exp + w_exp)), logits requantized by ``shift``. ``tag`` is the user's version number of the weights,
    readable from the status port once committed."""
    weights: np.ndarray
    bias: np.ndarray
    w_exp: int
    shift: int
    tag: int = 1

    @property
    def out_features(self) -> int:
        return int(self.weights.shape[0])

    def check(self, cfg: NpuConfig) -> None:
        """Raise :class:`NpuError` naming the field if the NPU ``cfg`` cannot run this head."""
        w = np.asarray(self.weights)
        if w.ndim != 2 or w.shape[1] != cfg.in_features:
            raise NpuError(f"head.weights: expected shape (out_features, {cfg.in_features}), found {w.shape}")
        if not 1 <= w.shape[0] <= cfg.capacity:
            raise NpuError(f"head.weights: expected 1..{cfg.capacity} outputs (the NPU's capacity), "
                           f"found {w.shape[0]}")
        if w.shape[0] < cfg.top_k:
            raise NpuError(f"head.weights: expected at least top_k={cfg.top_k} outputs, found {w.shape[0]}")
        if np.asarray(self.bias).shape != (w.shape[0],):
            raise NpuError(f"head.bias: expected {w.shape[0]} entries, found shape {np.asarray(self.bias).shape}")
        for name, a, bits in (("weights", w, cfg.weight_bits), ("bias", self.bias, cfg.bias_bits)):
            a = np.asarray(a)
            if a.size and not np.issubdtype(a.dtype, np.integer):
                raise NpuError(f"head.{name}: expected integers, found dtype {a.dtype}")
            lo, hi = int_range(bits, True)
            if a.size and (a.min() < lo or a.max() > hi):
                raise NpuError(f"head.{name}: expected values in [{lo}, {hi}] ({bits}-bit), "
                               f"found [{int(a.min())}, {int(a.max())}]")
        if not 0 <= self.shift <= cfg.max_shift:
            raise NpuError(f"head.shift: expected 0..{cfg.max_shift}, found {self.shift}")
        if not 0 <= self.tag < 1 << 32:
            raise NpuError(f"head.tag: expected a 32-bit unsigned integer, found {self.tag}")

    def to_json(self) -> dict:
        return {"out_features": self.out_features, "w_exp": int(self.w_exp), "shift": int(self.shift),
                "tag": int(self.tag), "weights": [int(v) for v in np.asarray(self.weights).ravel()],
                "bias": [int(v) for v in np.asarray(self.bias).ravel()]}

    @staticmethod
    def from_json(d: dict, in_features: int) -> "Head":
        w = np.asarray(d["weights"], dtype=np.int64)
        if w.size != d["out_features"] * in_features:
            raise NpuError(f"npu.head.weights: expected {d['out_features'] * in_features} entries "
                           f"({d['out_features']} x {in_features}), found {w.size}")
        return Head(w.reshape(d["out_features"], in_features), np.asarray(d["bias"], dtype=np.int64), d["w_exp"],
                    d["shift"], d["tag"])


def quantize_head(weight: np.ndarray, bias: np.ndarray, in_exp: int, cfg: NpuConfig,
                  calib: np.ndarray | None = None, tag: int = 1) -> Head:
    """Float head (out, in) on inputs x_int * 2**in_exp -> integer Head for ``cfg``: the weights' exponent makes the
    largest weight fit ``weight_bits``; the bias is rounded to accumulator units (an error if it does not fit
    ``bias_bits``); ``shift`` is the smallest that keeps the logits of the calibration vectors ``calib`` (int, from
    the backbone) inside ``out_bits`` (else the most a worst-case input could need)."""
    weight = np.asarray(weight, dtype=np.float64)
    bias = np.asarray(bias, dtype=np.float64)
    wmax = float(np.abs(weight).max(initial=0.0))
    qmax = (1 << (cfg.weight_bits - 1)) - 1
    w_exp = math.ceil(math.log2(wmax / qmax)) if wmax > 0 else 0
    wint = np.clip(_round_half_up(weight / 2.0 ** w_exp, "head.weights"), -qmax - 1, qmax)
    acc_exp = in_exp + w_exp
    bint = _round_half_up(bias / 2.0 ** acc_exp, "head.bias")
    blo, bhi = int_range(cfg.bias_bits, True)
    if bint.size and (bint.min() < blo or bint.max() > bhi):
        raise NpuError(f"head.bias: {int(np.abs(bint).max())} accumulator units (2**{acc_exp}) does not fit "
                       f"{cfg.bias_bits} bits; raise npu bias_bits")
    head = Head(wint, bint, w_exp, 0, tag)
    if calib is not None and len(calib):
        peak = int(np.abs(accumulate(head, calib)).max(initial=0))
    else:
        m = max(abs(cfg.in_bounds[0]), abs(cfg.in_bounds[1]))
        peak = int((np.abs(wint).sum(axis=1) * m + np.abs(bint)).max(initial=0))
    olim = (1 << (cfg.out_bits - 1)) - 1
    shift = 0
    while (peak + ((1 << shift) >> 1)) >> shift > olim and shift < cfg.max_shift:
        shift += 1
    head.shift = shift
    head.check(cfg)
    return head


# ------------------------------------------------------------------------------------------------ golden model
def accumulate(head: Head, x: np.ndarray) -> np.ndarray:
    """Exact accumulators (N, out) for integer vectors x (N, in)."""
    from .ops.intmath import exact_matmul
    from .ops.intmath import guard_of as _guard

    x = np.asarray(x, dtype=np.int64).reshape(len(x), -1)
    w = np.asarray(head.weights, dtype=np.int64)
    return exact_matmul(x, w.T, _guard(x, w)) + np.asarray(head.bias, dtype=np.int64)


def run_head(head: Head, cfg: NpuConfig, x: np.ndarray) -> np.ndarray:
    """The NPU's logits (N, out_features) for the backbone's integer vectors x (N, in_features): bit-exact."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != cfg.in_features:
        raise NpuError(f"x: expected shape (N, {cfg.in_features}), found {x.shape}")
    lo, hi = cfg.in_bounds
    if x.size and (x.min() < lo or x.max() > hi):
        raise NpuError(f"x: expected values in [{lo}, {hi}] (the backbone's bounds), "
                       f"found [{int(x.min())}, {int(x.max())}]")
    return requant(accumulate(head, x), head.shift, *int_range(cfg.out_bits, True))


def top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest logits per row, largest first; ties go to the lower index."""
    return np.argsort(-np.asarray(logits, dtype=np.int64), axis=1, kind="stable")[:, :k]


def mismatches(outputs: np.ndarray, topk: np.ndarray, logits: np.ndarray, top: np.ndarray) -> int:
    """Images where the NPU's result beat (all ``capacity`` logits, then top-k) differs from the golden logits
    (N, out_features; the outputs past them must be 0) and top-k."""
    o = logits.shape[1]
    return int(((outputs[:, :o] != logits).any(axis=1) | outputs[:, o:].any(axis=1)
                | (topk != top).any(axis=1)).sum())


def golden(g, cfg: NpuConfig, head: Head, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backbone golden model then the NPU's: (logits (N, out_features), top-k indices (N, top_k))."""
    from . import ref

    logits = run_head(head, cfg, ref.run(g, images))
    return logits, top_k(logits, cfg.top_k)


# ------------------------------------------------------------------------------------------------ load images
def encode(head: Head, cfg: NpuConfig) -> np.ndarray:
    """The load image (uint32 words) for ``head``; checks it first (:class:`NpuError`), so a bad head never
    reaches the hardware."""
    head.check(cfg)
    header = [MAGIC, IMAGE_VERSION << 16 | cfg.weight_bits << 8 | cfg.bias_bits,
              cfg.in_features << 16 | head.out_features, head.shift, head.tag]
    body = np.concatenate([np.asarray(header, dtype=np.int64), np.asarray(head.weights, dtype=np.int64).ravel(),
                           np.asarray(head.bias, dtype=np.int64).ravel()])
    words = (body & 0xFFFFFFFF).astype(np.uint32)
    crc = zlib.crc32(words.astype("<u4").tobytes())
    return np.append(words, np.uint32(crc))


def expected_status(words: np.ndarray, cfg: NpuConfig) -> Status:
    """What the load port answers to ``words`` (the last one flagged ``last``): the reference for its checks."""
    w = [int(v) for v in np.asarray(words, dtype=np.uint64)]

    def signed(v: int, bits: int) -> int | None:
        v = v - (1 << 32) if v >> 31 else v
        lo, hi = int_range(bits, True)
        return v if lo <= v <= hi else None

    if not w:
        return Status.TOO_SHORT
    if w[0] != MAGIC:
        return Status.BAD_MAGIC
    if len(w) < 2:
        return Status.TOO_SHORT
    if w[1] >> 16 != IMAGE_VERSION:
        return Status.BAD_VERSION
    if (w[1] >> 8) & 0xFF != cfg.weight_bits or w[1] & 0xFF != cfg.bias_bits:
        return Status.BAD_BITS
    if len(w) < 3:
        return Status.TOO_SHORT
    o = w[2] & 0xFFFF
    if w[2] >> 16 != cfg.in_features or not max(1, cfg.top_k) <= o <= cfg.capacity:
        return Status.BAD_SHAPE
    if len(w) < 4:
        return Status.TOO_SHORT
    if w[3] > cfg.max_shift:
        return Status.BAD_SHIFT
    n = HEADER_WORDS + o * cfg.in_features + o + 1
    body = w[HEADER_WORDS:min(len(w), n - 1)]
    bits = [cfg.weight_bits] * (o * cfg.in_features) + [cfg.bias_bits] * o
    if any(signed(v, b) is None for v, b in zip(body, bits)):
        return Status.BAD_VALUE
    if len(w) < n:
        return Status.TOO_SHORT
    if len(w) > n:
        return Status.TOO_LONG
    if zlib.crc32(np.asarray(w[:-1], dtype="<u4").tobytes()) != w[-1]:
        return Status.BAD_CHECKSUM
    return Status.OK


def from_design(d: dict) -> tuple[NpuConfig, Head] | None:
    """The NPU configuration and boot head of a design document (None: fully hardened)."""
    n = d.get("npu")
    if n is None:
        return None
    cfg = NpuConfig.from_json(n)
    return cfg, Head.from_json(n["head"], cfg.in_features)


# ------------------------------------------------------------------------------------------------ designs
def split_head(g):
    """(backbone graph, its final Linear layer): the NPU takes over the classification layer."""
    from .ir import Graph, Linear

    if not g.layers or not isinstance(g.layers[-1], Linear):
        last = g.layers[-1].name if g.layers else None
        raise NpuError(f"layer {last!r}: expected the network to end in a linear layer for the NPU to run")
    return Graph(g.name, g.input, list(g.layers[:-1])), g.layers[-1]
