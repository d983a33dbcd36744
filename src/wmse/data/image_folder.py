"""Folders of image files (ImageFolder layout or flat) decoded into uint8 tensors.

Decoding runs in DataLoader worker processes; each worker opens a file with PIL,
converts it to RGB, resizes the shorter side and centre-crops it to a square, and the
batches are copied into one preallocated (N, 3, S, S) uint8 tensor.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes
from torchvision.transforms.v2 import functional as TF

from wmse.data.base import DatasetError, DatasetSplits, ImageDataset, one_line

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DecodeFailure",
    "decode_images",
    "load_image_folder",
    "load_imagenet100",
]

logger = logging.getLogger(__name__)

# Pixel statistics of the ImageNet-1k training split, in [0, 1] units.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# Images decoded per DataLoader batch (64 at 224px: 9.6 MB).
DECODE_BATCH = 64


def default_workers() -> int:
    """Decoding workers: one per CPU core, at most 8."""
    return min(8, os.cpu_count() or 1)


@dataclass
class DecodeFailure:
    """A file that could not be decoded, passed back from a worker."""

    path: str
    reason: str


class _DecodeDataset(Dataset):
    """Decodes ``paths[i]`` to a uint8 (3, H, W) RGB tensor, or a DecodeFailure."""

    def __init__(self, paths: Sequence[str], image_size: int) -> None:
        self.paths = paths
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor | DecodeFailure:
        path = self.paths[index]
        try:
            # Open and force a full decode, so truncated files fail here.
            with Image.open(path) as stored:
                image = stored.convert("RGB")
        except Exception as error:  # noqa: BLE001 - any decoder error: unreadable
            return DecodeFailure(path, f"{type(error).__name__}: {one_line(error)}")

        # Shorter side to image_size, then the central square.
        image = TF.resize(image, [self.image_size], antialias=True)
        image = TF.center_crop(image, [self.image_size, self.image_size])
        return TF.pil_to_tensor(image)  # (3, H, W) uint8


def _collate(
    items: list[torch.Tensor | DecodeFailure],
) -> tuple[np.ndarray | None, list[DecodeFailure]]:
    """Stack decoded images (B, 3, H, W); any failures are returned instead.

    NOTE: the batch leaves the worker as a numpy array, pickled through a pipe.
    A tensor would travel through /dev/shm, which containers often cap at 64 MB,
    and several workers' prefetched batches at 224px overflow that (bus error).
    """
    failures = [item for item in items if isinstance(item, DecodeFailure)]
    if failures:
        return None, failures
    return np.stack([item.numpy() for item in items]), []  # type: ignore[union-attr]


def decode_images(
    paths: Sequence[str | Path],
    image_size: int,
    num_workers: int | None = None,
) -> torch.Tensor:
    """Decode image files into one uint8 tensor, using DataLoader workers.

    Args:
        paths: Image files, in output order.
        image_size: Side S of the square output: the shorter side is resized to S
            (antialiased; an image already S x S is left untouched) and the centre
            cropped.
        num_workers: Decoding processes; 0 decodes in this process. Defaults to one
            per CPU core, at most 8.

    Returns:
        uint8 tensor of shape (N, 3, S, S), N = len(paths).

    Raises:
        DatasetError: naming the first file that cannot be decoded.
    """
    if image_size <= 0:
        raise DatasetError(f"image_size must be a positive integer, got {image_size}")
    paths = [str(path) for path in paths]
    workers = default_workers() if num_workers is None else num_workers
    loader = DataLoader(
        _DecodeDataset(paths, image_size),
        batch_size=DECODE_BATCH,
        num_workers=workers if paths else 0,
        collate_fn=_collate,
    )

    # Fill one preallocated tensor batch by batch, so peak memory is the output.
    output = torch.empty((len(paths), 3, image_size, image_size), dtype=torch.uint8)
    start = 0
    for batch, failures in loader:
        if failures:
            others = len(failures) - 1
            more = f" (and {others} more in this batch)" if others else ""
            raise DatasetError(
                f"cannot read image {failures[0].path}: {failures[0].reason}{more}. "
                "Replace or delete the file."
            )
        assert batch is not None
        output[start : start + len(batch)] = torch.from_numpy(batch)
        start += len(batch)
    return output


def _image_files(folder: Path) -> list[Path]:
    """Image files directly in or below ``folder``, sorted by relative path."""
    files = [
        path
        for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in IMG_EXTENSIONS
    ]
    return sorted(files, key=lambda path: path.relative_to(folder).as_posix())


def _folder_samples(
    root: Path, class_list: Sequence[str] | None
) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names and (path, label) pairs of an ImageFolder tree."""
    # Classes: the listed ones in the given order, else every sub-folder sorted.
    if class_list is None:
        try:
            classes, class_to_idx = find_classes(root)
        except FileNotFoundError as error:
            raise DatasetError(
                f"{root} holds no class sub-folders ({error}); expected "
                f"{root}/<class>/<image>, or pass labelled=False for a flat folder"
            ) from error
    else:
        classes = list(class_list)
        if len(set(classes)) != len(classes):
            raise DatasetError(f"class_list repeats a class: {classes}")
        missing = [name for name in classes if not (root / name).is_dir()]
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise DatasetError(
                f"{len(missing)} of {len(classes)} listed class folders are missing "
                f"in {root}: {shown}. Put each class's images in {root}/<class>/."
            )
        class_to_idx = {name: index for index, name in enumerate(classes)}

    # Samples, through torchvision's layout scan (sorted within each class).
    try:
        samples = ImageFolder.make_dataset(
            str(root), class_to_idx, extensions=IMG_EXTENSIONS
        )
    except FileNotFoundError as error:
        raise DatasetError(f"{root}: {error}") from error

    # make_dataset walks classes by name; order them by label (stable within one).
    samples.sort(key=lambda sample: sample[1])
    return classes, samples


