"""wmse bench: every part of a step is timed, the shares add up, BYOL is refused."""

from pathlib import Path

import pytest
import torch

from wmse.bench import PARTS, measure_breakdown
from wmse.cli import main
from wmse.config import ConfigError, RunConfig
from wmse.data import load_dataset
from wmse.train import Trainer

pytestmark = pytest.mark.slow

TINY = ["--width", "4", "--head-hidden", "32", "--embedding-dim", "16",
        "--w-size", "64", "--batch-size", "128", "--threads", "2"]  # fmt: skip


def tiny_config(data_dir: Path) -> RunConfig:
    config = RunConfig()
    config.data.data_dir = str(data_dir)
    config.model.width, config.model.head_hidden = 4, 32
    config.model.embedding_dim, config.loss.w_size = 16, 64
    config.optim.batch_size = 128
    return config


def test_breakdown_times_every_part(small_fashion_mnist: Path) -> None:
    trainer = Trainer(tiny_config(small_fashion_mnist), Path("unused"))
    before = trainer.method.encoder.conv1.weight.detach().clone()

    breakdown = measure_breakdown(trainer, steps=2, warmup=1)

    assert list(breakdown.parts) == list(PARTS)
    assert all(seconds > 0 for seconds in breakdown.parts.values())
    assert 0.0 < breakdown.overhead_share < 1.0
    # The encoder's two passes are the bulk of any step.
    encoder = breakdown.parts["encoder forward"] + breakdown.parts["encoder backward"]
    assert encoder > 0.3 * breakdown.parts_seconds
    assert breakdown.images_per_second == pytest.approx(128 / breakdown.step_seconds)
    assert breakdown.peak_memory_bytes > 2**20
    # The instrumented steps really trained (the optimizer ran).
    assert not torch.equal(trainer.method.encoder.conv1.weight.detach(), before)


def test_cli_bench_prints_the_table(
    small_fashion_mnist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", "--data-dir", str(small_fashion_mnist), "--steps", "1",
                 "--warmup", "0", *TINY])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    for name in PARTS:
        assert f"| {name} |" in out
    assert "images/s" in out and "outside the encoder and the optimizer" in out


def test_bench_refuses_byol(small_fashion_mnist: Path) -> None:
    config = tiny_config(small_fashion_mnist)
    config.loss.method = "byol"
    with pytest.raises(ConfigError, match=r"not 'byol'.*pipeline_speed"):
        measure_breakdown(Trainer(config, Path("unused")), steps=1, warmup=0)


def test_cli_bench_bad_steps(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err


def test_synthetic_cifar_is_cifar_shaped() -> None:
    splits = load_dataset("synthetic-cifar")
    assert splits.pretrain.images.shape == (50_000, 3, 32, 32)
    assert splits.test is not None and splits.test.images.shape == (10_000, 3, 32, 32)
    assert splits.pretrain.images.dtype == torch.uint8
    assert splits.labelled and len(splits.classes) == 10
