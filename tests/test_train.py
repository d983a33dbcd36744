"""End to end on a slice of the real Fashion-MNIST files: train, checkpoint, resume, eval."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from wmse.checkpoint import CheckpointError, load_checkpoint
from wmse.cli import main
from wmse.config import ConfigError, RunConfig
from wmse.train import (
    TrainCallbacks,
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    resolve_check_every,
    resume_trainer,
)

pytestmark = pytest.mark.slow


def tiny_config(data_dir: Path, run_dir: Path, epochs: int = 2) -> RunConfig:
    """Width-8 ResNet-18 on 1,024 images, batch 256, D = 16: seconds per epoch."""
    config = RunConfig()
    config.data.data_dir = str(data_dir)
    config.model.width = 8
    config.model.head_hidden = 64
    config.model.embedding_dim = 16
    config.loss.w_size = 64
    config.optim.warmup_steps = 2
    config.eval.linear_epochs = 5
    config.eval.knn_weighted_k = 20
    config.train.epochs = epochs
    config.train.run_dir = str(run_dir)
    config.train.threads = 2
    return config


class StopAfterEpoch(TrainCallbacks):
    """Simulates a crash right after the checkpoint of epoch ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, metrics: dict) -> None:
        if metrics["epoch"] == self.epoch:
            raise KeyboardInterrupt


