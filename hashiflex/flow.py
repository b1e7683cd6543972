"""The end-to-end flow, one function per step; the CLI and the notebooks call these.

Artifacts live in a work folder (default ``build/``):
``float.pt`` (train) -> ``po2.pkl`` (quantize) -> ``design.json`` (export) -> ``rtl/`` with the Verilog and
``hw_params.json`` (elaborate) -> ``verilator/`` model and ``cosim.json`` (cosim).
"""
from __future__ import annotations

import hashlib
import json
import pickle
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import data as datasets
from . import frontend, hw, hwmodel, npu, ref
from .export import design_from_graph, load_design, write_design
from .ir import Graph, Input
from .models import DigitsCNN
from .quant import ptq
from .quant.fakequant import activation_errors, activation_ranges, fake_quant_int_outputs
from .quant.prune import weight_sparsity
from .train import accuracy_torch, seed_everything, train_float, train_qat


class GoldenMismatchError(RuntimeError):
    """Two rungs of the golden ladder that must agree exactly (fake-quant torch, integer golden model) differ."""


@dataclass
class Config:
    """Defaults reproduce the README's figures (the digits CNN)."""
    dataset: str = "digits"          # digits | cifar10
    data_root: str | None = None     # folder with cifar10_{train,test}.npz
    arch: str = "digits_cnn"         # digits_cnn | mobilenet_v2
    width: float = 1.0               # mobilenet_v2 width multiplier
    c1: int = 16                     # digits_cnn channels
    c2: int = 32
    epochs: int = 60
    lr: float = 1e-2
    optimizer: str = "adam"          # adam | sgd
    batch: int = 64
    augment: bool = False            # random crop + flip (images)
    qat_epochs: int = 20
    qat_lr: float = 2e-3
    weight_bits: int = 5
    edge_bits: int | None = None     # first/last layer weight bits (None: weight_bits)
    act_bits: int = 8
    act_range: str = "max"           # activation scales: cover the calibration maximum, or the least squared error
    sparsity: float = 0.0            # magnitude pruning target during QAT
    prune_scope: str = "layer"       # layer | global
    prune_method: str = "magnitude"  # pretrained path: "magnitude", or "obs" (output error on calibration data)
    keep_depthwise: bool = False     # pretrained path: depthwise convs stay dense when pruning
    levels_per_stage: int = 4
    target_ii: int | None = None     # cycles per image the pipeline is unrolled for (None: one pixel per beat)
    seed: int = 0
    init: str | None = None          # a state_dict file (e.g. torchvision MobileNetV2 weights) to start from
    # pretrained path (dataset "imagefolder": data_root is an ImageNet-style folder, see hashiflex.imagenet)
    classes: str | None = None       # classes file (line k: WordNet id of class k); default DATA/classes.txt
    preprocess: str = "inception"    # input normalisation: (x - 128) / 128, exactly int8 * 2**-7
    padding: str = "torch"           # conv padding: the module's own ("torch") or TensorFlow 'SAME' ("tf")
    calib_images: int = 64           # images of data_root to calibrate (and choose terms) on
    terms: str = "1"                 # signed powers of two per weight: "1".."4", or "auto" (per layer, by budget)
    max_terms: int = 3               # largest count "auto" may choose
    adder_budget: int | None = None  # "auto": total adders (default: what 2 terms everywhere would cost)
    bias_correction: bool = False    # correct each bias for the mean error its weights' rounding causes
    rounding: str = "reconstruct"    # pretrained path: "nearest" grid value, or "reconstruct" against calibration data
    distill_data: str | None = None  # images to distill on (unlabelled; default: data_root)
    distill_images: int | None = None  # the first N of them (default: calib_images)
    distill_epochs: int = 0          # distillation fine-tuning of the Po2 weights against the float model
    distill_lr: float = 1e-4
    distill_batch: int = 16

    def fit_args(self) -> dict:
        return dict(batch=self.batch, optimizer=self.optimizer, augment=self.augment)


def build_model(cfg: Config, classes: int):
    if cfg.arch == "digits_cnn":
        return DigitsCNN(cfg.c1, cfg.c2, classes)
    if cfg.arch == "mobilenet_v2":
        from .models import mobilenet_v2

        return mobilenet_v2(cfg.width, classes, cifar=cfg.dataset == "cifar10")
    raise ValueError(f"arch: expected 'digits_cnn' or 'mobilenet_v2', found {cfg.arch!r}")


def graph_name(cfg: Config) -> str:
    return cfg.arch if cfg.arch.startswith(cfg.dataset) else f"{cfg.arch}_{cfg.dataset}"


