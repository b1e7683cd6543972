"""Co-simulation speed: simulated cycles/s through the Python harness vs a bare Verilator C++ harness, same RTL,
same run.

    python benchmarks/cosim_speed.py [--work build] [--repeat 3] [--images 3600]

The RTL is WORK's elaborated design (default: the demo's digits CNN; `make demo` first). Three ways to stream the
same images:
  * StreamSim.run, C stream driver (the default path): one ctypes call per batch, the model's pyverilator accessors
    called from C (hashiflex/sim/driver.c), two evaluations per cycle;
  * StreamSim.run(fast=False): the Python per-cycle loop (what tracing and loading use), three evaluations;
  * the baseline: benchmarks/verilator_bench_main.cpp, a bare Verilator testbench built with the same Verilator
    and C++ flags (StreamSim's VERILATOR_ARGS / VERILATOR_CFLAGS), driving in_bits_0 with in/out handshakes held.
Ratios are harness / bare (the goal: >= 0.5). Best of --repeat runs each. Writes benchmarks/results/cosim_speed.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from hashiflex import hw
from hashiflex.data import digits
from hashiflex.sim import StreamSim
from hashiflex.sim.stream import VERILATOR_ARGS, VERILATOR_CFLAGS, default_cache, verilator_version

HERE = Path(__file__).resolve().parent


def build_bare(sv: Path, top: str, out: Path) -> Path:
    """verilator --cc --exe --build of the bare harness (cached beside the models)."""
    exe = out / f"V{top}"
    if exe.exists():
        return exe
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cflags = f'{VERILATOR_CFLAGS} -DVM_HEADER=\\"V{top}.h\\" -DTOP_CLASS=V{top}'
    cmd = ["verilator", "--cc", str(sv), "--top-module", top, "--exe", str(HERE / "verilator_bench_main.cpp"),
           "--build", "-j", str(os.cpu_count() or 1), "-Mdir", str(tmp), *VERILATOR_ARGS, "-CFLAGS", cflags]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bare harness build failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return exe


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("build"))
    ap.add_argument("--images", type=int, default=3600)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "cosim_speed.json")
    args = ap.parse_args(argv)
    d = json.loads((args.work / "design.json").read_text())
    p = hw.read_hw_params(args.work / "rtl")
    if d.get("npu"):
        sys.exit("cosim_speed: use a fully hardened design (the bare harness drives out_bits_0)")
    sv = args.work / "rtl" / p["verilog"]
    sim = StreamSim(args.work / "rtl", p, d)
    ds = digits() if d["input"]["shape"] == [1, 8, 8] else None
    if ds is not None:
        x = np.concatenate([ds.x_test] * (args.images // len(ds.x_test) + 1))[: args.images]
    else:
        c, h, w = d["input"]["shape"]
        lo, hi = 0, (1 << d["input"]["bits"]) - 1
        x = np.random.default_rng(0).integers(lo, hi + 1, size=(args.images, c, h, w))

    def best(fn):
        rates = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            cycles = fn()
            rates.append(cycles / (time.perf_counter() - t0))
        return max(rates), cycles

    fast, cycles = best(lambda: sim.run(x, progress=False, fast=True).cycles)
    small = x[: max(1, len(x) // 10)]  # the per-cycle Python loop is slower: a tenth of the images
    slow, _ = best(lambda: sim.run(small, progress=False, fast=False).cycles)
    exe = build_bare(sv, p["top"], default_cache() / f"bare-{p['top']}-{sim.build_dir.name.rsplit('-', 1)[-1]}")
    bare_rates = []
    for _ in range(args.repeat):
        r = subprocess.run([str(exe), str(cycles), str((1 << d["input"]["bits"]) - 1)], capture_output=True,
                           text=True, check=True)
        n, secs = r.stdout.split()[:2]
        bare_rates.append(int(n) / float(secs))
    bare = max(bare_rates)
    result = {
        "command": " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
        "design": d["name"], "top": p["top"], "adders": p["adders"], "images": len(x), "cycles": cycles,
        "verilator": verilator_version(), "verilator_args": VERILATOR_ARGS, "cflags": VERILATOR_CFLAGS,
        "machine": f"{os.cpu_count()} cores",
        "cycles_per_s": {"streamsim_c_driver": round(fast), "streamsim_python_loop": round(slow),
                         "bare_verilator_cpp": round(bare)},
        "ratio_vs_bare": {"streamsim_c_driver": round(fast / bare, 3), "streamsim_python_loop": round(slow / bare, 3)},
        "baseline": "bare Verilator C++ harness, same RTL and flags, same run",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for k, v in result["cycles_per_s"].items():
        ratio = result["ratio_vs_bare"].get(k)
        print(f"{k:24s} {v:>12,} cycles/s" + (f"   {ratio:.2f}x bare" if ratio is not None else "   (baseline)"))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
