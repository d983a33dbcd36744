"""STL-10 loader on small files written in the official stl10_binary format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from wmse.data import DatasetError, load_dataset, stl10
from wmse.data.stl10 import load_stl10

CLASSES = [
    "airplane", "bird", "car", "cat", "deer",
    "dog", "horse", "monkey", "ship", "truck",
]  # fmt: skip

COUNTS = {"unlabeled": 5, "train": 4, "test": 3}


def write_images(path: Path, images: np.ndarray) -> None:
    """Write (N, 3, 96, 96) images indexed (n, c, y, x) column-major, as Matlab did."""
    path.write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())


def write_stl10(folder: Path) -> dict[str, np.ndarray]:
    """Write the six stl10_binary files; returns images (n, c, y, x) and labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = {}
    for split, count in COUNTS.items():
        images = rng.integers(0, 256, (count, 3, 96, 96), dtype=np.uint8)
        write_images(folder / f"{split}_X.bin", images)
        written[f"{split}_X"] = images
        if split != "unlabeled":
            labels = (np.arange(count, dtype=np.uint8) * 3 + len(split)) % 10 + 1
            (folder / f"{split}_y.bin").write_bytes(labels.tobytes())
            written[f"{split}_y"] = labels
    (folder / "class_names.txt").write_text("\n".join(CLASSES) + "\n")
    return written


def test_native_size_is_pixel_exact(tmp_path: Path) -> None:
    written = write_stl10(tmp_path / "stl10_binary")

    splits = load_stl10(tmp_path, download_ok=False, image_size=96)

    # Shapes: pretrain = 5 unlabelled + 4 train, no labels.
    assert splits.pretrain.images.shape == (9, 3, 96, 96)
    assert splits.pretrain.images.dtype == torch.uint8
    assert splits.pretrain.labels is None
    assert splits.train.images.shape == (4, 3, 96, 96)
    assert splits.test.images.shape == (3, 3, 96, 96)
    assert splits.classes == CLASSES

    # Pixel (c, y, x) of image n is byte n * 27648 + c * 9216 + x * 96 + y.
    raw = np.fromfile(tmp_path / "stl10_binary" / "test_X.bin", dtype=np.uint8)
    for n, c, y, x in [(0, 0, 0, 1), (1, 2, 10, 50), (2, 1, 95, 3), (2, 0, 4, 95)]:
        offset = n * 27648 + c * 9216 + x * 96 + y
        assert splits.test.images[n, c, y, x] == raw[offset]

    # Every value; pretrain is unlabelled then train, and train is its tail.
    expected = np.concatenate([written["unlabeled_X"], written["train_X"]])
    assert torch.equal(splits.pretrain.images, torch.from_numpy(expected))
    assert torch.equal(splits.train.images, torch.from_numpy(written["train_X"]))
    assert torch.equal(splits.test.images, torch.from_numpy(written["test_X"]))

    # Labels 1..10 become 0..9.
    assert splits.train.labels is not None and splits.test.labels is not None
    assert splits.train.labels.dtype == torch.int64
    assert splits.train.labels.tolist() == (written["train_y"] - 1).tolist()
    assert splits.test.labels.tolist() == (written["test_y"] - 1).tolist()


def test_orientation_of_a_marked_pixel(tmp_path: Path) -> None:
    written = write_stl10(tmp_path)
    images = written["test_X"]
    images[1] = 0
    images[1, 2, 7, 90] = 255  # blue, row 7, column 90
    write_images(tmp_path / "test_X.bin", images)

    splits = load_stl10(tmp_path, download_ok=False, image_size=96)

    assert splits.test.images[1].nonzero().tolist() == [[2, 7, 90]]


def test_resize_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = write_stl10(tmp_path)
    monkeypatch.setattr(stl10, "CHUNK", 2)  # 5 unlabelled images: chunks 2, 2, 1

    splits = load_stl10(tmp_path, download_ok=False)

    # Default 64px, equal to resizing all images at once.
    assert splits.pretrain.images.shape == (9, 3, 64, 64)
    assert splits.image_size == 64
    expected = np.concatenate([written["unlabeled_X"], written["train_X"]])
    resized = TF.resize(torch.from_numpy(expected), [64, 64], antialias=True)
    assert torch.equal(splits.pretrain.images, resized)


def test_resize_keeps_a_flat_colour(tmp_path: Path) -> None:
    written = write_stl10(tmp_path)
    images = written["test_X"]
    images[:, 0], images[:, 1], images[:, 2] = 10, 128, 250
    write_images(tmp_path / "test_X.bin", images)

    splits = load_stl10(tmp_path, download_ok=False, image_size=32)

    assert splits.test.images.shape == (3, 3, 32, 32)
    assert splits.test.images[:, 0].unique().tolist() == [10]
    assert splits.test.images[:, 1].unique().tolist() == [128]
    assert splits.test.images[:, 2].unique().tolist() == [250]


def test_registry_loads_at_64px(tmp_path: Path) -> None:
    write_stl10(tmp_path / "stl10_binary")

    splits = load_dataset("stl10", tmp_path, download_ok=False)

    assert splits.name == "stl10" and splits.image_size == 64


def test_missing_file_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "stl10_binary"
    write_stl10(folder)
    (folder / "unlabeled_X.bin").unlink()

    with pytest.raises(DatasetError) as caught:
        load_stl10(tmp_path, download_ok=False)

    message = str(caught.value)
    assert "unlabeled_X.bin" in message and str(folder) in message
    assert "train_X.bin" not in message
    assert "stl10_binary.tar.gz" in message


def test_truncated_image_file_is_named(tmp_path: Path) -> None:
    write_stl10(tmp_path)
    content = (tmp_path / "train_X.bin").read_bytes()
    (tmp_path / "train_X.bin").write_bytes(content[:-100])

    with pytest.raises(DatasetError, match=r"train_X\.bin.*not a multiple of 27648"):
        load_stl10(tmp_path, download_ok=False)


def test_label_count_mismatch_is_named(tmp_path: Path) -> None:
    write_stl10(tmp_path)
    (tmp_path / "test_y.bin").write_bytes(bytes([1, 2]))

    with pytest.raises(DatasetError, match=r"test_y\.bin holds 2 labels.*3 images"):
        load_stl10(tmp_path, download_ok=False)


def test_label_zero_is_rejected(tmp_path: Path) -> None:
    write_stl10(tmp_path)
    (tmp_path / "train_y.bin").write_bytes(bytes([1, 0, 10, 2]))

    with pytest.raises(DatasetError, match=r"train_y\.bin.*0\.\.10; expected 1\.\.10"):
        load_stl10(tmp_path, download_ok=False)


def test_bad_image_size_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="image_size must be a positive integer"):
        load_stl10(tmp_path, download_ok=False, image_size=0)
