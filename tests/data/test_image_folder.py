"""Image-folder and ImageNet-100 loaders on small trees of PNG and JPEG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wmse.data import DatasetError
from wmse.data.image_folder import (
    IMAGENET_MEAN,
    decode_images,
    load_image_folder,
    load_imagenet100,
)


def random_pixels(seed: int, height: int, width: int) -> np.ndarray:
    """(height, width, 3) uint8."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def as_chw(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) array as a (3, H, W) tensor."""
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def write_png(path: Path, pixels: np.ndarray, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, np.ndarray]:
    """root/<class>/<image>.png, 16x16, classes written out of order."""
    written = {}
    for seed, relative in enumerate(
        ["dog/b.png", "dog/a.png", "cat/x.png", "cat/y.png", "cat/z.png", "eel/1.png"]
    ):
        pixels = random_pixels(seed, 16, 16)
        write_png(tmp_path / "root" / relative, pixels)
        written[relative] = pixels
    (tmp_path / "root" / "cat" / "notes.txt").write_text("not an image")
    return written


def test_labelled_tree(tmp_path: Path, tree: dict[str, np.ndarray]) -> None:
    dataset, classes = load_image_folder(tmp_path / "root", 16, num_workers=0)

    # Classes sorted; files sorted within each class; non-images skipped.
    assert classes == ["cat", "dog", "eel"]
    assert dataset.images.shape == (6, 3, 16, 16)
    assert dataset.images.dtype == torch.uint8
    assert dataset.labels is not None and dataset.labels.dtype == torch.int64
    assert dataset.labels.tolist() == [0, 0, 0, 1, 1, 2]

    # Lossless PNG at its own size: pixel-exact, (3, H, W).
    order = ["cat/x.png", "cat/y.png", "cat/z.png"]
    order += ["dog/a.png", "dog/b.png", "eel/1.png"]
    for index, relative in enumerate(order):
        assert torch.equal(dataset.images[index], as_chw(tree[relative]))
    assert dataset.images[3, 2, 4, 9] == tree["dog/a.png"][4, 9, 2]


def test_class_list_restricts_and_orders(
    tmp_path: Path, tree: dict[str, np.ndarray]
) -> None:
    dataset, classes = load_image_folder(
        tmp_path / "root", 16, class_list=["eel", "cat"], num_workers=0
    )

    assert classes == ["eel", "cat"]
    assert dataset.labels is not None and dataset.labels.tolist() == [0, 1, 1, 1]
    assert torch.equal(dataset.images[0], as_chw(tree["eel/1.png"]))


def test_missing_listed_class_is_named(
    tmp_path: Path, tree: dict[str, np.ndarray]
) -> None:
    with pytest.raises(DatasetError, match=r"1 of 2 listed class folders.*: owl\."):
        load_image_folder(tmp_path / "root", 16, class_list=["cat", "owl"])


