"""ImageNet-style folders: labels by WordNet id (never ImageFolder's renumbering), exact int8 input, clear errors."""
import numpy as np
import pytest
import torch

from hashiflex.imagenet import ImageFolder, check_preprocess, input_type, list_images, load_image, read_classes


def make_folder(root, wnids, per_class=2, size=(40, 52), seed=0, classes=None):
    """A folder of random PNG images, one sub-folder per WordNet id, and a classes file listing ``classes``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for w in wnids:
        (root / w).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, size=size + (3,), dtype=np.uint8)).save(root / w / f"{w}_{i}.png")
    if classes is not None:
        (root / "classes.txt").write_text("".join(f"{c} name of {c}\n" for c in classes))
    return root


def test_labels_come_from_the_classes_file_not_the_folder_order(tmp_path):
    classes = [f"n{k:08d}" for k in range(10)]
    root = make_folder(tmp_path / "d", [classes[3], classes[7]], classes=classes)
    files = list_images(root)
    assert [y for _, y in files] == [3, 3, 7, 7]  # ImageFolder would say 0, 0, 1, 1
    x, y = ImageFolder(root, size=16).arrays()
    assert x.shape == (4, 3, 16, 16) and list(y) == [3, 3, 7, 7]
    assert read_classes(root / "classes.txt")[classes[7]] == 7


def test_the_input_is_exactly_int8_with_scale_2_to_the_minus_7(tmp_path):
    root = make_folder(tmp_path / "d", ["n00000001"], per_class=1, classes=["n00000000", "n00000001"])
    x = load_image(next((root / "n00000001").iterdir()), size=24)
    assert x.dtype == torch.int16 and x.shape == (3, 24, 24)
    assert int(x.min()) >= -128 and int(x.max()) <= 127
    t = input_type()
    assert (t.type.bits, t.type.signed, t.type.exp) == (8, True, -7) and t.type.range == (-128, 127)
    # a constant image: (v - 128) exactly, whatever the resize does
    from PIL import Image

    Image.fromarray(np.full((30, 30, 3), 200, dtype=np.uint8)).save(root / "n00000001" / "flat.png")
    assert torch.equal(load_image(root / "n00000001" / "flat.png", size=8), torch.full((3, 8, 8), 72, dtype=torch.int16))


def test_bad_folders_are_refused_naming_what_is_wrong(tmp_path):
    root = make_folder(tmp_path / "a", ["n00000001", "n00000002"])
    with pytest.raises(ValueError, match=r"2 class folders and no classes file: give --classes FILE"):
        list_images(root)
    make_folder(tmp_path / "b", ["n00000005"], classes=["n00000001"])
    with pytest.raises(ValueError, match=r"folder 'n00000005' is not a class of .*classes.txt \(1 unknown\)"):
        list_images(tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "c.txt").write_text("n1 a\nn1 b\n")
    with pytest.raises(ValueError, match=r"line 2: WordNet id 'n1' is listed twice \(first on line 1\)"):
        read_classes(tmp_path / "c.txt")
    with pytest.raises(ValueError, match="mean/std normalisation is not an exact fixed-point input"):
        check_preprocess("torchvision")
    bad = tmp_path / "b" / "n00000005" / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png: not a readable image"):
        load_image(bad)


def test_array_images_are_resized_to_the_exact_int8_input_and_bad_files_refused(tmp_path):
    from hashiflex.imagenet import ArrayImages, image_source

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    x[0] = 255  # a flat white image stays 127 everywhere after resizing
    np.savez(tmp_path / "imgs.npz", x=x, y=np.zeros(5))
    ds = image_source(tmp_path / "imgs.npz", limit=3)
    assert isinstance(ds, ArrayImages) and len(ds) == 3
    im, label = ds[0]
    assert im.shape == (3, 224, 224) and im.dtype == torch.int16 and label == 0
    assert int(im.min()) == int(im.max()) == 127
    small = ArrayImages(tmp_path / "imgs.npz", size=32)[1][0]
    assert np.array_equal(small.numpy(), x[1].transpose(2, 0, 1).astype(np.int16) - 128)  # same size: unchanged
    np.savez(tmp_path / "bad.npz", images=x)
    with pytest.raises(ValueError, match=r"bad.npz: expected an array 'x' of uint8 images \(N, H, W, 3\), found "
                                         r"\['images'\]"):
        ArrayImages(tmp_path / "bad.npz")
    np.savez(tmp_path / "gray.npz", x=x[..., 0])
    with pytest.raises(ValueError, match=r"gray.npz: 'x': expected uint8 images \(N, H, W, 3\), found uint8 "
                                         r"\(5, 32, 32\)"):
        ArrayImages(tmp_path / "gray.npz")
    with pytest.raises(FileNotFoundError, match="image array file .*missing.npz does not exist"):
        ArrayImages(tmp_path / "missing.npz")
