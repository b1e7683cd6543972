"""ImageNet-style image folders for pretrained 1000-class networks: streamed, labelled by WordNet id, and with the
input normalisation expressed exactly in the IR's fixed-point input.

A folder is torchvision's ImageFolder layout (``DIR/<wnid>/<file>``), but labels never come from ImageFolder's own
renumbering of the folders present (a 500-class sample would be numbered 0..499, wrong for a 1000-class model):
a classes file (one WordNet id per line, first word; line k is class k; default ``DIR/classes.txt``) maps each
folder to its class, or, without one, the folder must hold all 1000 classes, whose sorted order is the standard
index.

Preprocessing ``inception`` (TF/Coral MobileNets): central crop of 87.5 % of height and width, PIL bilinear
resize to ``size``, RGB, x -> (x - 128) / 128. The rounded pixel minus 128 is exactly a signed 8-bit
integer with scale 2**-7, so the IR input is ``TensorType(8, signed=True, exp=-7)`` and nothing is approximated.
Mean/std normalisation (torchvision's ``preprocess=torchvision``) would have to be folded into the first conv,
border effects included; it is refused with that message rather than approximated.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .ir import Input, TensorType

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
PREPROCESS = ("inception",)


def input_type(preprocess: str = "inception", size: int = 224) -> Input:
    check_preprocess(preprocess)
    return Input(3, size, size, TensorType(8, True, -7))


def check_preprocess(preprocess: str) -> None:
    if preprocess == "torchvision":
        raise ValueError("--preprocess torchvision: mean/std normalisation is not an exact fixed-point input; it "
                         "needs folding into the first conv (with its zero-padding border handled exactly), which "
                         "hashiflex does not do yet. Use weights trained for inputs (x - 128) / 128 "
                         "(--preprocess inception)")
    if preprocess not in PREPROCESS:
        raise ValueError(f"--preprocess: expected one of {', '.join(PREPROCESS + ('torchvision',))}, "
                         f"found {preprocess!r}")


def read_classes(path: Path) -> dict[str, int]:
    """WordNet id -> class index from a classes file (line k: the id of class k, then anything)."""
    out: dict[str, int] = {}
    for k, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            raise ValueError(f"{path}: line {k + 1} is empty (expected a WordNet id, e.g. n01440764)")
        wnid = line.split()[0]
        if wnid in out:
            raise ValueError(f"{path}: line {k + 1}: WordNet id {wnid!r} is listed twice (first on line "
                             f"{out[wnid] + 1})")
        out[wnid] = k
    return out


def list_images(root: str | Path, classes: str | Path | None = None) -> list[tuple[Path, int]]:
    """(file, class index) of every image under ``root``, sorted by folder then name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    folders = sorted(d for d in root.iterdir() if d.is_dir())
    if not folders:
        raise ValueError(f"{root}: expected one folder per class (ImageFolder layout), found none")
    cfile = Path(classes) if classes is not None else root / "classes.txt"
    if cfile.exists():
        index = read_classes(cfile)
        unknown = [d.name for d in folders if d.name not in index]
        if unknown:
            raise ValueError(f"{root}: folder {unknown[0]!r} is not a class of {cfile} ({len(unknown)} unknown)")
    elif classes is not None:
        raise FileNotFoundError(f"classes file {cfile} does not exist")
    elif len(folders) == 1000:
        index = {d.name: k for k, d in enumerate(folders)}
    else:
        raise ValueError(f"{root}: {len(folders)} class folders and no classes file: give --classes FILE (line k: "
                         "the WordNet id of class k) or a folder with all 1000 classes")
    files = [(f, index[d.name]) for d in folders for f in sorted(d.iterdir())
             if f.is_file() and f.suffix.lower() in EXTENSIONS]
    if not files:
        raise ValueError(f"{root}: no images ({', '.join(EXTENSIONS)}) in its class folders")
    return files


def load_image(path: Path, size: int = 224, preprocess: str = "inception") -> torch.Tensor:
    """One image as the IR's integer input: int16 (3, size, size) in [-128, 127] (value: x * 2**-7). Central crop
    of 87.5 % of height and width, PIL bilinear resize, RGB (the reference preprocessing of the shared figures)."""
    from PIL import Image, UnidentifiedImageError

    check_preprocess(preprocess)
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            ch, cw = int(round(h * 0.875)), int(round(w * 0.875))
            top, left = (h - ch) // 2, (w - cw) // 2
            im = im.resize((size, size), Image.BILINEAR, box=(left, top, left + cw, top + ch))
            x = np.asarray(im, dtype=np.int16)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from e
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)) - 128)


class ImageFolder(torch.utils.data.Dataset):
    """(integer image, class index) pairs of :func:`list_images`, decoded on access (for a DataLoader)."""

    def __init__(self, root, classes=None, size: int = 224, preprocess: str = "inception",
                 start: int = 0, limit: int | None = None, files=None):
        check_preprocess(preprocess)
        all_files = files if files is not None else list_images(root, classes)
        stop = len(all_files) if limit is None else min(len(all_files), start + limit)
        self.files = all_files[start:stop]
        self.size, self.preprocess = size, preprocess

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        f, y = self.files[i]
        return load_image(f, self.size, self.preprocess), y

    def loader(self, batch: int = 16, workers: int = 0):
        return torch.utils.data.DataLoader(self, batch_size=batch, shuffle=False, num_workers=workers)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All of it in memory (small subsets only): int64 images and labels."""
        xs, ys = zip(*(self[i] for i in range(len(self)))) if len(self) else ((), ())
        return np.stack([x.numpy() for x in xs]).astype(np.int64), np.asarray(ys, dtype=np.int64)


class ArrayImages(torch.utils.data.Dataset):
    """Unlabelled natural images from an ``.npz`` of uint8 NHWC RGB images (key ``x``, as
    ``../shared/data/cifar10``), resized (PIL bilinear) to ``size`` and given the IR's integer input, for
    distillation, which needs images but no labels. Items are (int16 image, 0)."""

    def __init__(self, path, size: int = 224, limit: int | None = None, preprocess: str = "inception"):
        check_preprocess(preprocess)
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"image array file {path} does not exist")
        with np.load(path) as z:
            if "x" not in z.files:
                raise ValueError(f"{path}: expected an array 'x' of uint8 images (N, H, W, 3), found {z.files}")
            x = z["x"][:limit] if limit is not None else z["x"]
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
            raise ValueError(f"{path}: 'x': expected uint8 images (N, H, W, 3), found {x.dtype} {x.shape}")
        self.x, self.size = x, size

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        from PIL import Image

        im = Image.fromarray(self.x[i]).resize((self.size, self.size), Image.BILINEAR)
        x = np.asarray(im, dtype=np.int16)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)) - 128), 0


def image_source(path, classes=None, limit: int | None = None, preprocess: str = "inception"):
    """An ImageFolder, or :class:`ArrayImages` for an ``.npz`` file (unlabelled images)."""
    if str(path).endswith(".npz"):
        return ArrayImages(path, limit=limit, preprocess=preprocess)
    return ImageFolder(path, classes, preprocess=preprocess, limit=limit)


def value_batches(ds: ImageFolder, batch: int = 16, exp: int = -7):
    """The images as float64 value-domain batches (for calibration): x * 2**exp, streamed."""
    for x, _ in ds.loader(batch):
        yield x.double().numpy() * 2.0 ** exp
