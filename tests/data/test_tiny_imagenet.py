"""Tiny ImageNet loader on a small tree in the tiny-imagenet-200 layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wmse.data import DatasetError, load_dataset
from wmse.data.tiny_imagenet import load_tiny_imagenet

# wnids.txt is not sorted; labels follow the sorted order, as with ImageFolder.
WNIDS = ["n03400231", "n01443537", "n02124075"]
SORTED = sorted(WNIDS)
WORDS = {
    "n01443537": "goldfish, Carassius auratus",
    "n02124075": "Egyptian cat",
    "n03400231": "frying pan, frypan, skillet",
}
PER_CLASS = 3
# (file name, wnid) of the validation images, in annotation order.
VAL = [("val_0.JPEG", "n02124075"), ("val_1.JPEG", "n03400231"),
       ("val_2.JPEG", "n01443537"), ("val_3.JPEG", "n02124075")]  # fmt: skip


def two_colour_image(top: tuple, bottom: tuple, mode: str = "RGB") -> Image.Image:
    """A 64x64 image, colour ``top`` in rows 0-31 and ``bottom`` in rows 32-63."""
    pixels = np.empty((64, 64, 3), dtype=np.uint8)
    pixels[:32], pixels[32:] = top, bottom
    return Image.fromarray(pixels).convert(mode)


def write_tree(root: Path) -> None:
    """Write wnids.txt, words.txt, train JPEGs, val JPEGs and val_annotations.txt."""
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    words = ["n00001740\tentity"] + [f"{key}\t{value}" for key, value in WORDS.items()]
    (root / "words.txt").write_text("\n".join(words) + "\n")

    # Train: class k's image i is (40k, 10i, 200) on top, (200, 100, 20k) below.
    for wnid in WNIDS:
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        k = SORTED.index(wnid)
        for i in range(PER_CLASS):
            image = two_colour_image((40 * k, 10 * i, 200), (200, 100, 20 * k))
            image.save(folder / f"{wnid}_{i}.JPEG", quality=95)

    # Validation: one grayscale image among them; annotations with bounding boxes.
    lines = []
    for index, (name, wnid) in enumerate(VAL):
        mode = "L" if index == 2 else "RGB"
        image = two_colour_image((index * 50, 0, 0), (0, 0, 255), mode)
        image.save(root / "val" / "images" / name, quality=95)
        lines.append(f"{name}\t{wnid}\t0\t{index}\t62\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def pil_reference(path: Path) -> torch.Tensor:
    """The file decoded independently by PIL, as (3, H, W) uint8."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_tree(tmp_path / "tiny-imagenet-200")
    return tmp_path / "tiny-imagenet-200"


def test_loads_train_and_val(root: Path) -> None:
    splits = load_tiny_imagenet(root.parent, download_ok=False, num_workers=0)

    # Shapes, types; pretrain = train; test = val.
    assert splits.train.images.shape == (3 * PER_CLASS, 3, 64, 64)
    assert splits.train.images.dtype == torch.uint8
    assert splits.test.images.shape == (len(VAL), 3, 64, 64)
    assert splits.pretrain is splits.train
    assert splits.name == "tiny-imagenet" and splits.source == str(root)

    # Labels index the sorted wnids; classes are the first synonym in words.txt.
    assert splits.classes == ["goldfish", "Egyptian cat", "frying pan"]
    assert splits.train.labels is not None and splits.test.labels is not None
    assert splits.train.labels.dtype == torch.int64
    assert splits.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert splits.test.labels.tolist() == [SORTED.index(wnid) for _, wnid in VAL]

    # Pixels equal PIL's decoding of each file, in the listed order.
    first = root / "train" / SORTED[1] / "images" / f"{SORTED[1]}_2.JPEG"
    assert torch.equal(splits.train.images[PER_CLASS + 2], pil_reference(first))
    for index, (name, _) in enumerate(VAL):
        reference = pil_reference(root / "val" / "images" / name)
        assert torch.equal(splits.test.images[index], reference)


