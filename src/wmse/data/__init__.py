"""Datasets as in-memory uint8 tensors, and the registry that loads them by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from wmse.data.base import DatasetError, DatasetSplits, ImageDataset
from wmse.data.cifar import load_cifar10, load_cifar100
from wmse.data.fashion_mnist import load_fashion_mnist
from wmse.data.stl10 import load_stl10
from wmse.data.tiny_imagenet import load_tiny_imagenet

__all__ = ["DatasetError", "DatasetSplits", "ImageDataset", "load_dataset", "DATASETS"]

# name -> loader(data_dir, download_ok) -> DatasetSplits
DATASETS: dict[str, Callable[[Path | None, bool], DatasetSplits]] = {
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "stl10": load_stl10,  # resized to 64px, as in the paper
    "tiny-imagenet": load_tiny_imagenet,
}


def load_dataset(name: str, data_dir: Path | None = None, download_ok: bool = True) -> DatasetSplits:
    """Load the dataset ``name`` from ``data_dir`` (or its default places).

    Raises:
        DatasetError: for an unknown name, or missing or corrupt files.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    return DATASETS[name](data_dir, download_ok)