def load_image_folder(
    root: Path,
    image_size: int,
    labelled: bool = True,
    class_list: Sequence[str] | None = None,
    num_workers: int | None = None,
) -> tuple[ImageDataset, list[str]]:
    """Decode a folder of images into memory as square RGB uint8 tensors.

    With ``labelled=True`` the layout is torchvision's ImageFolder,
    ``root/<class>/<image>``: labels index the sorted class folder names, or
    ``class_list`` in its given order when given (other folders are then ignored).
    With ``labelled=False`` every image below ``root`` is read, flat or nested, sorted
    by relative path, without labels (only the ``class_list`` folders when given).

    Args:
        root: The folder to read.
        image_size: Side S of the output: shorter side resized to S, centre cropped.
        labelled: Whether the sub-folders are classes whose labels are returned.
        class_list: Restrict to these class folders; labels follow this order.
        num_workers: Decoding processes (0: in this process); default one per CPU
            core, at most 8.

    Returns:
        The images (N, 3, S, S) uint8 with int64 labels (N,) or None, and the class
        names (index = label; empty when unlabelled without class_list).

    Raises:
        DatasetError: if ``root`` or a listed class folder is missing, holds no
            images, or an image cannot be decoded (the message names the file).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"image folder {root} does not exist; pass the folder that holds the images"
        )

    # Layout: (path, label) pairs from ImageFolder's scan, or every image file.
    if labelled or class_list is not None:
        classes, samples = _folder_samples(root, class_list)
        paths = [path for path, _ in samples]
        labels = torch.tensor([label for _, label in samples], dtype=torch.long)
    else:
        classes, paths, labels = [], [str(path) for path in _image_files(root)], None
    if not paths:
        raise DatasetError(
            f"no image files ({', '.join(IMG_EXTENSIONS)}) found in {root}; pass the "
            f"folder that holds the images"
        )

    # Decode in worker processes into one uint8 tensor.
    logger.info(
        "decoding %d images from %s at %dpx (%.2f GB as uint8)",
        len(paths),
        root,
        image_size,
        len(paths) * 3 * image_size**2 / 1e9,
    )
    images = decode_images(paths, image_size, num_workers)
    return ImageDataset(images, labels if labelled else None), classes


def read_class_list(path: Path) -> list[str]:
    """Class folder names listed one per line in ``path`` (blank lines and # skipped).

    Raises:
        DatasetError: if the file is missing or lists no class.
    """
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise DatasetError(f"cannot read class list {path}: {error}") from error
    names = [line.strip() for line in lines]
    names = [name for name in names if name and not name.startswith("#")]
    if not names:
        raise DatasetError(f"class list {path} lists no class (one wnid per line)")
    return names


def load_imagenet100(
    data_dir: Path,
    class_list_file: Path,
    image_size: int = 224,
    num_workers: int | None = None,
) -> DatasetSplits:
    """Load ImageNet-100: an ImageNet tree restricted to the listed classes.

    Reads ``data_dir/train/<wnid>/*`` and ``data_dir/val/<wnid>/*`` (the validation
    images sorted into class folders, as most tooling expects) for the wnids listed
    one per line in ``class_list_file``; labels follow the file's order.

    NOTE: everything is decoded into memory. The 100 classes hold about 131,700
    images (126,689 train + 5,000 val), which at 224px is 150,528 bytes each, about
    19.8 GB (18.5 GiB) of uint8; at 128px it is 6.5 GB, at 64px 1.6 GB. So 224px only
    fits on a large-memory machine: pass a smaller ``image_size``. Streaming from disk
    during training is not done here.

    Args:
        data_dir: ImageNet root holding ``train/`` and ``val/`` class folders.
        class_list_file: Text file with one wnid (e.g. n01558993) per line.
        image_size: Side of the square images (shorter side resized, centre crop).
        num_workers: Decoding processes; default one per CPU core, at most 8.

    Returns:
        Splits with pretrain = train (the train folders) and test = val; classes are
        the wnids; mean and std are the ImageNet-1k values.

    Raises:
        DatasetError: if a folder or listed class is missing or an image unreadable.
    """
    data_dir = Path(data_dir)
    wnids = read_class_list(class_list_file)

    # Both splits must exist before the long decode starts.
    missing = [name for name in ("train", "val") if not (data_dir / name).is_dir()]
    if missing:
        raise DatasetError(
            f"ImageNet folders {', '.join(missing)} missing in {data_dir}; expected "
            f"{data_dir}/train/<wnid>/*.JPEG and {data_dir}/val/<wnid>/*.JPEG (the "
            "validation images sorted into wnid folders)"
        )

    # Decode train and val.
    train, _ = load_image_folder(
        data_dir / "train", image_size, class_list=wnids, num_workers=num_workers
    )
    test, _ = load_image_folder(
        data_dir / "val", image_size, class_list=wnids, num_workers=num_workers
    )
    return DatasetSplits(
        name="imagenet100",
        pretrain=train,
        train=train,
        test=test,
        classes=wnids,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        source=str(data_dir),
        extra={"class_list": str(class_list_file)},
    )


def load_user_folder(
    data_dir: Path, image_size: int = 64, num_workers: int | None = None
) -> DatasetSplits:
    """A folder of the user's own images, with or without labels.

    - ``data_dir/train/<class>/...`` with ``data_dir/test/<class>/...`` (or ``val/``):
      labelled splits; training on train, evaluation on test.
    - anything else: every image below ``data_dir`` (flat or nested), unlabelled, for
      self-supervised training only; the run then skips the k-NN and linear evaluation.

    Returns:
        Splits with RGB images of ``image_size`` px and ImageNet mean and std.
    """
    data_dir = Path(data_dir)
    test_dir = next(
        (data_dir / n for n in ("test", "val") if (data_dir / n).is_dir()), None
    )
    if (data_dir / "train").is_dir() and test_dir is not None:
        train, classes = load_image_folder(
            data_dir / "train", image_size, True, None, num_workers
        )
        test, _ = load_image_folder(test_dir, image_size, True, classes, num_workers)
    else:
        train, classes = load_image_folder(
            data_dir, image_size, False, None, num_workers
        )
        test = None
    return DatasetSplits(
        name="folder",
        pretrain=train,
        train=train,
        test=test,
        classes=classes,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        source=str(data_dir),
    )
