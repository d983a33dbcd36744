"""STL-10: 96x96 colour photos, 100,000 unlabelled and 13,000 labelled in 10 classes.

Read from the official binary archive (stl10_binary/): each ``*_X.bin`` is raw uint8,
one image after another, each stored channel by channel in column-major order (Matlab
layout), so a (N, 3, 96, 96) view needs its last two axes swapped; each ``*_y.bin``
holds one byte per image, the label 1..10.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from wmse.data.base import DatasetError, DatasetSplits, ImageDataset, one_line

__all__ = ["FILES", "NATIVE_SIZE", "load_stl10"]

logger = logging.getLogger(__name__)

FOLDER = "stl10_binary"
URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
FILES = [
    "train_X.bin",
    "train_y.bin",
    "test_X.bin",
    "test_y.bin",
    "unlabeled_X.bin",
    "class_names.txt",
]

NATIVE_SIZE = 96
IMAGE_BYTES = 3 * NATIVE_SIZE * NATIVE_SIZE
NUM_CLASSES = 10

# Images resized per step: 2,048 at 96px is 57 MB of input.
CHUNK = 2048

# The end of every message about a damaged file.
REPLACE = f"replace it by extracting {URL} again"

# Pixel statistics (at 96px) used by the W-MSE authors' code, in [0, 1] units.
MEAN, STD = (0.43, 0.42, 0.39), (0.27, 0.26, 0.27)


def count_images(path: Path) -> int:
    """The number of 3x96x96 images in an ``*_X.bin`` file, from its size.

    Raises:
        DatasetError: if the size is not a whole number of images.
    """
    size = path.stat().st_size
    if size % IMAGE_BYTES:
        raise DatasetError(
            f"{path} holds {size} bytes, not a multiple of {IMAGE_BYTES} (one 3x96x96 "
            f"image); the file is truncated or not from {FOLDER}, {REPLACE}"
        )
    return size // IMAGE_BYTES


def read_images_into(path: Path, output: torch.Tensor) -> None:
    """Read every image of ``path`` into ``output``, resized to its size.

    The file is memory-mapped and converted ``CHUNK`` images at a time, so the
    100,000-image unlabelled file (2.8 GB) never sits in memory whole.

    Args:
        path: An ``*_X.bin`` file.
        output: uint8 tensor (N, 3, S, S) with N = the file's image count.
    """
    count, side = output.shape[0], output.shape[-1]
    if count == 0:
        return
    stored = np.memmap(path, dtype=np.uint8, mode="r", shape=(count, IMAGE_BYTES))

    for start in range(0, count, CHUNK):
        # Column-major storage: the last two axes are (x, y); swap them to (y, x).
        rows = stored[start : start + CHUNK]
        chunk = rows.reshape(-1, 3, NATIVE_SIZE, NATIVE_SIZE).transpose(0, 1, 3, 2)
        images = torch.from_numpy(np.ascontiguousarray(chunk))  # (B, 3, 96, 96)

        # Resize (antialiased bilinear, as torchvision does for uint8) if asked.
        if side != NATIVE_SIZE:
            images = TF.resize(images, [side, side], antialias=True)  # (B, 3, S, S)
        output[start : start + len(images)] = images
    del stored


def read_labels(path: Path, count: int) -> torch.Tensor:
    """Labels (count,) int64 in 0..9 from a ``*_y.bin`` file of bytes 1..10.

    Raises:
        DatasetError: if the count or the range is wrong.
    """
    labels = np.fromfile(path, dtype=np.uint8)
    if len(labels) != count:
        raise DatasetError(
            f"{path} holds {len(labels)} labels but its image file holds {count} "
            f"images; {REPLACE}"
        )
    if count and (labels.min() < 1 or labels.max() > NUM_CLASSES):
        raise DatasetError(
            f"{path} holds labels {labels.min()}..{labels.max()}; expected 1..10, "
            f"{REPLACE}"
        )
    return torch.from_numpy(labels.astype(np.int64) - 1)


def read_class_names(path: Path) -> list[str]:
    """The ten class names, one per line of class_names.txt."""
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(names) != NUM_CLASSES:
        raise DatasetError(
            f"{path} lists {len(names)} class names, not {NUM_CLASSES}; {REPLACE}"
        )
    return names


def locate(data_dir: Path | None) -> tuple[Path | None, Path, list[str]]:
    """The folder with every file (``data_dir/stl10_binary`` or ``data_dir``), or None.

    Returns:
        The complete folder or None, the closest folder, and the files it lacks.
    """
    if data_dir is None:
        return None, Path(FOLDER), list(FILES)
    candidates = [data_dir / FOLDER, data_dir]
    missing = [[name for name in FILES if not (c / name).is_file()] for c in candidates]
    best = min(range(len(candidates)), key=lambda index: len(missing[index]))
    complete = candidates[best] if not missing[best] else None
    return complete, candidates[best], missing[best]


def find_or_download(data_dir: Path | None, download_ok: bool) -> Path:
    """The folder holding all FILES, downloading through torchvision if allowed.

    Raises:
        DatasetError: listing the missing files and where to put them.
    """
    folder, closest, missing = locate(data_dir)
    if folder is not None:
        return folder
    target = data_dir / FOLDER if data_dir is not None else f"<--data-dir>/{FOLDER}"
    if data_dir is None:
        what = (
            "STL-10 needs --data-dir (the folder to read it from, or to download into)."
        )
    else:
        what = f"STL-10 files missing in {closest}: {', '.join(missing)}."
    remedy = f"Download and extract {URL} (2.6 GB) so the files are in {target}"

    # No local copy: download when allowed (the archive extracts to stl10_binary/).
    if not download_ok or data_dir is None:
        allow = "; or allow downloads" if data_dir is not None else ""
        raise DatasetError(f"{what} {remedy}{allow}.")
    logger.info("STL-10 not found locally; downloading 2.6 GB to %s", data_dir)
    try:
        from torchvision.datasets import STL10

        # split="test" so that only the small test split is read after the download.
        STL10(str(data_dir), split="test", download=True)
    except Exception as error:
        raise DatasetError(
            f"{what} The download failed ({one_line(error)}). {remedy}."
        ) from error
    folder, closest, missing = locate(data_dir)
    if folder is None:
        raise DatasetError(f"after downloading, still missing in {closest}: {missing}")
    return folder


def load_stl10(
    data_dir: Path | None = None, download_ok: bool = True, image_size: int = 64
) -> DatasetSplits:
    """Load STL-10 into memory, resized to ``image_size``.

    Looks for the stl10_binary files in ``data_dir/stl10_binary`` then ``data_dir``;
    if they are missing and ``download_ok``, downloads them there through torchvision.

    NOTE: every split is resized to ``image_size`` up front (the paper trains at 64px).
    The authors' code instead evaluates on a 70px resize centre-cropped to 64, so
    k-NN and linear accuracies at 64px can differ slightly from theirs.

    Args:
        data_dir: Folder holding the files or the extracted stl10_binary.
        download_ok: Whether to download (2.6 GB) when the files are missing.
        image_size: Side of the square images; 96 keeps the stored pixels.

    Returns:
        Splits with pretrain = the 100,000 unlabelled then the 5,000 train images
        (no labels), train = those 5,000 (a view sharing pretrain's memory), test =
        8,000; images (3, S, S) with S = image_size.
        At 64px this is 1.4 GB of uint8, at 96px 3.1 GB.

    Raises:
        DatasetError: listing missing files and where to put them, or naming a
            truncated or corrupt file.
    """
    if image_size <= 0:
        raise DatasetError(f"image_size must be a positive integer, got {image_size}")
    folder = find_or_download(data_dir, download_ok)
    logger.info("reading STL-10 from %s at %dpx", folder, image_size)

    # Sizes first, so a truncated file fails before the long read.
    num_unlabeled = count_images(folder / "unlabeled_X.bin")
    num_train = count_images(folder / "train_X.bin")
    num_test = count_images(folder / "test_X.bin")
    train_labels = read_labels(folder / "train_y.bin", num_train)
    test_labels = read_labels(folder / "test_y.bin", num_test)
    classes = read_class_names(folder / "class_names.txt")

    # Pretrain = unlabelled then train, filled in place; train is a view of its tail.
    shape = (3, image_size, image_size)
    pretrain_images = torch.empty(
        (num_unlabeled + num_train, *shape), dtype=torch.uint8
    )
    read_images_into(folder / "unlabeled_X.bin", pretrain_images[:num_unlabeled])
    read_images_into(folder / "train_X.bin", pretrain_images[num_unlabeled:])
    pretrain = ImageDataset(pretrain_images)
    train = ImageDataset(pretrain_images[num_unlabeled:], train_labels)

    # Test split.
    test_images = torch.empty((num_test, *shape), dtype=torch.uint8)
    read_images_into(folder / "test_X.bin", test_images)
    test = ImageDataset(test_images, test_labels)
    return DatasetSplits(
        name="stl10",
        pretrain=pretrain,
        train=train,
        test=test,
        classes=classes,
        mean=MEAN,
        std=STD,
        source=str(folder),
        extra={"image_size": str(image_size)},
    )
