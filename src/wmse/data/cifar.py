"""CIFAR-10 and CIFAR-100: 60,000 32x32 colour photos in 10 or 100 classes.

Both are read from the official "python version" archives, whose files are pickled
dicts: ``data`` is a (N, 3072) uint8 array, each row the 1024 red, then green, then
blue values of one image in row-major order, so it reshapes directly to (N, 3, 32, 32).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wmse.data.base import DatasetError, DatasetSplits, ImageDataset, one_line

__all__ = ["CIFAR10_FILES", "CIFAR100_FILES", "load_cifar10", "load_cifar100"]

logger = logging.getLogger(__name__)

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_TRAIN = [f"data_batch_{index}" for index in range(1, 6)]
CIFAR10_FILES = [*CIFAR10_TRAIN, "test_batch", "batches.meta"]

CIFAR100_FOLDER = "cifar-100-python"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_FILES = ["train", "test", "meta"]

# Pixel statistics of the training splits, in [0, 1] units.
# NOTE: the W-MSE authors' code normalises CIFAR-100 with the CIFAR-10 values; these
# are CIFAR-100's own, so runs differ from theirs by that (small) shift.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

IMAGE_SHAPE = (3, 32, 32)

# The only globals a CIFAR pickle needs: numpy array reconstruction (numpy 1 and 2
# module names, pickle protocols 2 to 5) and Python 3's encoding of bytes under
# protocol 2. Anything else is refused instead of executed.
SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only SAFE_GLOBALS (the batches hold arrays and lists)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in SAFE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}; CIFAR pickles hold only arrays, "
                "lists and strings"
            )
        # numpy 2 renamed numpy.core to numpy._core; avoid its deprecation shim.
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = module.replace("numpy.core", "numpy._core", 1)
        return super().find_class(module, name)


# The end of every message about a damaged file.
REPLACE = "replace it by extracting the dataset's archive again"


def read_pickle(path: Path) -> dict[str, Any]:
    """Read one CIFAR pickle into a dict with str keys.

    The official files were written by Python 2; bytes keys and strings are decoded
    as latin-1, the way torchvision reads them.

    Raises:
        DatasetError: if the file is unreadable, not a pickle, or not a dict.
    """
    try:
        with open(path, "rb") as handle:
            content = _SafeUnpickler(handle, encoding="latin1").load()
    except Exception as error:
        raise DatasetError(
            f"cannot read {path} as a CIFAR pickle ({type(error).__name__}: "
            f"{one_line(error)}); the file is corrupt or not from the python version "
            f"of the dataset, {REPLACE}"
        ) from error
    if not isinstance(content, dict):
        raise DatasetError(
            f"{path} holds a {type(content).__name__}, not a dict; {REPLACE}"
        )
    return {_text(key): value for key, value in content.items()}


def _text(value: str | bytes) -> str:
    """``value`` as str (Python 2 strings may arrive as bytes)."""
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _field(batch: dict[str, Any], key: str, path: Path) -> Any:
    """``batch[key]``, or a DatasetError naming the file and the keys it has."""
    if key not in batch:
        raise DatasetError(
            f"{path} has no {key!r} entry (it has {sorted(batch)}); {REPLACE}"
        )
    return batch[key]


def read_batch(
    path: Path, label_key: str, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read the images (N, 3, 32, 32) uint8 and labels (N,) int64 of one batch file.

    Raises:
        DatasetError: if the data or labels have the wrong shape, type or range.
    """
    batch = read_pickle(path)
    data = np.asarray(_field(batch, "data", path))
    labels = np.asarray(_field(batch, label_key, path))

    # Each row: 1024 red, 1024 green, 1024 blue values, row-major within a channel.
    row_size = int(np.prod(IMAGE_SHAPE))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row_size:
        raise DatasetError(
            f"{path}: 'data' is {data.dtype} of shape {data.shape}; expected uint8 of "
            f"shape (N, 3072); {REPLACE}"
        )
    images = torch.from_numpy(data.reshape(-1, *IMAGE_SHAPE).copy())  # (N, 3, 32, 32)

    # Labels: N integers in [0, num_classes).
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(
            f"{path}: {label_key!r} is {labels.dtype} of shape {labels.shape}; "
            f"expected {len(data)} integers; {REPLACE}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(
            f"{path}: {label_key!r} holds labels {labels.min()}..{labels.max()}; "
            f"expected 0..{num_classes - 1}; {REPLACE}"
        )
    return images, torch.from_numpy(labels.astype(np.int64))


def read_names(path: Path, key: str, num_classes: int) -> list[str]:
    """The class names stored under ``key`` in a meta file."""
    names = [_text(name) for name in _field(read_pickle(path), key, path)]
    if len(names) != num_classes:
        raise DatasetError(
            f"{path}: {key!r} lists {len(names)} names, not {num_classes}; {REPLACE}"
        )
    return names


