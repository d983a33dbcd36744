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
        ({"optim": {"lr": "fast"}}, "optim.lr must be float .*'fast'"),
        ({"loss": {"views": 2.5}}, "loss.views must be int"),
        ({"data": {"train_subset": "abc"}}, "data.train_subset must be int or null"),
        ({"train": {"epochs": None}}, "train.epochs must be int"),
        ([1, 2], "must be a table of sections"),
        ({"data": 5}, "section 'data' must be a table"),
    ],
)
def test_from_dict_errors(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict(values)


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("loss.w_iter", 0, "loss.w_iter must be >= 1, got 0"),
        ("loss.w_eps", -0.1, r"loss.w_eps must be in \[0, 1\)"),
        ("model.embedding_dim", 0, "model.embedding_dim must be >= 1"),
        ("model.head_hidden", 0, "model.head_hidden must be >= 1"),
        ("model.width", 10, "multiple of 4, got 10"),
        ("model.arch", "vgg", "model.arch must be one of"),
        ("model.stem", "weird", "model.stem must be one of"),
        ("loss.whitening_precision", "float16", "loss.whitening_precision must be one"),
        ("eval.knn_k", 0, "eval.knn_k must be >= 1"),
        ("eval.batch_size", 0, "eval.batch_size must be >= 1"),
        ("eval.linear_lr", -1.0, "eval.linear_lr must be a finite positive number"),
        (
            "optim.lr",
            float("inf"),
            "optim.lr must be a finite positive number, got inf",
        ),
        ("optim.weight_decay", -1.0, "weight_decay must be a finite non-negative"),
        ("train.log_every", 0, "train.log_every must be >= 1"),
        ("train.max_steps", -1, "train.max_steps must be >= 1"),
        ("data.test_subset", 0, "data.test_subset must be >= 1"),
        ("train.threads", -1, "train.threads must be >= 1"),
        ("train.device", "foo", "train.device 'foo' is not a device"),
        ("loss.views", 100000, "more than 64"),
        ("loss.w_size", 0, "loss.w_size must be >= 2"),
    ],
)
def test_every_range_is_checked(name: str, value: object, message: str) -> None:
    config = RunConfig()
    section, key = name.split(".")
    setattr(getattr(config, section), key, value)
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_registries_match_the_choices() -> None:
    from wmse.config import ARCHITECTURES, METHODS
    from wmse.methods import METHODS as registered_methods
    from wmse.models import ARCHITECTURES as registered_architectures

    assert set(METHODS) == set(registered_methods)
    assert set(ARCHITECTURES) == set(registered_architectures)


@pytest.mark.parametrize(
    "section,key,value,message",
    [
        ("loss", "views", 1, r"loss.views must be >= 2, got 1"),
        ("optim", "batch_size", 64, "batch size 64 is smaller than w_size 128"),
        ("optim", "batch_size", 320, "batch size 320 is not a multiple of w_size 128"),
        (
            "model",
            "embedding_dim",
            128,
            r"embedding size 128 must be smaller than w_size 128.*>= 256",
        ),
        (
            "optim",
            "schedule",
            "linear",
            r"optim.schedule must be one of \['cosine', 'step'\]",
        ),
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


@pytest.mark.parametrize("command", ["train", "bench", "eval", "compare", "export"])
def test_help_lists_every_option_with_its_advice(
    command: str, capsys: pytest.CaptureFixture
) -> None:
    from wmse.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    if command in ("train", "bench"):
        # Every setting has a flag whose help says when to change it, % signs intact.
        assert "--whitening-precision" in shown and "under 0.3% of a CPU step" in shown
        assert "--lr" in shown and "Lower it if the loss turns non-finite" in shown