def layer_bits(g: Graph, cfg: Config) -> dict[str, int]:
    """Weight bits per layer: ``edge_bits`` for the first and last conv/linear layer, else ``weight_bits``."""
    names = [l.name for l in g.layers if hasattr(l, "weight")]
    edge = cfg.edge_bits or cfg.weight_bits
    return {n: (edge if n in (names[0], names[-1]) else cfg.weight_bits) for n in names}


@dataclass
class Timer:
    times: dict = field(default_factory=dict)

    def __call__(self, name):
        timer = self

        class _T:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                timer.times[name] = time.perf_counter() - self.t
        return _T()


def _ds(cfg: Config, check_images: int = 4):
    if cfg.dataset == "cifar10":
        return datasets.cifar10(cfg.data_root)
    if cfg.dataset == "imagefolder":  # the export ladder check and cosim take the first calibration images
        from .imagenet import ImageFolder, input_type

        x, y = ImageFolder(cfg.data_root, cfg.classes, preprocess=cfg.preprocess, limit=check_images).arrays()
        return datasets.Dataset("imagefolder", x, y, x, y, input_type(cfg.preprocess), 1000)
    return datasets.DATASETS[cfg.dataset]()


PRETRAINED_ARCHS = ("mobilenet_v2",)


def pretrained_model(arch: str, init: str):
    """A torchvision network of ``arch`` (1000 classes) with the state_dict file ``init`` loaded strictly."""
    import torchvision.models

    if arch not in PRETRAINED_ARCHS:
        raise ValueError(f"--arch: expected one of {', '.join(PRETRAINED_ARCHS)} for pretrained weights, "
                         f"found {arch!r}")
    model = getattr(torchvision.models, arch)()
    sd = torch.load(init, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise ValueError(f"--init {init}: not a torchvision {arch} state_dict ({str(e).splitlines()[0]} ...)") from e
    return model.eval()


def calibrated_pretrained(cfg: Config, progress: bool = True):
    """The pretrained path's float graph: the torchvision ``cfg.arch`` with weights ``cfg.init`` imported with
    ``cfg.padding``, its activations calibrated on the first ``cfg.calib_images`` images of ``cfg.data_root``
    (streamed: running ranges only; with ``cfg.act_range == "mse"`` a second pass lowers each scale where that
    lowers the squared error). Returns the graph, that calibration folder and the weight bits per layer."""
    from .imagenet import ImageFolder, input_type, value_batches

    model = pretrained_model(cfg.arch, cfg.init)
    calib = ImageFolder(cfg.data_root, cfg.classes, preprocess=cfg.preprocess, limit=cfg.calib_images)
    inp = input_type(cfg.preprocess)
    g = frontend.same_padding(frontend.import_torch(model, inp, name=cfg.arch), cfg.padding)
    if cfg.act_range not in ("max", "mse"):
        raise ValueError(f"--act-range: expected 'max' or 'mse', found {cfg.act_range!r}")
    g = ptq.calibrate_activations(g, activation_ranges(g, value_batches(calib, 8, inp.type.exp), progress=progress),
                                     cfg.act_bits)
    if cfg.act_range == "mse":  # a second pass: each scale chosen by the squared error it causes
        g = ptq.choose_activation_exps(g, activation_errors(g, value_batches(calib, 8, inp.type.exp),
                                                            progress=progress))
    return g, calib, layer_bits(g, cfg)


def calibration_hessians(g, calib, cfg: Config, held_out: bool = False, fold_images: int = 16,
                         progress: bool = True):
    """The layers' Hessians over the calibration images ``calib`` (:func:`hashiflex.quant.reconstruct.hessians`,
    streamed) and, with ``held_out``, two :class:`~hashiflex.quant.terms.Fold` s for the term sensitivity: the
    first and the last ``fold_images`` calibration images (at most half each), each with the Hessians of the
    other images. One pass over the images either way (Hessians add up over images)."""
    from .imagenet import ImageFolder, value_batches
    from .quant.reconstruct import hessians
    from .quant.terms import Fold, sum_hessians

    exp = g.input.type.exp
    if not held_out:
        return hessians(g, value_batches(calib, 8, exp), progress=progress), None
    n = len(calib)
    m = min(fold_images, n // 2)
    if m < 1:
        raise ValueError(f"--terms auto with --rounding reconstruct: needs at least 2 calibration images (the "
                         f"sensitivity is measured on images the rounding has not seen), found {n}")

    def part(start: int, count: int) -> ImageFolder:
        return ImageFolder(cfg.data_root, files=calib.files, preprocess=cfg.preprocess, start=start, limit=count)

    x_first = part(0, m).arrays()[0] * 2.0 ** exp
    x_last = part(n - m, m).arrays()[0] * 2.0 ** exp
    h_first, h_last = hessians(g, x_first, progress=progress), hessians(g, x_last, progress=progress)
    parts_mid = [hessians(g, value_batches(part(m, n - 2 * m), 8, exp), progress=progress)] if n > 2 * m else []
    h = sum_hessians(h_first, *parts_mid, h_last)
    return h, [Fold(x_first, sum_hessians(*parts_mid, h_last)), Fold(x_last, sum_hessians(h_first, *parts_mid))]


def step_quantize_pretrained(work: Path, cfg: Config, progress: bool = True) -> dict:
    """The pretrained path: import the torchvision ``cfg.arch`` with weights ``cfg.init``, calibrate activations
    on the first ``cfg.calib_images`` images of ``cfg.data_root`` (streamed: running ranges only), choose the
    terms per layer (``cfg.terms``; "auto" by sensitivity within ``cfg.adder_budget``), prune (``cfg.sparsity``),
    fine-tune the Po2 weights by distillation from the float model (``cfg.distill_epochs`` on the first
    ``cfg.distill_images`` of ``cfg.distill_data``; under torchrun, with DDP), quantize (rounding each layer's
    weights against its inputs on the calibration images with ``cfg.rounding == "reconstruct"``,
    :mod:`hashiflex.quant.reconstruct`) (-> po2.pkl, with the float graph beside it for ``evaluate``). No labels
    are used."""
    from .imagenet import ImageFolder
    from .quant.biascorr import bias_correction

    terms: int | dict[str, int] | None = None
    if cfg.rounding not in ("nearest", "reconstruct"):
        raise ValueError(f"--rounding: expected 'nearest' or 'reconstruct', found {cfg.rounding!r}")
    if cfg.prune_method not in ("magnitude", "obs"):
        raise ValueError(f"--prune-method: expected 'magnitude' or 'obs', found {cfg.prune_method!r}")
    if cfg.prune_method == "obs" and cfg.prune_scope != "layer":
        raise ValueError(f"--prune-method obs: prunes each layer by its own fraction (--prune-scope layer), found "
                         f"--prune-scope {cfg.prune_scope!r}")
    if cfg.terms != "auto":
        try:
            terms = int(cfg.terms)
        except ValueError:
            terms = 0
        if not 1 <= terms <= 4:
            raise ValueError(f"--terms: expected 1, 2, 3, 4 or 'auto', found {cfg.terms!r}")
    g, calib, bits = calibrated_pretrained(cfg, progress)
    inp = g.input
    options = []
    # the first 16 calibration images in memory, for bias correction and for the term sensitivity of nearest
    # rounding (rounded against the data, it is measured on held-out folds: calibration_hessians)
    x = None
    if cfg.bias_correction or (cfg.terms == "auto" and cfg.rounding == "nearest"):
        x = ImageFolder(cfg.data_root, cfg.classes, preprocess=cfg.preprocess,
                        limit=min(16, cfg.calib_images)).arrays()[0] * 2.0 ** inp.type.exp
    h = None  # the layers' input statistics, when the weights are rounded against calibration data
    folds = None  # with auto terms: the sensitivity measured on calibration images the rounding did not see
    if cfg.rounding == "reconstruct" or (cfg.sparsity and cfg.prune_method == "obs"):
        h, folds = calibration_hessians(g, calib, cfg, held_out=cfg.terms == "auto" and cfg.rounding == "reconstruct",
                                        progress=progress)
    if cfg.terms == "auto":
        from .quant.terms import choose_terms

        terms, opts = choose_terms(g, bits, x, cfg.max_terms, cfg.adder_budget, cfg.target_ii, progress=progress,
                                   h=h, folds=folds)
        options = [o.to_json() for o in opts]
    float_g = g  # the float model evaluate compares against (and distillation's teacher)
    if cfg.sparsity:
        from .quant.prune import dense_layers, obs_prune, prune

        unpruned = dense_layers(g, cfg.keep_depthwise)
        if cfg.prune_method == "obs":
            g = obs_prune(g, h, cfg.sparsity, exclude=unpruned, progress=progress)
        else:
            g = prune(g, cfg.sparsity, cfg.prune_scope, exclude=unpruned)
    distilled = None
    if cfg.distill_epochs:
        from .imagenet import image_source
        from .quant.distill import distill

        data = image_source(cfg.distill_data or cfg.data_root, cfg.classes, cfg.distill_images or cfg.calib_images,
                            cfg.preprocess)
        work.mkdir(parents=True, exist_ok=True)
        r = distill(g, data, bits, terms, epochs=cfg.distill_epochs, lr=cfg.distill_lr, batch=cfg.distill_batch,
                    seed=cfg.seed, teacher=float_g, progress=progress, checkpoint=work / "distill.ck")
        if r.rank != 0:  # DDP: every process trained; the first writes the result
            return {"rank": r.rank}
        (work / "distill.ck").unlink(missing_ok=True)
        g = r.graph
        distilled = {"images": len(data), "epochs": cfg.distill_epochs, "steps": r.steps, "loss": r.loss,
                     "processes": r.world_size}
    q = ptq.quantize_weights(g, bits, terms)
    if cfg.rounding == "reconstruct":
        from .quant.reconstruct import reconstruct

        # pruned and not fine-tuned since: the float weights are the target, the survivors compensate the pruned
        dense = float_g if cfg.sparsity and not distilled else None
        q = reconstruct(g, q, h=h, progress=progress, dense=dense)
    if cfg.bias_correction:
        q = bias_correction(float_g, q, x, batch=4)
    work.mkdir(parents=True, exist_ok=True)
    hwm = hwmodel.hw_model(q, cfg.levels_per_stage, cfg.target_ii)
    per_layer = {l.name: l.q.terms for l in q.layers if getattr(l, "q", None) is not None}
    meta = {"graph": q, "float_graph": float_g, "config": asdict(cfg), "terms": per_layer, "term_options": options,
            "adders": int(sum(m.adders for m in hwm)), "weight_sparsity": weight_sparsity(q), "distill": distilled}
    _write_pickle(work / "po2.pkl", meta)
    out = {"adders": meta["adders"], "terms": per_layer, "weight_sparsity": meta["weight_sparsity"]}
    if distilled:
        out["distill_loss"] = distilled["loss"]
    return out


def _write_pickle(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump(obj, f)
    tmp.replace(path)


def _topk(logits: np.ndarray, y: np.ndarray, k: int) -> float:
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float((top == y[:, None]).any(axis=1).mean())


def step_evaluate(work: Path, data: str, classes: str | None = None, limit: int | None = None,
                  start: int | None = None, golden: bool = True, progress: bool = True) -> dict:
    """Top-1/top-5 on an ImageNet-style folder of the float model, the fake-quant model and the integer golden
    model of WORK/po2.pkl (pretrained path), and their top-1 agreement. ``start`` (default: past the calibration
    and distillation images when ``data`` is their folder) skips the first images."""
    from tqdm.auto import tqdm

    from .imagenet import ImageFolder
    from .quant.fakequant import FakeQuantNet

    q, meta = load_quantized(work)
    if "float_graph" not in meta:
        raise ValueError(f"{work / 'po2.pkl'}: evaluate needs the pretrained path's po2.pkl (hashiflex quantize "
                         "--arch ... --init ... --calib-data DIR)")
    cfg = Config(**meta["config"])
    if start is None:  # past the images the quantization saw (calibration, distillation) in this folder
        here = Path(data).resolve()
        start = cfg.calib_images if here == Path(cfg.data_root).resolve() else 0
        if cfg.distill_epochs and here == Path(cfg.distill_data or cfg.data_root).resolve():
            start = max(start, cfg.distill_images or cfg.calib_images)
    ds = ImageFolder(data, classes, preprocess=cfg.preprocess, start=start, limit=limit)
    if not len(ds):
        raise ValueError(f"{data}: no images left after skipping the first {start}")
    fnet = FakeQuantNet(meta["float_graph"], quantize=False).float().eval()
    qnet = FakeQuantNet(q).double().eval()
    gold = ref.Golden(q)  # analysed once for every batch
    exp = q.input.type.exp
    outs = {"float": [], "fake_quant": [], "golden": []}
    ys = []
    with torch.no_grad():
        for x, y in tqdm(ds.loader(8), desc="evaluate", disable=not progress, leave=False):
            v = x.double() * 2.0 ** exp
            outs["float"].append(fnet(v.float()).double().numpy())
            outs["fake_quant"].append(qnet(v).numpy())
            if golden:
                outs["golden"].append(gold.run(x.numpy().astype(np.int64)).astype(np.float64))
            ys.append(y.numpy())
    y = np.concatenate(ys)
    res = {"images": int(len(y)), "first_image": int(start), "data": str(data), "models": {}}
    for k, v in outs.items():
        if not v:
            continue
        lg = np.concatenate(v)
        res["models"][k] = {"top1": _topk(lg, y, 1), "top5": _topk(lg, y, 5),
                            "top1_agreement_with_float": float((lg.argmax(1) ==
                                                                np.concatenate(outs["float"]).argmax(1)).mean())}
    if golden:  # the ladder, exactly: fake-quant float64 logits at the output scale are the golden integers
        fq = np.concatenate(outs["fake_quant"]) / 2.0 ** ref.output_exp(q)
        res["golden_equals_fake_quant"] = bool(np.array_equal(np.concatenate(outs["golden"]), fq))
    res["adders"] = meta.get("adders")
    res["terms"] = meta.get("terms")
    return res


def format_evaluate(r: dict) -> str:
    lines = [f"{r['images']} images of {r['data']} (from image {r['first_image']})",
             f"{'model':<12} {'top-1':>7} {'top-5':>7} {'agree w/ float':>15}"]
    for k, m in r["models"].items():
        lines.append(f"{k:<12} {100 * m['top1']:6.2f}% {100 * m['top5']:6.2f}% "
                     f"{100 * m['top1_agreement_with_float']:14.2f}%")
    if r.get("adders") is not None:
        lines.append(f"adders (generator's plan, all lanes): {r['adders']:,}")
    return "\n".join(lines)


def step_train(work: Path, cfg: Config, progress: bool = True) -> dict:
    ds = _ds(cfg)
    seed_everything(cfg.seed)  # before construction: the initial weights are part of the result
    model = build_model(cfg, ds.classes)
    if cfg.init:
        load_state_dict_file(model, cfg.init)
    work.mkdir(parents=True, exist_ok=True)
    train_float(model, ds, cfg.epochs, cfg.lr, cfg.seed, progress, checkpoint=work / "float.ck", **cfg.fit_args())
    acc = accuracy_torch(model, ds.value(ds.x_test), ds.y_test)
    (work / "float.ck").unlink(missing_ok=True)
    torch.save({"state_dict": model.state_dict(), "config": asdict(cfg), "classes": ds.classes,
                "float_accuracy": acc}, work / "float.pt")
    return {"float_accuracy": acc}


def load_state_dict_file(model, path: str) -> list[str]:
    """Load matching tensors of a state_dict file (e.g. torchvision's MobileNetV2 ImageNet weights) into
    ``model``; tensors whose shape differs (a classifier for another number of classes) are skipped and
    returned. Unknown keys are an error naming them."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    unknown = [k for k in sd if k not in own]
    if unknown:
        raise ValueError(f"{path}: keys not in the model: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    skipped = [k for k, v in sd.items() if own[k].shape != v.shape]
    model.load_state_dict({k: v for k, v in sd.items() if k not in skipped}, strict=False)
    return skipped


def load_float(work: Path):
    ck = torch.load(work / "float.pt", weights_only=False)
    cfg = Config(**ck["config"])
    model = build_model(cfg, ck["classes"])
    model.load_state_dict(ck["state_dict"])
    return model.eval(), cfg, ck


def quantize_ptq(model, input: Input, name: str, calib_values: np.ndarray, weight_bits: int = 5,
                 edge_bits: int | None = 8, act_bits: int = 8) -> Graph:
    """Post-training Po2 quantization of a torch model: import, calibrate activations on ``calib_values``
    (float images), quantize weights (``edge_bits`` for the first and last layer). No training: for generator
    benchmarks and co-simulation of networks whose accuracy is not the point."""
    g = frontend.import_torch(model.eval(), input, name=name)
    g = ptq.calibrate_activations(g, activation_ranges(g, calib_values), act_bits)
    return ptq.quantize_weights(g, layer_bits(g, Config(weight_bits=weight_bits, edge_bits=edge_bits)))


def step_quantize(work: Path, weight_bits: int | None = None, progress: bool = True, **overrides) -> dict:
    """Import the float model into the IR, calibrate activations, Po2 QAT (with pruning when
    ``sparsity`` > 0), quantize (-> po2.pkl). ``overrides``: Config fields (sparsity, edge_bits, qat_epochs...)."""
    model, cfg, ck = load_float(work)
    if weight_bits is not None:
        cfg.weight_bits = weight_bits
    for k, v in overrides.items():
        if v is not None:
            setattr(cfg, k, v)
    ds = _ds(cfg)
    g = frontend.import_torch(model, ds.input, name=graph_name(cfg))
    g = ptq.calibrate_activations(g, activation_ranges(g, ds.value(ds.x_train[:2048])), cfg.act_bits)
    bits = layer_bits(g, cfg)
    g_ptq = ptq.quantize_weights(g, bits)
    names = list(bits)
    g = train_qat(g, ds, bits, cfg.qat_epochs, cfg.qat_lr, cfg.seed, progress, sparsity=cfg.sparsity,
                  scope=cfg.prune_scope, exclude=(names[0], names[-1]) if cfg.edge_bits else (),
                  checkpoint=work / "qat.ck", **dict(cfg.fit_args(), optimizer="adam"))  # SGD diverged in QAT
    (work / "qat.ck").unlink(missing_ok=True)
    q = ptq.quantize_weights(g, bits)
    acc_ptq = float((ref.run(g_ptq, ds.x_test).argmax(1) == ds.y_test).mean())
    acc = float((ref.run(q, ds.x_test).argmax(1) == ds.y_test).mean())
    with open(work / "po2.pkl", "wb") as f:
        pickle.dump({"graph": q, "config": asdict(cfg), "float_accuracy": ck["float_accuracy"],
                     "ptq_accuracy": acc_ptq, "po2_accuracy": acc, "weight_sparsity": weight_sparsity(q)}, f)
    return {"ptq_accuracy": acc_ptq, "po2_accuracy": acc, "weight_sparsity": weight_sparsity(q)}


def load_quantized(work: Path) -> tuple[Graph, dict]:
    with open(work / "po2.pkl", "rb") as f:
        d = pickle.load(f)
    return d["graph"], d


def step_export(work: Path, levels_per_stage: int | None = None, target_ii: int | None = None,
                parallelism: dict[str, int] | None = None, levels: dict[str, int] | None = None,
                clock_ps: float | None = None, timing_model: Path | None = None) -> dict:
    """``parallelism``: pixels per beat of some tensors, overriding the unroll pass's proposal for the target
    (names that are not tensors of the network are refused). ``clock_ps``: every conv/linear layer gets the most
    adder levels per register stage the stage timing model (``timing_model``, default the packaged one:
    :mod:`hashiflex.stage_timing`) predicts meet that clock period; ``levels``: some layers' levels per stage
    given outright (over the clock's choice)."""
    g, meta = load_quantized(work)
    cfg = Config(**meta["config"])
    target = target_ii or cfg.target_ii
    par = None
    if parallelism:
        par = hwmodel.choose_parallelism(g, target)
        unknown = sorted(set(parallelism) - set(par))
        if unknown:
            raise ValueError(f"--parallelism: {unknown[0]!r} is not a tensor of the network (have 'input' and the "
                             f"layers: {', '.join(list(par)[1:5])}, ...)")
        par.update(parallelism)
    own, predicted = {}, {}
    if clock_ps is not None:
        from . import stage_timing

        own, predicted = stage_timing.levels_for_clock(g, clock_ps, stage_timing.load(timing_model))
    own.update(levels or {})
    d = design_from_graph(g, levels_per_stage or cfg.levels_per_stage, target, parallelism=par, levels=own)
    ds = _ds(cfg)
    # rung check before anything is written: fake-quant torch (float64) == integer golden model, exactly
    gold = ref.run(g, ds.x_test)
    fq = fake_quant_int_outputs(g, ds.x_test, ref.output_exp(g))
    if not np.array_equal(gold, fq):
        bad = (gold != fq).any(1)
        raise GoldenMismatchError(f"export {work / 'design.json'}: fake-quant torch and the golden model differ on "
                                  f"{int(bad.sum())} of {len(bad)} test images (first: image {int(np.argmax(bad))}); "
                                  "nothing was written")
    write_design(d, work / "design.json")
    out = {"design": str(work / "design.json"), "ii_cycles_per_image": d["hardware"]["ii_cycles_per_image"]}
    if own:
        out["levels_per_stage"] = own
    if predicted:
        out["clock_ps"] = clock_ps
        out["predicted_period_ps"] = round(max(predicted.values()), 1)
    return out


def step_fidelity(work: Path, limit: int = 512, progress: bool = True) -> dict:
    """Per-layer fidelity of WORK/po2.pkl against the float model WORK/float.pt on ``limit`` training images, or,
    for the pretrained path, against its float graph on its calibration images (:mod:`hashiflex.quant.fidelity`):
    {"through": [...], "alone": [...]}."""
    from .quant.fidelity import layer_fidelity, weight_sensitivity

    q, meta = load_quantized(work)
    if "float_graph" in meta:  # the pretrained path: its float graph and calibration folder
        from .imagenet import ImageFolder

        cfg = Config(**meta["config"])
        g = meta["float_graph"]
        xi = ImageFolder(cfg.data_root, cfg.classes, preprocess=cfg.preprocess,
                         limit=min(limit, cfg.calib_images)).arrays()[0]
        x = xi * 2.0 ** q.input.type.exp
    else:
        model, cfg, _ = load_float(work)
        ds = _ds(cfg)
        g = frontend.import_torch(model, ds.input, name=q.name)
        x = ds.value(ds.x_train[:limit])
    return {"through": layer_fidelity(g, q, x, progress=progress), "alone": weight_sensitivity(g, q, x, progress=progress)}


def step_elaborate(work: Path) -> dict:
    d, g = load_design(work / "design.json")
    params = hw.elaborate(work / "design.json", work / "rtl")
    hw.check_design_hw(d, g, params)
    return params


def step_layerwise(work: Path, images: int = 2, data: Path | None = None, preprocess: str = "inception",
                   address: str | None = None, jobs: int | None = None, limit: int | None = None,
                   match: str | None = None, max_adders: int | None = None, progress: bool = True) -> dict:
    """``hashiflex layerwise``: every single-input layer of WORK's elaborated design co-simulated alone at full size
    on real activations (:mod:`hashiflex.sim.layerwise`) → WORK/report/layerwise.json. Images: the first
    ``images`` of the ImageFolder ``data`` when given, else of the work folder's own test set."""
    from .sim.layerwise import verify_layers

    d, g = load_design(work / "design.json")
    if data is not None:
        from .imagenet import ImageFolder

        x = ImageFolder(data, preprocess=preprocess, limit=images).arrays()[0]
    else:
        owner = next((w for w in (work, work.parent) if (w / "po2.pkl").exists()), None)
        meta = load_quantized(owner)[1] if owner else {"config": asdict(Config())}
        x = _ds(Config(**meta["config"])).x_test[:images]
    return verify_layers(work / "design.json", np.asarray(x), work / "report" / "layerwise", address, jobs, limit,
                         match, max_adders, progress)


def step_cosim(work: Path, limit: int | None = None, vcd: str | None = None, progress: bool = True,
               quiet: bool = True, vcd_window: tuple[int, int] | None = None) -> dict:
    from .sim import StreamSim

    d, g = load_design(work / "design.json")
    params = hw.read_hw_params(work / "rtl")
    hw.check_design_hw(d, g, params)
    owner = next((w for w in (work, work.parent) if (w / "po2.pkl").exists()), None)  # WORK/npu: its parent's
    meta = load_quantized(owner)[1] if owner else {"config": asdict(Config())}
    ds = _ds(Config(**meta["config"]))
    x, y = ds.x_test[:limit], ds.y_test[:limit]
    sim = StreamSim(work / "rtl", params, d, quiet=quiet)
    head = npu.from_design(d)
    if head is not None:  # hardened backbone + NPU: boot it with the design's head through the load port
        status = sim.load(npu.encode(head[1], head[0]))
        if status != npu.Status.OK:
            raise RuntimeError(f"the NPU's load port refused the design's head: {status.name}")
    res = sim.run(x, vcd=vcd, progress=progress, vcd_window=vcd_window)
    if head is None:
        gold = ref.run(g, x)
        mismatches = int((res.outputs != gold).any(axis=1).sum())
    else:
        logits, top = npu.golden(g, head[0], head[1], x)
        mismatches = npu.mismatches(res.outputs, res.topk, logits, top)
    out = {"images": int(len(x)), "mismatches": mismatches,
           "rtl_accuracy": float(((res.topk[:, 0] if head else res.outputs.argmax(1)) == y).mean()),
           "golden_accuracy": float(((top[:, 0] if head else gold.argmax(1)) == y).mean()),
           "cycles_per_image": res.cycles_per_image, "latency_cycles": res.latency, "cycles": res.cycles}
    (work / "cosim.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


_PKG = Path(__file__).resolve().parent
# the code each cached step's result depends on
_TRAIN_CODE = ("models.py", "train.py", "data.py", "flow.py")
_QUANT_CODE = _TRAIN_CODE + ("ir.py", "frontend.py", "analysis.py", "ops", "numfmt.py", "ref.py", "quant")
# not the hardware model: editing a cost does not re-run QAT; it re-exports
_EXPORT_CODE = ("export", "hwmodel.py", "adders.py", "ops")


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, Path):
            files = sorted(p.rglob("*")) if p.is_dir() else [p]
            for f in files:
                if f.is_file() and "__pycache__" not in f.parts:
                    h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
                    h.update(f.read_bytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _cached(work: Path, step: str, key: str, outputs: list[Path], run) -> tuple[dict, bool]:
    """Run ``run()`` unless the stamp for ``step`` has the same input digest and every output exists."""
    stamp = work / ".stamps" / f"{step}.json"
    if stamp.exists() and all(o.exists() for o in outputs):
        s = json.loads(stamp.read_text())
        if s.get("key") == key:
            return s["result"], True
    result = run()
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"key": key, "result": result}, indent=2, default=str) + "\n")
    return result, False


def demo(work: Path = Path("build"), cfg: Config | None = None, progress: bool = True,
         netlist: bool = True, reuse: bool = True) -> dict:
    """Train, quantize, export, elaborate, co-simulate the whole test split; return the figures.

    With ``reuse``, a step whose inputs (config, upstream artifacts, the code that runs it) are unchanged since
    its last run is skipped and its recorded result reused, so a second ``make demo`` is fast.
    """
    from tqdm.auto import tqdm

    cfg = cfg or Config()
    work = Path(work)
    t = Timer()
    steps = ["train", "quantize", "export", "elaborate", "cosim"] + (["netlist"] if netlist else [])
    bar = tqdm(steps, desc="hashiflex demo", disable=not progress)
    root = _PKG.parent
    rtl = work / "rtl"

    def elaborate():
        p = step_elaborate(work)
        return dict(adders=p["adders"], latency_stages=p["latency_stages"], ii_model=p["ii_cycles_per_image"])

    def netlist_count():
        from .report import netlist_stats

        p = hw.read_hw_params(rtl)
        s = netlist_stats(rtl / p["verilog"], p["top"])
        return dict(flip_flop_bits=s.flip_flop_bits, netlist_add_sub=s.add_sub_cells)

    plan = {  # step: (inputs that decide its result, outputs, run)
        "train": (lambda: [asdict(cfg), *(_PKG / f for f in _TRAIN_CODE)], [work / "float.pt"],
                  lambda: step_train(work, cfg, progress)),
        "quantize": (lambda: [work / "float.pt", *(_PKG / f for f in _QUANT_CODE)], [work / "po2.pkl"],
                     lambda: step_quantize(work, progress=progress)),
        "export": (lambda: [work / "po2.pkl", *(_PKG / f for f in _EXPORT_CODE)], [work / "design.json"],
                   lambda: step_export(work)),
        "elaborate": (lambda: [work / "design.json", root / "chisel", root / "build.sc"], [rtl / "hw_params.json"],
                      elaborate),
        "cosim": (lambda: [work / "design.json", rtl, _PKG / "sim"], [work / "cosim.json"],
                  lambda: step_cosim(work, progress=progress)),
        "netlist": (lambda: [rtl], [], netlist_count),
    }
    r: dict = {}
    reused = []
    for step in bar:
        bar.set_postfix_str(step)
        inputs, outputs, run = plan[step]
        with t(step):
            if reuse:
                res, hit = _cached(work, step, _digest(*inputs()), outputs, run)
                if hit:
                    reused.append(step)
            else:
                res = run()
            r.update(res)
    r["seconds"] = t.times
    r["reused"] = reused
    (work / "demo.json").write_text(json.dumps(r, indent=2) + "\n")
    return r


def format_table(r: dict) -> str:
    rows = [
        ("float accuracy (test)", f"{100 * r['float_accuracy']:.2f} %"),
        ("Po2 accuracy (golden model)", f"{100 * r['po2_accuracy']:.2f} %"),
        ("RTL accuracy (Verilator)", f"{100 * r['rtl_accuracy']:.2f} %"),
        ("RTL vs golden mismatches", f"{r['mismatches']} / {r['images']} images"),
        ("cycles per image (measured / model)", f"{r['cycles_per_image']:.1f} / {r['ii_model']}"),
        ("latency (first pixel in -> logits out)", f"{r['latency_cycles']} cycles"),
        ("pipeline register stages", str(r["latency_stages"])),
        ("adders (shift-add trees, requant, pool)", str(r["adders"])),
    ]
    if "flip_flop_bits" in r:
        rows += [("registers (flip-flop bits, Yosys)", str(r["flip_flop_bits"])),
                 ("add/sub cells in netlist (Yosys)", str(r["netlist_add_sub"]))]
    reused = set(r.get("reused", []))
    rows += [(f"time: {k}", f"{v:.1f} s" + (" (unchanged, reused)" if k in reused else ""))
             for k, v in r.get("seconds", {}).items()]
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)


def step_sweep(work: Path, bits: list[int], sparsities: list[float], finetune_epochs: int = 0,
               out: Path | None = None, progress: bool = True, address: str | None = None,
               jobs: int | None = None) -> dict:
    """Accuracy and adders vs weight bits and sparsity for the trained model in ``work`` (CSV + PNG); the points
    fan out on Ray (``address``/``jobs``, :func:`hashiflex.sweep.sweep`) and resume from OUT/sweep_*.points.jsonl."""
    from .sweep import plot, sweep, write_csv

    model, cfg, ck = load_float(work)
    ds = _ds(cfg)
    g = frontend.import_torch(model, ds.input, name=graph_name(cfg))
    g = ptq.calibrate_activations(g, activation_ranges(g, ds.value(ds.x_train[:2048])), cfg.act_bits)
    out = Path(out or work / "sweep")
    tag = f"{cfg.dataset}_ft{finetune_epochs}"
    points = sweep(g, ds, bits, sparsities, finetune_epochs, levels_per_stage=cfg.levels_per_stage,
                   progress=progress, address=address, jobs=jobs, cache=out / f"sweep_{tag}.points.jsonl",
                   seed=cfg.seed)
    csv_path = write_csv(points, out / f"sweep_{tag}.csv")
    png = plot(points, out / f"sweep_{tag}.png",
               f"{cfg.dataset}: Po2 accuracy vs sparsity ({'QAT ' + str(finetune_epochs) + ' ep' if finetune_epochs else 'post-training'})",
               ck["float_accuracy"])
    return {"csv": str(csv_path), "png": str(png), "points": [p.__dict__ for p in points]}
