"""Random uint8 images shaped like a real dataset, for speed measurements only.

Nothing can be learned from them (pixels and labels are independent noise), so
accuracies on them mean nothing; their use is timing a pipeline without the files.
"""

from __future__ import annotations

from pathlib import Path

import torch

from wmse.data.base import DatasetSplits, ImageDataset

__all__ = ["load_synthetic_cifar", "synthetic_splits"]


def synthetic_splits(
    name: str,
    train_images: int,
    test_images: int,
    channels: int,
    size: int,
    num_classes: int = 10,
    seed: int = 0,
) -> DatasetSplits:
    """Noise images (N, C, size, size) and random labels, drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)

    def split(count: int) -> ImageDataset:
        images = torch.randint(
            0, 256, (count, channels, size, size), generator=generator
        ).to(torch.uint8)
        labels = torch.randint(0, num_classes, (count,), generator=generator)
        return ImageDataset(images, labels)

    train = split(train_images)
    return DatasetSplits(
        name=name,
        pretrain=train,
        train=train,
        test=split(test_images),
        classes=[f"class {index}" for index in range(num_classes)],
        mean=(0.5,) * channels,
        std=(0.29,) * channels,  # a uniform distribution on [0, 1]
        source="synthetic (random pixels)",
    )


def load_synthetic_cifar(
    data_dir: Path | None = None, download_ok: bool = True
) -> DatasetSplits:
    """CIFAR-shaped noise: 50,000 + 10,000 images of 3x32x32, 10 classes."""
    return synthetic_splits("synthetic-cifar", 50_000, 10_000, channels=3, size=32)
