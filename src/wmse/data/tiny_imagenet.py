"""Tiny ImageNet: 110,000 64x64 colour photos in 200 ImageNet classes.

Read from the extracted tiny-imagenet-200.zip: 500 training JPEGs per class in
``train/<wnid>/images/``, and 10,000 validation JPEGs in ``val/images/`` labelled by
``val/val_annotations.txt``. The official test split has no labels, so the
validation split serves as the test split, as in the W-MSE paper.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from wmse.data.base import DatasetError, DatasetSplits, ImageDataset
from wmse.data.image_folder import decode_images

__all__ = ["FOLDER", "IMAGE_SIZE", "load_tiny_imagenet"]

logger = logging.getLogger(__name__)

FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
IMAGE_SIZE = 64
JPEG_SUFFIXES = (".jpeg", ".jpg")

# Pixel statistics used by the W-MSE authors' code, in [0, 1] units.
MEAN, STD = (0.480, 0.448, 0.398), (0.277, 0.269, 0.282)

# At most this many missing names are spelled out in an error message.
SHOWN = 10


def _listing(names: list[str]) -> str:
    """``names`` joined by commas, cut after SHOWN with a count of the rest."""
    rest = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + rest


def _missing_error(root: Path | None, missing: list[str]) -> DatasetError:
    """The error for files absent from ``root``, saying where they should come from."""
    where = root if root is not None else Path("<--data-dir>") / FOLDER
    data_dir = where.parent if where.name == FOLDER else where
    return DatasetError(
        f"Tiny ImageNet files missing in {where}: {_listing(missing)}. torchvision "
        f"cannot download it; fetch {URL} and unzip it in {data_dir}, so that "
        f"{data_dir / FOLDER / 'wnids.txt'} exists."
    )


def find_root(data_dir: Path | None) -> Path:
    """The tiny-imagenet-200 folder: ``data_dir/tiny-imagenet-200`` or ``data_dir``.

    Raises:
        DatasetError: naming the top-level files and folders that are missing.
    """
    required = ["wnids.txt", "train", "val/images", "val/val_annotations.txt"]
    if data_dir is None:
        raise _missing_error(None, required)
    candidates = [data_dir / FOLDER, data_dir]
    missing = [
        [name for name in required if not (folder / name).exists()]
        for folder in candidates
    ]
    best = min(range(len(candidates)), key=lambda index: len(missing[index]))
    if missing[best]:
        raise _missing_error(candidates[best], missing[best])
    return candidates[best]


def read_wnids(root: Path) -> list[str]:
    """The class wnids of wnids.txt, sorted (labels index this list, as ImageFolder)."""
    wnids = [line.strip() for line in (root / "wnids.txt").read_text().splitlines()]
    wnids = [wnid for wnid in wnids if wnid]
    if not wnids or len(set(wnids)) != len(wnids):
        raise DatasetError(
            f"{root / 'wnids.txt'} must list distinct wnids, one a line; unzip {URL} "
            f"again to replace it"
        )
    return sorted(wnids)


def read_class_names(root: Path, wnids: list[str]) -> list[str]:
    """A readable name per wnid: the first synonym in words.txt, else the wnid."""
    words_path = root / "words.txt"
    if not words_path.is_file():
        logger.info("%s not found; class names are wnids", words_path)
        return list(wnids)

    # words.txt: "<wnid>\t<synonym>, <synonym>, ..." for every ImageNet wnid.
    names = {}
    for line in words_path.read_text().splitlines():
        wnid, _, words = line.partition("\t")
        names[wnid.strip()] = words.split(",")[0].strip()
    return [names.get(wnid) or wnid for wnid in wnids]


def train_samples(root: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    """Training JPEGs (sorted by name within each class, classes in label order).

    Raises:
        DatasetError: naming class folders that are missing or hold no JPEG.
    """
    paths, labels, missing, empty = [], [], [], []
    for label, wnid in enumerate(wnids):
        folder = root / "train" / wnid / "images"
        if not folder.is_dir():
            missing.append(f"train/{wnid}/images")
            continue
        files = sorted(
            path for path in folder.iterdir() if path.suffix.lower() in JPEG_SUFFIXES
        )
        if not files:
            empty.append(f"train/{wnid}/images")
        paths += files
        labels += [label] * len(files)
    if missing:
        raise _missing_error(root, missing)
    if empty:
        raise DatasetError(
            f"Tiny ImageNet class folders without JPEGs in {root}: {_listing(empty)}; "
            "the archive was extracted incompletely, unzip it again"
        )
    return paths, labels


def val_samples(root: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    """Validation JPEGs and labels, in the order of val_annotations.txt.

    Raises:
        DatasetError: for a malformed line, an unknown wnid or a missing image.
    """
    annotations = root / "val" / "val_annotations.txt"
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    paths, labels = [], []

    # Each line: file name, wnid, then the bounding box, tab-separated.
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1].strip() not in label_of:
            raise DatasetError(
                f"{annotations} line {number} ({line!r}) does not start with an "
                f"image file name and a wnid from wnids.txt, tab-separated; unzip "
                f"{URL} again to replace it"
            )
        paths.append(root / "val" / "images" / fields[0].strip())
        labels.append(label_of[fields[1].strip()])

    # Every annotated image must exist.
    missing = [f"val/images/{path.name}" for path in paths if not path.is_file()]
    if missing:
        raise _missing_error(root, missing)
    if not paths:
        raise DatasetError(
            f"{annotations} lists no image; unzip {URL} again to replace it"
        )
    return paths, labels


def load_tiny_imagenet(
    data_dir: Path | None = None,
    download_ok: bool = True,
    num_workers: int | None = None,
) -> DatasetSplits:
    """Load Tiny ImageNet into memory.

    Looks for the extracted tiny-imagenet-200 folder in ``data_dir`` (or for its
    contents directly in ``data_dir``). Every image is decoded with PIL to RGB (a few
    are stored grayscale); any image not 64x64 is resized and centre-cropped to it.

    Args:
        data_dir: Folder holding tiny-imagenet-200/ or its contents.
        download_ok: Unused: torchvision has no download for Tiny ImageNet, so the
            missing-files error says where to get it.
        num_workers: Decoding processes; default one per CPU core, at most 8.

    Returns:
        Splits with pretrain = train = 100,000 images (3, 64, 64), test = the 10,000
        validation images; labels index the sorted wnids (ImageFolder's order), and
        class names are the first synonym of each wnid in words.txt (the wnid itself
        when words.txt is absent). 1.35 GB of uint8 in all.

    Raises:
        DatasetError: naming missing files and where to get them, a malformed
            annotation line, or an unreadable image.
    """
    del download_ok  # no public download through torchvision
    root = find_root(data_dir)
    logger.info("reading Tiny ImageNet from %s", root)

    # Classes and the file lists of both splits, checked before decoding starts.
    wnids = read_wnids(root)
    classes = read_class_names(root, wnids)
    train_paths, train_labels = train_samples(root, wnids)
    val_paths, val_labels = val_samples(root, wnids)

    # Decode both splits to (N, 3, 64, 64) uint8.
    train = ImageDataset(
        decode_images(train_paths, IMAGE_SIZE, num_workers),
        torch.tensor(train_labels, dtype=torch.long),
    )
    test = ImageDataset(
        decode_images(val_paths, IMAGE_SIZE, num_workers),
        torch.tensor(val_labels, dtype=torch.long),
    )
    return DatasetSplits(
        name="tiny-imagenet",
        pretrain=train,
        train=train,
        test=test,
        classes=classes,
        mean=MEAN,
        std=STD,
        source=str(root),
    )