def test_unlabelled_flat_folder(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    written = {name: random_pixels(seed, 12, 12) for seed, name in enumerate("cab")}
    for name, pixels in written.items():
        write_png(flat / f"{name}.png", pixels)

    dataset, classes = load_image_folder(flat, 12, labelled=False, num_workers=0)

    assert dataset.labels is None and classes == []
    expected = torch.stack([as_chw(written[name]) for name in "abc"])
    assert torch.equal(dataset.images, expected)


def test_labelled_flat_folder_is_rejected(tmp_path: Path) -> None:
    write_png(tmp_path / "flat" / "a.png", random_pixels(0, 8, 8))

    with pytest.raises(DatasetError, match="no class sub-folders.*labelled=False"):
        load_image_folder(tmp_path / "flat", 8, num_workers=0)


def test_resize_shorter_side_then_centre_crop(tmp_path: Path) -> None:
    # 20 rows x 40 columns: the shorter side is already 20, so only the crop acts.
    wide = random_pixels(1, 20, 40)
    write_png(tmp_path / "wide" / "a" / "wide.png", wide)
    dataset, _ = load_image_folder(tmp_path / "wide", 20, num_workers=0)
    assert torch.equal(dataset.images[0], as_chw(wide[:, 10:30]))

    # 64 rows x 32 columns to 16: resize to 32 x 16 (PIL bilinear), keep rows 8-23.
    tall = random_pixels(2, 64, 32)
    write_png(tmp_path / "tall" / "a" / "tall.png", tall)
    dataset, _ = load_image_folder(tmp_path / "tall", 16, num_workers=0)
    reference = Image.fromarray(tall).resize((16, 32), Image.Resampling.BILINEAR)
    expected = np.asarray(reference)[8:24]
    assert dataset.images.shape == (1, 3, 16, 16)
    assert torch.equal(dataset.images[0], as_chw(expected))


def test_grey_and_palette_images_become_rgb(tmp_path: Path) -> None:
    pixels = random_pixels(3, 8, 8)
    write_png(tmp_path / "root" / "a" / "grey.png", pixels, mode="L")
    write_png(tmp_path / "root" / "a" / "palette.png", pixels, mode="P")
    write_png(tmp_path / "root" / "a" / "rgba.png", pixels, mode="RGBA")

    dataset, _ = load_image_folder(tmp_path / "root", 8, num_workers=0)

    grey = np.array(Image.fromarray(pixels).convert("L"))
    assert dataset.images.shape == (3, 3, 8, 8)
    assert torch.equal(dataset.images[0], torch.from_numpy(grey).expand(3, 8, 8))
    assert torch.equal(dataset.images[2], as_chw(pixels))  # RGBA: alpha dropped


@pytest.mark.parametrize("num_workers", [0, 2])
def test_unreadable_image_is_named(
    tmp_path: Path, tree: dict[str, np.ndarray], num_workers: int
) -> None:
    bad = tmp_path / "root" / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")

    with pytest.raises(DatasetError, match=f"cannot read image {bad}"):
        load_image_folder(tmp_path / "root", 16, num_workers=num_workers)


def test_workers_give_the_same_images(
    tmp_path: Path, tree: dict[str, np.ndarray]
) -> None:
    in_process, _ = load_image_folder(tmp_path / "root", 10, num_workers=0)
    in_workers, _ = load_image_folder(tmp_path / "root", 10, num_workers=2)

    assert torch.equal(in_process.images, in_workers.images)


def test_missing_or_empty_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=f"image folder {tmp_path / 'nope'} does"):
        load_image_folder(tmp_path / "nope", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        load_image_folder(tmp_path / "empty", 8, labelled=False)


def test_decode_images_of_no_paths() -> None:
    assert decode_images([], 8).shape == (0, 3, 8, 8)


def write_imagenet(root: Path) -> None:
    """train/ and val/ with three wnids; the class list names two."""
    for split, count in [("train", 3), ("val", 2)]:
        for wnid in ["n01", "n02", "n03"]:
            for index in range(count):
                pixels = np.full((24, 32, 3), int(wnid[-1]) * 50 + index, np.uint8)
                path = root / split / wnid / f"{wnid}_{index}.JPEG"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path, quality=100)
    (root / "classes.txt").write_text("# ImageNet-100 subset\nn03\nn01\n\n")


def test_imagenet100(tmp_path: Path) -> None:
    write_imagenet(tmp_path)

    splits = load_imagenet100(
        tmp_path, tmp_path / "classes.txt", image_size=16, num_workers=0
    )

    assert splits.classes == ["n03", "n01"]
    assert splits.train.images.shape == (6, 3, 16, 16)
    assert splits.test.images.shape == (4, 3, 16, 16)
    assert splits.pretrain is splits.train
    assert splits.train.labels is not None and splits.test.labels is not None
    assert splits.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert splits.test.labels.tolist() == [0, 0, 1, 1]
    assert splits.mean == IMAGENET_MEAN

    # Flat colours survive JPEG and resizing to within 2.
    assert (splits.train.images[0].int() - 150).abs().max() <= 2
    assert (splits.test.images[3].int() - 51).abs().max() <= 2


def test_imagenet100_missing_val(tmp_path: Path) -> None:
    write_imagenet(tmp_path)
    (tmp_path / "val").rename(tmp_path / "validation")

    with pytest.raises(DatasetError, match=f"folders val missing in {tmp_path}"):
        load_imagenet100(tmp_path, tmp_path / "classes.txt", image_size=16)


def test_imagenet100_missing_class_list(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read class list .*nope.txt"):
        load_imagenet100(tmp_path, tmp_path / "nope.txt")