def test_channels_and_orientation(root: Path) -> None:
    splits = load_tiny_imagenet(root.parent, download_ok=False, num_workers=0)

    # Class 2, image 1: top (80, 10, 200), bottom (200, 100, 40); JPEG is within 4.
    image = splits.train.images[2 * PER_CLASS + 1].int()  # (3, 64, 64)
    top, bottom = image[:, 8, 32], image[:, 56, 32]
    assert (top - torch.tensor([80, 10, 200])).abs().max() <= 4
    assert (bottom - torch.tensor([200, 100, 40])).abs().max() <= 4

    # The grayscale file becomes three equal channels.
    gray = splits.test.images[2]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_registry_with_files_directly_in_data_dir(root: Path) -> None:
    splits = load_dataset("tiny-imagenet", root, download_ok=False)

    assert splits.source == str(root) and len(splits.test) == len(VAL)


def test_without_words_classes_are_wnids(root: Path) -> None:
    (root / "words.txt").unlink()

    splits = load_tiny_imagenet(root, download_ok=False, num_workers=0)

    assert splits.classes == SORTED


def test_other_sizes_are_resized_to_64(root: Path) -> None:
    path = root / "val" / "images" / "val_1.JPEG"
    Image.new("RGB", (96, 80), (0, 255, 0)).save(path, quality=95)

    splits = load_tiny_imagenet(root, download_ok=False, num_workers=0)

    assert splits.test.images.shape == (len(VAL), 3, 64, 64)
    assert (splits.test.images[1, 1].int() - 255).abs().max() <= 2


def test_missing_folder_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as caught:
        load_tiny_imagenet(tmp_path, download_ok=False)

    message = str(caught.value)
    assert "wnids.txt" in message and "val/val_annotations.txt" in message
    assert str(tmp_path / "tiny-imagenet-200") in message
    assert "tiny-imagenet-200.zip" in message


def test_missing_annotations_are_named(root: Path) -> None:
    (root / "val" / "val_annotations.txt").unlink()

    with pytest.raises(DatasetError) as caught:
        load_tiny_imagenet(root.parent, download_ok=False)

    assert f"missing in {root}: val/val_annotations.txt." in str(caught.value)


def test_missing_class_folder_is_named(root: Path) -> None:
    folder = root / "train" / "n02124075" / "images"
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()

    with pytest.raises(DatasetError, match="train/n02124075/images"):
        load_tiny_imagenet(root.parent, download_ok=False)


def test_missing_val_image_is_named(root: Path) -> None:
    (root / "val" / "images" / "val_3.JPEG").unlink()

    with pytest.raises(DatasetError, match="val/images/val_3.JPEG"):
        load_tiny_imagenet(root.parent, download_ok=False)


def test_unknown_wnid_in_annotations(root: Path) -> None:
    annotations = root / "val" / "val_annotations.txt"
    lines = annotations.read_text().splitlines()
    lines[1] = "val_1.JPEG\tn99999999\t0\t0\t63\t63"
    annotations.write_text("\n".join(lines))

    with pytest.raises(DatasetError, match=r"val_annotations\.txt line 2"):
        load_tiny_imagenet(root.parent, download_ok=False)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_jpeg_is_named(root: Path, num_workers: int) -> None:
    bad = root / "train" / "n01443537" / "images" / "n01443537_1.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")

    with pytest.raises(DatasetError, match=f"cannot read image {bad}"):
        load_tiny_imagenet(root.parent, download_ok=False, num_workers=num_workers)


def test_truncated_jpeg_is_named(root: Path) -> None:
    bad = root / "val" / "images" / "val_0.JPEG"
    bad.write_bytes(bad.read_bytes()[:300])

    with pytest.raises(DatasetError, match=f"cannot read image {bad}"):
        load_tiny_imagenet(root.parent, download_ok=False, num_workers=0)