def test_training_writes_checkpoint_metrics_and_eval(
    small_fashion_mnist: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result = Trainer(tiny_config(small_fashion_mnist, run_dir)).fit()

    # Metrics: one JSON line per epoch, with a finite loss below the collapse-free 2.
    records = [
        json.loads(line)
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(0 < r["loss"] < 2.0 for r in records)
    assert records[-1]["step"] == 8

    # Evaluation: accuracies in range, embeddings not collapsed.
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["knn_top1"] == pytest.approx(result.knn_top1)
    assert 10 < result.knn_top1 <= 100 and 10 < result.linear_top1 <= 100
    assert result.linear_top5 >= result.linear_top1
    assert result.effective_rank is not None and result.effective_rank > 2

    # Run info: resolved config, seed and revision.
    info = json.loads((run_dir / "config.json").read_text())
    assert info["seed"] == 0 and info["revision"]
    assert info["config"]["loss"]["w_size"] == 64

    # The checkpoint loads safely and holds the whole state.
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["epoch"] == 2 and state["step"] == 8
    assert {"model", "optimizer", "scheduler", "rng", "generators", "config"} <= set(
        state
    )


def test_resume_continues_exactly(small_fashion_mnist: Path, tmp_path: Path) -> None:
    # Reference: an uninterrupted two-epoch run.
    whole = Trainer(tiny_config(small_fashion_mnist, tmp_path / "whole"))
    whole.fit()

    # Interrupted after epoch 1, then resumed from its checkpoint.
    broken_dir = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        Trainer(
            tiny_config(small_fashion_mnist, broken_dir), callbacks=StopAfterEpoch(1)
        ).fit()
    assert load_checkpoint(broken_dir / "checkpoint.pt")["epoch"] == 1
    resumed = resume_trainer(broken_dir)
    assert resumed.state.epoch == 1 and resumed.state.step == 4
    resumed.fit()

    # Same weights as the uninterrupted run, and metrics that continue from epoch 2.
    for name, value in whole.method.state_dict().items():
        torch.testing.assert_close(
            resumed.method.state_dict()[name], value, rtol=0, atol=0, msg=name
        )
    epochs = [
        json.loads(line)["epoch"]
        for line in (broken_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2]


def test_cli_train_then_eval(
    small_fashion_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "cli-run"
    code = main(
        [
            "train",
            "--data-dir",
            str(small_fashion_mnist),
            "--width",
            "8",
            "--head-hidden",
            "64",
            "--embedding-dim",
            "16",
            "--w-size",
            "64",
            "--epochs",
            "1",
            "--warmup-steps",
            "2",
            "--linear-epochs",
            "3",
            "--knn-weighted-k",
            "20",
            "--run-dir",
            str(run_dir),
            "--test-subset",
            "128",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "k-NN top-1 (k=5)" in out and "test split (128 images)" in out

    code = main(["eval", "--checkpoint", str(run_dir), "--test-subset", "64"])
    out = capsys.readouterr().out
    assert code == 0 and "linear top-1" in out
    assert json.loads((run_dir / "eval-checkpoint.json").read_text())["epoch"] == 1


def test_cli_bad_setting_is_one_line_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(["train", "--batch-size", "200", "--run-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2
    assert (
        err.strip() == "wmse: error: batch size 200 is not a multiple of w_size 128; "
        "every whitening sub-batch must be full"
    )
    assert not (tmp_path / "x").exists()


def test_cli_refuses_to_overwrite_a_run(
    small_fashion_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"")
    assert main(["train", "--run-dir", str(run_dir)]) == 2
    assert "already holds a run; use --resume" in capsys.readouterr().err


def test_dataset_smaller_than_a_batch(
    small_fashion_mnist: Path, tmp_path: Path
) -> None:
    config = tiny_config(small_fashion_mnist, tmp_path / "run")
    config.data.train_subset = 100
    with pytest.raises(
        ConfigError, match="has 100 images, fewer than one batch of 256"
    ):
        Trainer(config)


def test_resume_without_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        resume_trainer(tmp_path)


def test_checkpoint_with_code_is_refused(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("this ran",))

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="refusing to load .*evil.pt"):
        load_checkpoint(path)


class SignalAtStep(TrainCallbacks):
    """Sends SIGTERM to this process after step ``step``, as a scheduler would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, step: int, loss: float | None, images_per_s: float) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_saves_mid_epoch_and_resume_is_exact(
    small_fashion_mnist: Path, tmp_path: Path
) -> None:
    whole = Trainer(tiny_config(small_fashion_mnist, tmp_path / "whole"))
    whole.fit()

    # SIGTERM in the middle of epoch 2 (steps 5-8): checkpoint at step 6, clean stop.
    run_dir = tmp_path / "stopped"
    with pytest.raises(TrainingInterrupted, match="--resume"):
        Trainer(
            tiny_config(small_fashion_mnist, run_dir), callbacks=SignalAtStep(6)
        ).fit()
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert (state["epoch"], state["step"], state["epoch_progress"]["batches_done"]) == (
        1,
        6,
        2,
    )

    resumed = resume_trainer(run_dir)
    resumed.fit()
    for name, value in whole.method.state_dict().items():
        torch.testing.assert_close(
            resumed.method.state_dict()[name], value, rtol=0, atol=0, msg=name
        )
    records = [
        json.loads(line)
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in records] == [1, 2]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_non_finite_loss_stops_with_step_and_causes(
    small_fashion_mnist: Path, tmp_path: Path
) -> None:
    config = tiny_config(small_fashion_mnist, tmp_path / "run")
    config.optim.lr = 1e30  # diverges within a few steps
    with pytest.raises(
        TrainingDiverged,
        match=r"non-finite training step \d+ .*--lr.*--w-eps.*--w-size",
    ):
        Trainer(config).fit()


def test_nan_policy_skip_keeps_training(
    small_fashion_mnist: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tiny_config(small_fashion_mnist, tmp_path / "run", epochs=1)
    config.train.nan_policy = "skip"
    trainer = Trainer(config)
    original = trainer.method.forward
    calls = {"count": 0}

    def sometimes_nan(views, generator=None, check=True):
        calls["count"] += 1
        loss = original(views, generator, check)
        return loss * float("nan") if calls["count"] == 2 else loss

    trainer.method.forward = sometimes_nan  # type: ignore[method-assign]
    trainer.fit()
    assert trainer.state.step == 4 and trainer.state.skipped_steps == 1
    assert "Skipped (--nan-policy skip)" in caplog.text


def test_resume_falls_back_to_the_previous_checkpoint(
    small_fashion_mnist: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    Trainer(tiny_config(small_fashion_mnist, run_dir, epochs=2)).fit()
    assert load_checkpoint(run_dir / "checkpoint-prev.pt")["epoch"] == 1

    # A torn latest checkpoint: the run continues from the one before it.
    (run_dir / "checkpoint.pt").write_bytes(b"torn")
    resumed = resume_trainer(run_dir)
    assert resumed.state.epoch == 1


def test_unchecked_steps_report_the_step_where_divergence_began(
    small_fashion_mnist: Path, tmp_path: Path
) -> None:
    config = tiny_config(small_fashion_mnist, tmp_path / "run", epochs=1)
    config.train.check_every = 3
    trainer = Trainer(config)
    original = trainer.method.forward
    checks = []

    def nan_at_step_two(views, generator=None, check=True):
        checks.append(check)
        loss = original(views, generator, check)
        return loss * float("nan") if len(checks) == 2 else loss

    trainer.method.forward = nan_at_step_two  # type: ignore[method-assign]
    with pytest.raises(
        TrainingDiverged,
        match=r"non-finite training step 2 .*found by the check at step 3 "
        r"\(--check-every 3\)",
    ):
        trainer.fit()
    assert checks == [False, False]  # step 3 stops before its forward pass
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_check_every_defaults_to_every_step_on_cpu_and_with_skip(
    small_fashion_mnist: Path, tmp_path: Path
) -> None:
    config = tiny_config(small_fashion_mnist, tmp_path / "run")
    assert resolve_check_every(config, torch.device("cpu")) == 1
    assert resolve_check_every(config, torch.device("cuda")) == 50
    config.train.nan_policy = "skip"
    assert resolve_check_every(config, torch.device("cuda")) == 1


def test_bf16_channels_last_training_step_on_cpu(
    small_fashion_mnist: Path, tmp_path: Path
) -> None:
    config = tiny_config(small_fashion_mnist, tmp_path / "run", epochs=1)
    config.train.precision = "bf16"
    trainer = Trainer(config)
    conv = trainer.method.encoder.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    before = conv.detach().clone()

    loss = trainer.train_step(torch.arange(256))

    # The loss is in the whitening precision (float64 by default, never bf16) and
    # the weights moved.
    assert loss.dtype == torch.float64 and torch.isfinite(loss)
    assert 0.0 < float(loss) < 4.0
    assert conv.dtype == torch.float32
    assert not torch.equal(conv.detach(), before)


def test_compile_keeps_parameter_names(
    small_fashion_mnist: Path, tmp_path: Path
) -> None:
    config = tiny_config(small_fashion_mnist, tmp_path / "run")
    plain = Trainer(config).method.state_dict().keys()
    config.train.compile = True
    compiled = Trainer(config).method.state_dict().keys()
    assert list(compiled) == list(plain)