def locate(
    data_dir: Path | None, folder_name: str, files: list[str]
) -> tuple[Path | None, Path, list[str]]:
    """Find the folder holding ``files``: ``data_dir`` or ``data_dir/folder_name``.

    Returns:
        The complete folder (or None), the folder that came closest (the one to report
        in an error), and the files that folder lacks.
    """
    if data_dir is None:
        return None, Path(folder_name), list(files)
    candidates = [data_dir / folder_name, data_dir]
    missing = [[name for name in files if not (c / name).is_file()] for c in candidates]
    best = min(range(len(candidates)), key=lambda index: len(missing[index]))
    complete = candidates[best] if not missing[best] else None
    return complete, candidates[best], missing[best]


def find_or_download(
    title: str,
    data_dir: Path | None,
    download_ok: bool,
    folder_name: str,
    files: list[str],
    url: str,
    dataset_class: str,
) -> Path:
    """The folder holding all ``files``, downloading through torchvision if allowed.

    Raises:
        DatasetError: listing the missing files and where to put them.
    """
    folder, closest, missing = locate(data_dir, folder_name, files)
    if folder is not None:
        return folder
    where = (
        f"{data_dir / folder_name} (or directly in {data_dir})"
        if data_dir is not None
        else f"<--data-dir>/{folder_name}"
    )
    remedy = (
        f"Download and extract {url} into {data_dir or '--data-dir'} so the files are "
        f"in {where}"
    )
    if data_dir is None:
        what = f"{title} needs --data-dir (the folder to read it from, or to download into)."
    else:
        what = f"{title} files missing in {closest}: {', '.join(missing)}."

    # No local copy: download when allowed (the archive extracts to folder_name).
    if not download_ok or data_dir is None:
        allow = "; or allow downloads" if data_dir is not None else ""
        raise DatasetError(f"{what} {remedy}{allow}.")
    logger.info("%s not found locally; downloading to %s", title, data_dir)
    try:
        import torchvision.datasets

        getattr(torchvision.datasets, dataset_class)(
            str(data_dir), train=False, download=True
        )
    except Exception as error:
        raise DatasetError(
            f"{what} The download failed ({one_line(error)}). {remedy}."
        ) from error
    folder, closest, missing = locate(data_dir, folder_name, files)
    if folder is None:
        raise DatasetError(f"after downloading, still missing in {closest}: {missing}")
    return folder


def load_cifar10(
    data_dir: Path | None = None, download_ok: bool = True
) -> DatasetSplits:
    """Load CIFAR-10 into memory from the official python pickle batches.

    Looks for data_batch_1..5, test_batch and batches.meta in
    ``data_dir/cifar-10-batches-py`` then ``data_dir``; if they are missing and
    ``download_ok``, downloads them there through torchvision.

    Args:
        data_dir: Folder holding the files or the extracted cifar-10-batches-py.
        download_ok: Whether to download (163 MB) when the files are missing.

    Returns:
        Splits with pretrain = train = 50,000 images (3, 32, 32), test = 10,000.

    Raises:
        DatasetError: listing missing files and where to put them, or naming a
            corrupt file.
    """
    folder = find_or_download(
        "CIFAR-10",
        data_dir,
        download_ok,
        CIFAR10_FOLDER,
        CIFAR10_FILES,
        CIFAR10_URL,
        "CIFAR10",
    )
    logger.info("reading CIFAR-10 from %s", folder)

    # Five training batches of 10,000, concatenated in order.
    batches = [read_batch(folder / name, "labels", 10) for name in CIFAR10_TRAIN]
    train = ImageDataset(
        torch.cat([images for images, _ in batches]),
        torch.cat([labels for _, labels in batches]),
    )
    test = ImageDataset(*read_batch(folder / "test_batch", "labels", 10))
    classes = read_names(folder / "batches.meta", "label_names", 10)
    return DatasetSplits(
        name="cifar10",
        pretrain=train,
        train=train,
        test=test,
        classes=classes,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        source=str(folder),
    )


def load_cifar100(
    data_dir: Path | None = None, download_ok: bool = True
) -> DatasetSplits:
    """Load CIFAR-100 (fine labels) into memory from the official python pickles.

    Looks for train, test and meta in ``data_dir/cifar-100-python`` then ``data_dir``;
    if they are missing and ``download_ok``, downloads them there through torchvision.

    Args:
        data_dir: Folder holding the files or the extracted cifar-100-python.
        download_ok: Whether to download (161 MB) when the files are missing.

    Returns:
        Splits with pretrain = train = 50,000 images (3, 32, 32), test = 10,000, and
        the 100 fine labels and class names (the 20 coarse ones are not used).

    Raises:
        DatasetError: listing missing files and where to put them, or naming a
            corrupt file.
    """
    folder = find_or_download(
        "CIFAR-100",
        data_dir,
        download_ok,
        CIFAR100_FOLDER,
        CIFAR100_FILES,
        CIFAR100_URL,
        "CIFAR100",
    )
    logger.info("reading CIFAR-100 from %s", folder)

    train = ImageDataset(*read_batch(folder / "train", "fine_labels", 100))
    test = ImageDataset(*read_batch(folder / "test", "fine_labels", 100))
    classes = read_names(folder / "meta", "fine_label_names", 100)
    return DatasetSplits(
        name="cifar100",
        pretrain=train,
        train=train,
        test=test,
        classes=classes,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        source=str(folder),
    )
