"""Batched view generation: shapes, independence, ranges, determinism."""

import pytest
import torch

from wmse.augment import AugmentConfig, ViewAugmenter


def images(count: int = 16, channels: int = 1, size: int = 28) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(
        0, 256, (count, channels, size, size), generator=generator, dtype=torch.uint8
    )


def identity_config(**changes: object) -> AugmentConfig:
    """No randomness at all, except what ``changes`` switches on."""
    config = AugmentConfig(
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip_p=0.0,
        jitter_p=0.0,
        grayscale_p=0.0,
    )
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def test_identity_settings_reproduce_the_normalised_image() -> None:
    batch = images()
    views = ViewAugmenter(identity_config(), mean=(0.5,), std=(0.25,))(
        batch, num_views=3
    )

    expected = (batch.float() / 255 - 0.5) / 0.25
    for view in views:
        torch.testing.assert_close(view, expected, atol=1e-5, rtol=1e-5)


def test_flip_mirrors_the_image() -> None:
    batch = images(4)
    views = ViewAugmenter(identity_config(flip_p=1.0), (0.0,), (1.0,))(
        batch, num_views=2
    )

    torch.testing.assert_close(
        views[0], batch.float().flip(-1) / 255, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("channels", [1, 3])
def test_views_differ_per_image_and_per_view(channels: int) -> None:
    batch = images(8, channels).repeat(2, 1, 1, 1)  # images 0-7 == images 8-15
    views = ViewAugmenter(AugmentConfig(), (0.5,) * channels, (0.5,) * channels)(
        batch, num_views=4, generator=torch.Generator().manual_seed(1)
    )

    assert views.shape == (4, 16, channels, 28, 28)
    assert views.dtype == torch.float32
    # Same image, different views; and two copies of one image in one view: all differ.
    assert not torch.allclose(views[0], views[1])
    assert not torch.allclose(views[0, :8], views[0, 8:])


def test_same_generator_seed_gives_same_views() -> None:
    augmenter = ViewAugmenter(AugmentConfig(), (0.5,), (0.5,))
    first = augmenter(images(), 2, torch.Generator().manual_seed(3))
    again = augmenter(images(), 2, torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, again)


def test_pixels_stay_in_range_before_normalisation() -> None:
    views = ViewAugmenter(AugmentConfig(), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))(
        images(32, 3), num_views=2, generator=torch.Generator().manual_seed(0)
    )
    assert views.min() >= 0.0 and views.max() <= 1.0


def test_grayscale_makes_channels_equal() -> None:
    views = ViewAugmenter(identity_config(grayscale_p=1.0), (0.0,) * 3, (1.0,) * 3)(
        images(4, 3), num_views=1
    )
    torch.testing.assert_close(views[0, :, 0], views[0, :, 1])
    torch.testing.assert_close(views[0, :, 1], views[0, :, 2])


def test_zero_hue_rotation_is_identity() -> None:
    pixels = torch.rand(5, 3, 4, 4)
    rotated = ViewAugmenter.rotate_hue(pixels, torch.zeros(5))
    torch.testing.assert_close(rotated, pixels, atol=1e-5, rtol=1e-5)


def test_crop_zooms_in() -> None:
    # A centred half-size crop of a horizontal ramp spans a narrower range of values.
    ramp = (
        torch.linspace(0, 255, 32)
        .round()
        .to(torch.uint8)
        .view(1, 1, 1, 32)
        .expand(1, 1, 32, 32)
    )
    config = identity_config(crop_scale=(0.25, 0.25))
    view = ViewAugmenter(config, (0.0,), (1.0,))(ramp.contiguous(), num_views=1)[
        0, 0, 0
    ]

    spread = float(view.max() - view.min())
    assert 0.3 < spread < 0.7


@pytest.mark.parametrize(
    "change,message",
    [
        ({"crop_scale": (0.0, 1.0)}, "crop_scale"),
        ({"flip_p": 1.5}, "flip_p is a probability"),
        ({"hue": 0.7}, "hue must be in"),
        ({"brightness": -0.1}, "brightness must be in"),
    ],
)
def test_bad_settings_are_named(change: dict, message: str) -> None:
    config = AugmentConfig()
    for key, value in change.items():
        setattr(config, key, value)
    with pytest.raises(ValueError, match=message):
        ViewAugmenter(config, (0.5,), (0.5,))


def test_wrong_input_type_and_channels() -> None:
    augmenter = ViewAugmenter(AugmentConfig(), (0.5,), (0.5,))
    with pytest.raises(ValueError, match="uint8 batch of shape"):
        augmenter(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="3 channels but mean/std have 1"):
        augmenter(images(2, 3))
