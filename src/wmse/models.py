"""Encoders (torchvision ResNets adapted to small images) and the projection head."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

__all__ = ["ARCHITECTURES", "ProjectionHead", "ResNetEncoder", "build_encoder"]

logger = logging.getLogger(__name__)

STEMS = ("small", "small-maxpool", "imagenet")

# Block type and blocks per stage, as in torchvision.
ARCHITECTURES: dict[str, tuple[type[BasicBlock | Bottleneck], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


class ResNetEncoder(ResNet):
    """A torchvision ResNet with a configurable width and stem, without its classifier.

    At ``width=64`` with the "imagenet" stem the parameter names and shapes are exactly
    those of ``torchvision.models.resnet18()`` (minus ``fc``), so weights move freely
    between the two. ``width`` scales every stage (64, 128, 256, 512 at width 64).

    Args:
        arch: "resnet18", "resnet34" or "resnet50".
        in_channels: Image channels (1 for Fashion-MNIST, 3 for RGB).
        width: Channels of the first stage; 64 is the standard ResNet.
        stem: "small" (3x3 convolution, no max-pool: the usual change for images of
            32 px or less, the paper's CIFAR setting), "small-maxpool" (3x3
            convolution followed by the max-pool: the paper's STL-10 and Tiny
            ImageNet setting) or "imagenet" (7x7 stride-2 convolution and max-pool).
        stem_stride: Stride of the 3x3 stem convolution; 2 quarters the cost of every
            layer, a CPU-budget trade-off (the paper uses 1).

    Shapes:
        input (B, in_channels, H, W) float; output (B, feature_dim) with
        ``feature_dim = 8 * width * expansion`` (512 for resnet18 at width 64).
    """

    def __init__(
        self,
        arch: str = "resnet18",
        in_channels: int = 3,
        width: int = 64,
        stem: str = "small",
        stem_stride: int = 1,
    ) -> None:
        if arch not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}"
            )
        if width < 1 or width % 4:
            raise ValueError(f"width must be a positive multiple of 4, got {width}")
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; choose from {STEMS}")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        block, layers = ARCHITECTURES[arch]

        # torchvision builds stages of 64..512 planes; _make_layer rescales them.
        self._width_scale = width / 64
        self._first_stage_pending = True
        super().__init__(block, layers)

        # Stem sized for the data: (B, C, H, W) -> (B, width, H', W')
        if stem in ("small", "small-maxpool"):
            self.conv1 = nn.Conv2d(
                in_channels,
                width,
                kernel_size=3,
                stride=stem_stride,
                padding=1,
                bias=False,
            )
            if stem == "small":
                self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(
                in_channels, width, kernel_size=7, stride=2, padding=3, bias=False
            )
        self.bn1 = nn.BatchNorm2d(width)
        self.fc = nn.Identity()
        self.feature_dim = 8 * width * block.expansion
        self.arch = arch

    def _make_layer(
        self,
        block: type[BasicBlock | Bottleneck],
        planes: int,
        blocks: int,
        stride: int = 1,
        dilate: bool = False,
    ) -> nn.Sequential:
        # NOTE: relies on torchvision calling _make_layer once per stage, in order, after
        # setting self.inplanes = 64; the first call resets inplanes to the scaled width.
        if self._first_stage_pending:
            self.inplanes = round(64 * self._width_scale)
            self._first_stage_pending = False
        scaled = round(planes * self._width_scale)
        return super()._make_layer(block, scaled, blocks, stride, dilate)


class ProjectionHead(nn.Sequential):
    """The projection head g: Linear, BatchNorm, ReLU, Linear.

    Shapes:
        input (B, in_dim); output (B, out_dim), the embedding v of size D.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 1024, out_dim: int = 64) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )


def build_encoder(
    image_size: int, in_channels: int, stem: str = "auto", **kwargs: Any
) -> ResNetEncoder:
    """Build an encoder for images of ``image_size`` px.

    With ``stem="auto"``, images of 32 px or less get the small-image stem (3x3
    convolution, no max-pool) and larger ones the ImageNet stem.
    """
    if stem == "auto":
        stem = "small" if image_size <= 32 else "imagenet"
    encoder = ResNetEncoder(in_channels=in_channels, stem=stem, **kwargs)
    num_params = sum(p.numel() for p in encoder.parameters())
    logger.info(
        "encoder %s width %d: %.2fM parameters, %d-d features",
        encoder.arch,
        encoder.conv1.out_channels,
        num_params / 1e6,
        encoder.feature_dim,
    )
    return encoder
