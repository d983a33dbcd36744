"""Containers shared by every dataset loader."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["DatasetError", "DatasetSplits", "ImageDataset", "one_line"]


class DatasetError(ValueError):
    """A dataset is missing, incomplete or corrupt; the message says which file and why."""


def one_line(error: BaseException | str) -> str:
    """The text of ``error`` on one line: each run of whitespace becomes one space.

    Errors quoted inside our messages (torchvision's download failures, decoder errors)
    often span several lines; the command line prints each error as a single line.

    >>> one_line(OSError("Error downloading x.gz:\\nTried http://a/, got:\\n  404\\n"))
    'Error downloading x.gz: Tried http://a/, got: 404'
    """
    return " ".join(str(error).split())


@dataclass
class ImageDataset:
    """Images held in memory as uint8, with optional integer labels.

    Attributes:
        images: uint8 tensor of shape (N, C, H, W).
        labels: int64 tensor of shape (N,), or None for unlabelled data.
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DatasetError(
                f"images must be uint8 of shape (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels is not None and self.labels.shape != (self.images.shape[0],):
            raise DatasetError(
                f"labels of shape {tuple(self.labels.shape)} do not match "
                f"{self.images.shape[0]} images"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, count: int) -> ImageDataset:
        """The first ``count`` items (all of them if ``count`` is larger)."""
        labels = None if self.labels is None else self.labels[:count]
        return ImageDataset(self.images[:count], labels)


@dataclass
class DatasetSplits:
    """What a training run needs from one dataset.

    Attributes:
        name: Dataset name, e.g. "fashion-mnist".
        pretrain: Images for self-supervised training (labels unused).
        train: Labelled training split for the k-NN and linear evaluation.
        test: Labelled test split for evaluation; None for unlabelled image folders
            (the run then trains without evaluating).
        classes: Class names, index = label.
        mean: Per-channel pixel mean in [0, 1] units, for normalisation.
        std: Per-channel pixel standard deviation in [0, 1] units.
        source: Where the files were read from, for the run's records.
    """

    name: str
    pretrain: ImageDataset
    train: ImageDataset
    test: ImageDataset | None
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        """Whether k-NN and linear evaluation are possible (labelled train and test)."""
        return (
            self.test is not None
            and self.test.labels is not None
            and self.train.labels is not None
        )

    @property
    def image_size(self) -> int:
        return int(self.pretrain.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.pretrain.images.shape[1])
