"""Shared fixtures: small Fashion-MNIST files in the real IDX format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wmse.data import fashion_mnist
from wmse.data.fashion_mnist import DEBIAN_DIR, FILES
from wmse.data.idx import read_idx, write_idx


def write_fashion_mnist(folder: Path, train: int, test: int, compress: bool) -> None:
    """Write a slice of the real Fashion-MNIST (or random images if absent) as IDX."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for split, count in (("train", train), ("test", test)):
        images_stem = FILES[f"{split}_images"]
        labels_stem = FILES[f"{split}_labels"]
        real_images = DEBIAN_DIR / f"{images_stem}.gz"
        if real_images.exists():
            images = read_idx(real_images)[:count]
            labels = read_idx(DEBIAN_DIR / f"{labels_stem}.gz")[:count]
        else:
            generator = torch.Generator().manual_seed(0)
            images = torch.randint(
                0, 256, (count, 28, 28), generator=generator, dtype=torch.uint8
            )
            labels = torch.arange(count, dtype=torch.uint8) % 10
        write_idx(folder / f"{images_stem}{suffix}", images)
        write_idx(folder / f"{labels_stem}{suffix}", labels)


@pytest.fixture
def no_system_dataset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide Debian's Fashion-MNIST so that only the test's files are found."""
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-such-dir")


@pytest.fixture
def small_fashion_mnist(tmp_path: Path, no_system_dataset: None) -> Path:
    """A folder with 1,024 training and 256 test images of Fashion-MNIST, as .gz IDX."""
    folder = tmp_path / "fmnist"
    write_fashion_mnist(folder, train=1024, test=256, compress=True)
    return folder
