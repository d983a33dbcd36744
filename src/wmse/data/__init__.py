"""Datasets as in-memory uint8 tensors, and the registry that loads them by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from wmse.data.base import DatasetError, DatasetSplits, ImageDataset
from wmse.data.cifar import load_cifar10, load_cifar100
from wmse.data.fashion_mnist import load_fashion_mnist
from wmse.data.image_folder import load_imagenet100, load_user_folder
from wmse.data.stl10 import load_stl10
from wmse.data.synthetic import load_synthetic_cifar
from wmse.data.tiny_imagenet import load_tiny_imagenet

__all__ = ["DATASETS", "DatasetError", "DatasetSplits", "ImageDataset", "load_dataset"]

# name -> loader(data_dir, download_ok) -> DatasetSplits
DATASETS: dict[str, Callable[[Path | None, bool], DatasetSplits]] = {
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "stl10": load_stl10,  # resized to 64px, as in the paper
    "tiny-imagenet": load_tiny_imagenet,
    # Noise shaped like CIFAR, for timing without the files (accuracy meaningless).
    "synthetic-cifar": load_synthetic_cifar,
}


# Datasets read from a folder tree the user names, with their own options.
FOLDER_DATASETS = ("imagenet100", "folder")


def load_dataset(
    name: str,
    data_dir: Path | None = None,
    download_ok: bool = True,
    image_size: int | None = None,
    class_list: Path | None = None,
) -> DatasetSplits:
    """Load the dataset ``name`` from ``data_dir`` (or its default places).

    Args:
        name: One of ``DATASETS``, "imagenet100" (an ImageNet tree restricted to
            ``class_list``) or "folder" (the user's own images, see
            :func:`wmse.data.image_folder.load_user_folder`).
        data_dir: Where the files are; required for the folder datasets.
        download_ok: Download when the files are missing and a download exists.
        image_size: Side of the images for the folder datasets (default 224 for
            ImageNet-100, 64 for "folder").
        class_list: ImageNet-100's class list file, one wnid per line.

    Raises:
        DatasetError: for an unknown name, missing options, or missing or corrupt
            files.
    """
    if name in FOLDER_DATASETS:
        if data_dir is None:
            raise DatasetError(
                f"dataset {name!r} needs --data-dir pointing at its folder"
            )
        if name == "folder":
            return load_user_folder(data_dir, image_size or 64)
        if class_list is None:
            raise DatasetError(
                "dataset 'imagenet100' needs --class-list, a text file with one ImageNet "
                "class id (wnid, e.g. n01558993) per line"
            )
        return load_imagenet100(data_dir, class_list, image_size or 224)
    if name not in DATASETS:
        choices = sorted([*DATASETS, *FOLDER_DATASETS])
        raise DatasetError(f"unknown dataset {name!r}; choose from {choices}")
    return DATASETS[name](data_dir, download_ok)
