"""``hashiflex`` command line: one subcommand per step of the flow (see ``hashiflex <step> --help``)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from . import __version__


def _assignments(text: str | None, option: str, what: str) -> dict[str, int] | None:
    """``NAME=N,...`` (export --parallelism, --stage-levels) as a dict; refused with the item when malformed."""
    if text is None:
        return None
    out = {}
    for item in text.split(","):
        name, sep, p = item.strip().rpartition("=")
        if not sep or not name or not p.strip().isdigit():
            raise ValueError(f"{option}: expected {what} items separated by commas, found {item.strip()!r}")
        out[name] = int(p)
    return out


def _parallelism(text: str | None) -> dict[str, int] | None:
    return _assignments(text, "--parallelism", "TENSOR=PIXELS_PER_BEAT")


def _work(p: argparse.ArgumentParser) -> None:
    p.add_argument("--work", type=Path, default=Path("build"), help="work folder for artifacts (default: build)")


def _progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hashiflex", description=(
        "Generate hardened power-of-two (Po2) DNN accelerators: train, quantize, export design.json, "
        "elaborate with Chisel, co-simulate with Verilator."))
    ap.add_argument("--version", action="version", version=f"hashiflex {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="STEP")

    from .flow import Config
    d = Config()

    p = sub.add_parser("train", help="train the float model (default: small CNN on sklearn digits)",
                       description="Train the float CNN and save WORK/float.pt.")
    _work(p)
    _progress(p)
    p.add_argument("--dataset", default=d.dataset, choices=["digits", "cifar10"], help="dataset (default: %(default)s)")
    p.add_argument("--data-root", default=None, help="folder holding cifar10_{train,test}.npz")
    p.add_argument("--arch", default=d.arch, choices=["digits_cnn", "mobilenet_v2"], help="model (default: %(default)s)")
    p.add_argument("--width", type=float, default=d.width, help="MobileNetV2 width multiplier (default: %(default)s)")
    p.add_argument("--optimizer", default=d.optimizer, choices=["adam", "sgd"])
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--augment", action="store_true", help="random crop + flip")
    p.add_argument("--edge-bits", type=int, default=None, help="weight bits of the first and last layer")
    p.add_argument("--sparsity", type=float, default=d.sparsity, help="pruning target during QAT (0..1)")
    p.add_argument("--init", default=None, help="start from a state_dict file (e.g. torchvision weights)")
    p.add_argument("--c1", type=int, default=d.c1, help="channels of conv1 (default: %(default)s)")
    p.add_argument("--c2", type=int, default=d.c2, help="channels of conv2 (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="float epochs (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate (default: %(default)s)")
    p.add_argument("--qat-epochs", type=int, default=d.qat_epochs, help="QAT epochs used by quantize")
    p.add_argument("--weight-bits", type=int, default=d.weight_bits, help="Po2 weight bits (sign + exponent)")
    p.add_argument("--act-bits", type=int, default=d.act_bits, help="activation bits (unsigned)")
    p.add_argument("--seed", type=int, default=d.seed)

    p = sub.add_parser("quantize", help="import to the IR, calibrate, Po2 QAT or PTQ, quantize (-> po2.pkl)",
                       description="Default: read WORK/float.pt (from train), run Po2 quantization-aware training, "
                       "write WORK/po2.pkl. Pretrained path (--init with --calib-data): import a torchvision "
                       "network with your weights, calibrate on your ImageNet-style folder (no labels needed), "
                       "Po2 post-training quantization with 1 to 4 terms per weight (or per layer by sensitivity "
                       "within an adder budget), write WORK/po2.pkl; then `hashiflex evaluate` and export.")
    _work(p)
    _progress(p)
    p.add_argument("--weight-bits", "--bits", type=int, default=None, help="override the Po2 weight bits")
    p.add_argument("--edge-bits", type=int, default=None, help="override the first/last layer weight bits")
    p.add_argument("--sparsity", type=float, default=None,
                   help="magnitude pruning target (0..1); QAT: reached by a gradual schedule")
    p.add_argument("--prune-scope", choices=["layer", "global"], default=None)
    p.add_argument("--prune-method", choices=["magnitude", "obs"], default=d.prune_method,
                   help="pretrained path: prune the smallest weights (magnitude), or the weights whose removal "
                   "changes each layer's output least on the calibration images, the others compensating (obs, as "
                   "SparseGPT; per layer) (default: %(default)s)")
    p.add_argument("--keep-depthwise", action="store_true",
                   help="pretrained path: depthwise convs stay dense when pruning (few weights and adders; a "
                   "pretrained MobileNetV2 loses the most there)")
    p.add_argument("--qat-epochs", type=int, default=None)
    g = p.add_argument_group("pretrained path (--init and --calib-data)")
    g.add_argument("--arch", default="mobilenet_v2", help="torchvision network (default: %(default)s)")
    g.add_argument("--init", default=None, metavar="WEIGHTS.pth", help="its state_dict file")
    g.add_argument("--calib-data", default=None, metavar="DIR",
                   help="ImageFolder of WordNet-id folders (labels through --classes; not used to quantize)")
    g.add_argument("--classes", default=None, metavar="FILE",
                   help="line k: the WordNet id of class k (default: DIR/classes.txt; none needed with all 1000)")
    g.add_argument("--calib-images", type=int, default=d.calib_images, help="images to calibrate on (default: "
                   "%(default)s, the first in sorted order)")
    g.add_argument("--preprocess", default=d.preprocess, choices=["inception", "torchvision"],
                   help="input normalisation (default: %(default)s: (x - 128) / 128, exactly int8 * 2^-7)")
    g.add_argument("--padding", default=d.padding, choices=["torch", "tf"],
                   help="conv padding: the module's own, or TensorFlow 'SAME' (the odd pixel below and right), for "
                   "weights trained in TensorFlow such as Coral's MobileNetV2 (default: %(default)s)")
    g.add_argument("--terms", default=d.terms, help="signed powers of two per weight: 1, 2, 3, 4, or auto "
                   "(per layer by sensitivity within --adder-budget; default: %(default)s)")
    g.add_argument("--max-terms", type=int, default=d.max_terms, help="largest per-layer count for auto")
    g.add_argument("--adder-budget", type=int, default=None, metavar="N",
                   help="auto: total adders of the design (default: what 2 terms everywhere cost)")
    g.add_argument("--rounding", default=d.rounding, choices=["nearest", "reconstruct"],
                   help="Po2 rounding of the weights: each to its nearest grid value, or each layer's weights chosen "
                   "so its output on the calibration images stays closest to the float layer's (error feedback "
                   "through the inputs' second moments, GPTQ-style; default: %(default)s)")
    g.add_argument("--act-range", default=d.act_range, choices=["max", "mse"],
                   help="activation scales: the power of two covering the calibration maximum, or the one (that or "
                   "up to 3 finer, clipping rare large values) with the least squared error on the calibration "
                   "images (default: %(default)s)")
    g.add_argument("--bias-correction", action="store_true", help="correct biases for the weights' mean error")
    g.add_argument("--distill-epochs", type=int, default=d.distill_epochs, metavar="N",
                   help="fine-tune the Po2 weights for N epochs to match the float model's outputs (distillation, "
                   "no labels; under torchrun --nproc-per-node K it trains with DDP; default: %(default)s)")
    g.add_argument("--distill-data", default=None, metavar="DIR",
                   help="images to distill on: an ImageFolder (default: --calib-data; evaluate skips them there) "
                   "or an .npz of uint8 NHWC images (e.g. CIFAR-10, resized; labels are not used)")
    g.add_argument("--distill-images", type=int, default=None, metavar="N",
                   help="the first N images of it (default: --calib-images)")
    g.add_argument("--distill-lr", type=float, default=d.distill_lr, help="Adam learning rate (default: %(default)s)")
    g.add_argument("--distill-batch", type=int, default=d.distill_batch,
                   help="global batch, split over DDP processes (default: %(default)s)")
    g.add_argument("--target-ii", type=int, default=None, metavar="CYCLES", help="the unroll the adders are "
                   "counted at (as export --target-ii)")

    p = sub.add_parser("evaluate", help="top-1/top-5 of float, fake-quant and golden on an ImageNet-style folder",
                       description="Evaluate WORK/po2.pkl (pretrained path) on DIR: top-1 and top-5 of the float "
                       "model, the fake-quant model and the integer golden model, their top-1 agreement with the "
                       "float model, and whether golden == fake-quant exactly. Prints a table; --json writes it.")
    _work(p)
    _progress(p)
    p.add_argument("--data", required=True, metavar="DIR", help="ImageFolder of WordNet-id folders")
    p.add_argument("--classes", default=None, metavar="FILE", help="as for quantize (default: DIR/classes.txt)")
    p.add_argument("--limit", type=int, default=None, help="at most N images")
    p.add_argument("--start", type=int, default=None, help="skip the first N images (default: the calibration "
                   "images when DIR is the calibration folder, else 0)")
    p.add_argument("--no-golden", action="store_true", help="skip the integer golden model (slowest)")
    p.add_argument("--json", type=Path, default=None, help="write the result to this file")

    p = sub.add_parser("fidelity", help="per-layer SQNR/cosine of the Po2 network vs its float original",
                       description="Where a quantized network loses its accuracy: at every requantize point and "
                       "residual add, SQNR and cosine of the fake-quant Po2 activations against the float model's "
                       "on calibration images (errors accumulate through the network), and for each conv/linear "
                       "layer alone the output's SQNR and top-1 agreement when only its weights are Po2. Needs "
                       "WORK/float.pt and WORK/po2.pkl.")
    _work(p)
    _progress(p)
    p.add_argument("--limit", type=int, default=512, help="calibration images (training split; default: %(default)s)")
    p.add_argument("--json", type=Path, default=None, help="also write the tables as JSON to this file")

    p = sub.add_parser("export", help="write the schema-validated WORK/design.json",
                       description="Write WORK/design.json from WORK/po2.pkl and check fake-quant == golden.")
    _work(p)
    p.add_argument("--levels-per-stage", type=int, default=None,
                   help=f"adder levels per pipeline register stage (default: {d.levels_per_stage})")
    p.add_argument("--target-ii", type=int, default=None, metavar="CYCLES",
                   help="unroll every layer to stream an image in at most CYCLES cycles (pixels per beat = "
                        "ceil(pixels / CYCLES), rounded up to a divisor of the row); default: one pixel per beat")
    p.add_argument("--target-ips", type=float, default=None, metavar="IMAGES_PER_S",
                   help="the same as a throughput at --clock-ghz: CYCLES = floor(clock / IMAGES_PER_S)")
    p.add_argument("--parallelism", type=str, default=None, metavar="TENSOR=P,...",
                   help="pixels per beat of some tensors ('input' or a layer's output) instead of the unroll "
                        "pass's proposal; any buildable choice is taken (a divisor of the row, the same as the "
                        "input's for pixel-for-pixel layers) and the II follows from it")
    p.add_argument("--clock-ghz", type=float, default=1.0, help="clock for --target-ips (default: %(default)s)")
    p.add_argument("--clock-ps", type=float, default=None, metavar="PS",
                   help="give every conv/linear layer the most adder levels per register stage whose period the "
                        "stage timing model predicts within PS (fewest registers at that clock; the model, fitted "
                        "on synthesized ASAP7 lanes, with its largest under-prediction as margin); check with "
                        "`hashiflex synth`")
    p.add_argument("--timing-model", type=Path, default=None, metavar="JSON",
                   help="stage timing model for --clock-ps (benchmarks/stage_timing.py; default: the packaged one)")
    p.add_argument("--stage-levels", type=str, default=None, metavar="LAYER=L,...",
                   help="adder levels per register stage of some conv/linear/max_pool2d layers (over "
                        "--levels-per-stage and --clock-ps)")

    p = sub.add_parser("elaborate", help="run the Chisel generator (./mill hashiflex.run) and check hw_params",
                       description="Elaborate WORK/design.json into WORK/rtl and check hw_params.json.")
    _work(p)

    p = sub.add_parser("cosim", help="co-simulate the RTL in Verilator against the golden model",
                       description="Stream the test images through WORK/rtl in Verilator; compare bit for bit.")
    _work(p)
    _progress(p)
    p.add_argument("--limit", type=int, default=None, help="only the first N test images")
    p.add_argument("--vcd", type=str, default=None,
                   help="write a VCD trace to this file (opens in GTKWave and hashiflex.sim.widgets.WaveViewer)")
    p.add_argument("--vcd-window", type=str, default=None, metavar="FIRST:STOP",
                   help="trace only cycles [FIRST, STOP) of the run (whole traces of big designs are huge)")

    p = sub.add_parser("sweep", help="accuracy and adders vs weight bits and sparsity (CSV + PNG)",
                       description="Sweep Po2 weight bits x sparsity on WORK/float.pt (trains it if missing): each point a Ray "
                       "job (local by default, a cluster with --address), kept in OUT/sweep_*.points.jsonl as it "
                       "finishes, so a stopped sweep resumes.")
    _work(p)
    _progress(p)
    p.add_argument("--bits", default="3,4,5,6,8", help="comma-separated weight bits (default: %(default)s)")
    p.add_argument("--sparsity", default="0,0.25,0.5,0.75,0.9",
                   help="comma-separated sparsity targets in [0, 1) (default: %(default)s)")
    p.add_argument("--finetune-epochs", type=int, default=0, help="QAT epochs after pruning at each point")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: WORK/sweep)")
    p.add_argument("--address", default=None, help="a running Ray cluster ('auto' or HOST:PORT); default: local")
    p.add_argument("--jobs", type=int, default=None, help="local Ray: points at once (default: every core)")

    p = sub.add_parser("report", help="throughput, area (Yosys + ASAP7), energy, accuracy -> WORK/report/",
                       description="Write WORK/report/report.{md,html,json} for the elaborated design in WORK.")
    _work(p)
    _progress(p)
    p.add_argument("--clock-ghz", type=float, default=1.0, help="clock for images/s (default: %(default)s GHz)")
    p.add_argument("--no-area", action="store_true", help="skip Yosys synthesis (minutes for big designs)")
    p.add_argument("--no-netlist", action="store_true",
                   help="do not read the Verilog in Yosys at all (designs of millions of adders): flip-flop bits "
                        "come from hw_params.json; implies --no-area")
    p.add_argument("--area-model", type=Path, default=None, metavar="JSON",
                   help="estimate the area with a fitted model (benchmarks/area_model.py writes "
                        "benchmarks/results/area_model.json) where it is not synthesized")

    p = sub.add_parser("synth", help="every unique module synthesized (Yosys + ASAP7) and timed, fanned out on Ray",
                       description="Synthesize every unique module of WORK/rtl's design on its own (its submodules "
                                   "as black boxes) as Ray jobs, local by default or on a cluster (--address), "
                                   "cached by module content (a stopped run resumes); time every leaf module with "
                                   "OpenSTA; once every module is done, time the whole design across module "
                                   "boundaries (their netlists linked as the hierarchy); write "
                                   "WORK/report/synth_modules.json. Each job reserves the memory its module's "
                                   "Yosys run needs (predicted from its Verilog by a model fitted on measured "
                                   "runs: benchmarks/synth_memory.py), so large modules never share a node beyond "
                                   "its memory; a module needing more than the largest node has is listed, not "
                                   "run (run it on a cluster with larger nodes).")
    _work(p)
    _progress(p)
    p.add_argument("--address", default=None, help="a running Ray cluster ('auto' or HOST:PORT); default: local")
    p.add_argument("--jobs", type=int, default=None, help="local Ray: jobs at once (default: every core)")
    p.add_argument("--limit", type=int, default=None, help="synthesize at most this many new modules this run")
    p.add_argument("--match", default=None, metavar="REGEX",
                   help="synthesize only modules whose names match (e.g. ShiftAddLane: the adder lanes first)")
    p.add_argument("--no-timing", action="store_true", help="area only (no OpenSTA)")
    p.add_argument("--no-design-timing", action="store_true",
                   help="time the leaf modules only, not the whole linked design once every module is done")
    p.add_argument("--target-ghz", type=float, default=1.0,
                   help="clock ABC maps for (buffers high-fanout nets, sizes slow paths; default: %(default)s)")
    p.add_argument("--cache", type=Path, default=None, help="result cache (default: ~/.cache/hashiflex/synth)")
    p.add_argument("--area-model", type=Path, default=None, metavar="JSON",
                   help="also estimate the area with this fitted model and report its error against the synthesis")

    p = sub.add_parser("layerwise", help="full-size verification: each layer co-simulated alone on real activations",
                       description="Cut every single-input layer of WORK's elaborated design out as a design of its "
                                   "own (its input the tensor it reads, exact bounds; the same modules as in the full "
                                   "design, checked text for text), elaborate them in one generator run, then build "
                                   "and simulate each with Verilator as a Ray job (local by default, a cluster by "
                                   "--address; the fewest adders first, resumable) on the golden model's activations "
                                   "of real images; write WORK/report/layerwise/layerwise.json.")
    _work(p)
    _progress(p)
    p.add_argument("--images", type=int, default=2, help="images streamed through every layer (default: %(default)s)")
    p.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="an ImageFolder to take them from (default: the work folder's test images)")
    p.add_argument("--preprocess", default="inception", choices=("inception", "torchvision"),
                   help="with --data: the input normalisation (default: %(default)s)")
    p.add_argument("--address", default=None, help="a running Ray cluster ('auto' or HOST:PORT); default: local")
    p.add_argument("--jobs", type=int, default=None, help="local Ray: layers at once (default: every core)")
    p.add_argument("--limit", type=int, default=None, help="co-simulate at most this many new layers this run")
    p.add_argument("--match", default=None, metavar="REGEX", help="only layers whose names match")
    p.add_argument("--max-adders", type=int, default=None,
                   help="skip layers with more adders (lanes too large for this machine's Verilator)")

    p = sub.add_parser("netlist", help="pyverilog: module hierarchy, adders and registers, checked against hw_params",
                       description="Parse WORK/rtl's Verilog with pyverilog, print the module hierarchy with instance "
                                   "counts, adders and register bits, and cross-check every layer against "
                                   "hw_params.json (a difference is an error).")
    _work(p)
    p.add_argument("--depth", type=int, default=3, help="hierarchy levels to print (default: %(default)s)")

    p = sub.add_parser("vectors", help="golden vectors for the generator's ChiselSim specs (make vectors)",
                       description="Write small designs covering every layer type and the unroll, with input beats "
                                   "and the golden model's output beats, to OUT/<case>/{design,vectors}.json.")
    p.add_argument("out", type=Path, nargs="?", default=Path("build/vectors"), help="(default: %(default)s)")
    p.add_argument("--images", type=int, default=4, help="images per case (default: %(default)s)")

    p = sub.add_parser("finetune", help="retrain the NPU head on new data, reload it into the running RTL, verify",
                       description="Export WORK's network with its classification layer on the programmable NPU "
                                   "(WORK/npu), elaborate it once, then: accuracy of the new task before, retrain "
                                   "only the head on the frozen backbone's features, quantize, load it through the "
                                   "NPU's load port into the running simulation, verify bit for bit, accuracy "
                                   "after. Writes WORK/finetune/{finetune.json,head.json,head.bin}.")
    _work(p)
    _progress(p)
    p.add_argument("--task", default="shift", choices=["shift", "noise", "blur", "invert", "none"],
                   help="how the deployment data differs from the training data (default: %(default)s)")
    p.add_argument("--labels", default=None, metavar="L0,L1,...",
                   help="relabel: new class of each old class, e.g. 0,1,0,1,0,1,0,1,0,1 for parity")
    p.add_argument("--epochs", type=int, default=300, help="full-batch Adam steps for the head (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-2, help="learning rate (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="only the first N test images")
    p.add_argument("--capacity", type=int, default=None,
                   help="classes the NPU can hold (default: the network's); leave room for new classes")
    p.add_argument("--top-k", type=int, default=1, help="indices the NPU reports per image (default: %(default)s)")
    p.add_argument("--npu-weight-bits", type=int, default=8, help="NPU weight bits (default: %(default)s)")

    p = sub.add_parser("demo", help="all of the above on the embedded default, then print the table",
                       description="Train, quantize, export, elaborate, co-simulate and report.")
    _work(p)
    _progress(p)
    p.add_argument("--no-netlist", action="store_true", help="skip the Yosys netlist count")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from . import flow, hw
    from .export import DesignValidationError
    from .hw import ElaborationError, HwMismatchError
    from .ir import IRError

    progress = not getattr(args, "no_progress", False)
    try:
        if args.cmd == "train":
            names = {f.name for f in fields(flow.Config)}
            cfg = flow.Config(**{k: v for k, v in vars(args).items() if k in names})
            r = flow.step_train(args.work, cfg, progress)
        elif args.cmd == "quantize" and (args.init or args.calib_data):
            if not (args.init and args.calib_data):
                raise ValueError("the pretrained path needs both --init WEIGHTS.pth and --calib-data DIR")
            cfg = flow.Config(dataset="imagefolder", arch=args.arch, init=args.init, data_root=args.calib_data,
                              classes=args.classes, calib_images=args.calib_images, preprocess=args.preprocess,
                              padding=args.padding, terms=args.terms, max_terms=args.max_terms,
                              adder_budget=args.adder_budget,
                              bias_correction=args.bias_correction, rounding=args.rounding,
                              act_range=args.act_range, target_ii=args.target_ii,
                              distill_epochs=args.distill_epochs, distill_data=args.distill_data,
                              distill_images=args.distill_images, distill_lr=args.distill_lr,
                              distill_batch=args.distill_batch,
                              weight_bits=args.weight_bits or 5, edge_bits=args.edge_bits or 8,
                              sparsity=args.sparsity or 0.0, prune_scope=args.prune_scope or "layer",
                              prune_method=args.prune_method, keep_depthwise=args.keep_depthwise)
            r = flow.step_quantize_pretrained(args.work, cfg, progress)
        elif args.cmd == "evaluate":
            r = flow.step_evaluate(args.work, args.data, args.classes, args.limit, args.start,
                                   golden=not args.no_golden, progress=progress)
            print(flow.format_evaluate(r))
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(r, indent=2) + "\n")
            return 0
        elif args.cmd == "quantize":
            if args.prune_method != "magnitude" or args.keep_depthwise:
                opt = "--keep-depthwise" if args.keep_depthwise else f"--prune-method {args.prune_method}"
                raise ValueError(f"{opt}: the pretrained path's one-shot pruning (with --init and --calib-data); QAT "
                                 f"prunes by magnitude on a gradual schedule")
            r = flow.step_quantize(args.work, args.weight_bits, progress, edge_bits=args.edge_bits,
                                   sparsity=args.sparsity, prune_scope=args.prune_scope, qat_epochs=args.qat_epochs)
        elif args.cmd == "export":
            target = args.target_ii
            if args.target_ips is not None:
                if target is not None:
                    raise ValueError("--target-ii and --target-ips: give one of them")
                target = int(args.clock_ghz * 1e9 // args.target_ips)
                if target < 1:
                    raise ValueError(f"--target-ips {args.target_ips:g}: more than one image per cycle at "
                                     f"{args.clock_ghz:g} GHz")
            r = flow.step_export(args.work, args.levels_per_stage, target, _parallelism(args.parallelism),
                                 _assignments(args.stage_levels, "--stage-levels", "LAYER=LEVELS"), args.clock_ps,
                                 args.timing_model)
        elif args.cmd == "fidelity":
            from .quant.fidelity import format_fidelity

            r = flow.step_fidelity(args.work, args.limit, progress)
            print(format_fidelity(r["through"], "through the network (float vs Po2 fake-quant, errors accumulate)"))
            print()
            print(format_fidelity(r["alone"], "one layer's weights Po2 at a time (output vs float)"))
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps({k: [x.to_json() for x in v] for k, v in r.items()}, indent=2) + "\n")
            return 0
        elif args.cmd == "elaborate":
            p = flow.step_elaborate(args.work)
            print(hw.format_hw_params(p))
            r = {k: p[k] for k in ("top", "adders", "adders_unshared", "ii_cycles_per_image", "latency_stages")}
        elif args.cmd == "cosim":
            window = tuple(int(v) for v in args.vcd_window.split(":")) if args.vcd_window else None
            if window is not None and (len(window) != 2 or window[0] >= window[1]):
                raise ValueError(f"--vcd-window: expected FIRST:STOP with FIRST < STOP, found {args.vcd_window}")
            r = flow.step_cosim(args.work, args.limit, args.vcd, progress, vcd_window=window)
        elif args.cmd == "sweep":
            if not (args.work / "float.pt").exists():
                flow.step_train(args.work, flow.Config(), progress)
            r = flow.step_sweep(args.work, [int(b) for b in args.bits.split(",")],
                                [float(s) for s in args.sparsity.split(",")], args.finetune_epochs, args.out,
                                progress, args.address, args.jobs)
            r = {k: r[k] for k in ("csv", "png")} | {"points": len(r["points"])}
        elif args.cmd == "report":
            from .report.report import build_report, format_report

            r = build_report(args.work, args.clock_ghz, area=not args.no_area, progress=progress,
                             netlist=not args.no_netlist, area_model=args.area_model)
            print(format_report(r))
            print(f"-> {args.work / 'report' / 'report.html'}")
            return 0
        elif args.cmd == "synth":
            from .report.modsynth import format_synth, synth_work

            r = synth_work(args.work, args.address, args.jobs, args.limit, not args.no_timing, args.area_model,
                           args.cache, progress, args.match, 1e3 / args.target_ghz,
                           design_timing=not args.no_design_timing)
            print(format_synth(r))
            print(f"-> {args.work / 'report' / 'synth_modules.json'}")
            return 0
        elif args.cmd == "layerwise":
            r = flow.step_layerwise(args.work, args.images, args.data, args.preprocess, args.address, args.jobs,
                                    args.limit, args.match, args.max_adders, progress)
            for row in r["layers"]:
                print(f"{row['layer']:28s} {row['op']:12s} {row['mismatched_values']:>6} mismatches of "
                      f"{row['values']:,}  modules differ: {len(row['modules_differ'])}  "
                      f"{row['cycles_per_image']:.0f}/{row['ii_cycles_per_image']} cycles/image  "
                      f"build {row['build_s']:.0f} s")
            for row in r["skipped"]:
                print(f"{row['layer']:28s} skipped: {row['why']}")
            print(f"{r['layers_verified']} layers, {r['mismatched_values']} mismatched values -> "
                  f"{args.work / 'report' / 'layerwise' / 'layerwise.json'}")
            # a module whose text differs from the full design's was simulated as the full design has it: only
            # mismatched values (a live channel the full design lost counts as such) fail the run
            return 0 if r["mismatched_values"] == 0 else 1
        elif args.cmd == "netlist":
            from .report.hierarchy import check_netlist, cross_check, format_hierarchy, instance_counts

            p = hw.read_hw_params(args.work / "rtl")
            mods = check_netlist(args.work / "rtl" / p["verilog"], p)
            print(format_hierarchy(mods, p["top"], args.depth))
            n = instance_counts(mods, p["top"])
            folded = cross_check(mods, p)[1]
            print("\n".join(folded))
            print(f"{len(mods)} modules, {sum(n.values())} instances; no layer has more than hw_params.json models"
                  + ("" if folded else ", and every figure agrees exactly"))
            return 0
        elif args.cmd == "vectors":
            from .vectors import write_vectors

            for folder in write_vectors(args.out, args.images):
                print(folder)
            return 0
        elif args.cmd == "finetune":
            from .finetune import finetune, format_finetune

            labels = [int(v) for v in args.labels.split(",")] if args.labels else None
            r = finetune(args.work, args.task, labels, args.epochs, args.lr, args.limit, args.capacity, args.top_k,
                         args.npu_weight_bits, progress)
            print(format_finetune(r))
            return 0 if r["before"]["mismatches"] == 0 and r["after"]["mismatches"] == 0 else 1
        elif args.cmd == "demo":
            r = flow.demo(args.work, progress=progress, netlist=not args.no_netlist)
            print(flow.format_table(r))
            return 0 if r["mismatches"] == 0 else 1
        print(json.dumps(r, indent=2))
        if args.cmd == "cosim" and r["mismatches"]:
            return 1
        return 0
    except (DesignValidationError, ElaborationError, HwMismatchError, IRError, FileNotFoundError, ValueError,
            RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
