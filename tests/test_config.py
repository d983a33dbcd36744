"""Configuration: validation messages and loading from dicts."""

import pytest

from wmse.config import ConfigError, RunConfig


def test_round_trip() -> None:
    config = RunConfig()
    config.loss.views = 4
    config.augment.crop_scale = (0.3, 0.9)
    again = RunConfig.from_dict(config.to_dict())
    assert again == config


@pytest.mark.parametrize(
    "values,message",
    [
        ({"loss": {"wsize": 3}}, "unknown key loss.wsize"),
        ({"los": {}}, "unknown config section 'los'"),
        ({"optim": {"lr": "fast"}}, "optim.lr must be of type float.*'fast'"),
        ({"loss": {"views": 2.5}}, "loss.views must be of type int"),
    ],
)
def test_from_dict_errors(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict(values)


@pytest.mark.parametrize(
    "section,key,value,message",
    [
        ("loss", "views", 1, r"views \(d\) must be >= 2.*got 1"),
        ("optim", "batch_size", 64, "batch size 64 is smaller than w_size 128"),
        ("optim", "batch_size", 320, "batch size 320 is not a multiple of w_size 128"),
        (
            "model",
            "embedding_dim",
            128,
            r"embedding size 128 must be smaller than w_size 128.*>= 256",
        ),
        ("optim", "schedule", "linear", "schedule must be 'cosine' or 'step'"),
        ("augment", "flip_p", 2.0, "augment: flip_p is a probability"),
    ],
)
def test_validate_names_the_bad_value(
    section: str, key: str, value: object, message: str
) -> None:
    config = RunConfig()
    setattr(getattr(config, section), key, value)
    with pytest.raises(ConfigError, match=message):
        config.validate()
