"""Encoder and head: shapes, stems, torchvision compatibility."""

import pytest
import torch
import torchvision

from wmse.models import ProjectionHead, ResNetEncoder, build_encoder


@pytest.mark.parametrize(
    "arch,width,features",
    [("resnet18", 16, 128), ("resnet34", 8, 64), ("resnet50", 8, 256)],
)
def test_feature_size(arch: str, width: int, features: int) -> None:
    encoder = ResNetEncoder(arch, in_channels=1, width=width)
    out = encoder(torch.randn(2, 1, 28, 28))
    assert encoder.feature_dim == features
    assert out.shape == (2, features)


def test_width_64_matches_torchvision_resnet18_names_and_shapes() -> None:
    ours = ResNetEncoder(
        "resnet18", in_channels=3, width=64, stem="imagenet"
    ).state_dict()
    theirs = torchvision.models.resnet18().state_dict()
    theirs = {k: v for k, v in theirs.items() if not k.startswith("fc.")}

    assert set(ours) == set(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_small_image_stem() -> None:
    encoder = build_encoder(image_size=32, in_channels=3, width=16)
    assert encoder.conv1.kernel_size == (3, 3) and encoder.conv1.stride == (1, 1)
    assert isinstance(encoder.maxpool, torch.nn.Identity)

    large = build_encoder(image_size=224, in_channels=3, width=16)
    assert large.conv1.kernel_size == (7, 7)
    assert isinstance(large.maxpool, torch.nn.MaxPool2d)


def test_small_stem_with_maxpool() -> None:
    encoder = ResNetEncoder(in_channels=3, width=8, stem="small-maxpool")
    assert encoder.conv1.kernel_size == (3, 3)
    assert isinstance(encoder.maxpool, torch.nn.MaxPool2d)


def test_input_channels_follow_the_data() -> None:
    assert build_encoder(28, 1, width=16).conv1.in_channels == 1


def test_head_shape_and_batchnorm() -> None:
    head = ProjectionHead(128, 1024, 64)
    assert head(torch.randn(8, 128)).shape == (8, 64)
    assert isinstance(head[1], torch.nn.BatchNorm1d)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"arch": "vgg"}, "unknown architecture 'vgg'"),
        ({"width": 10}, "multiple of 4, got 10"),
        ({"stem_stride": 3}, "stem_stride must be 1 or 2, got 3"),
        ({"stem": "big"}, "unknown stem 'big'"),
    ],
)
def test_bad_encoder_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ResNetEncoder(**kwargs)
