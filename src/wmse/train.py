"""The training loop: data order, views, loss, optimizer, schedule, checkpoints, metrics.

The loop reports progress through a :class:`TrainCallbacks` object, so the library never
prints; the command line turns the callbacks into a progress bar.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from wmse.augment import ViewAugmenter
from wmse.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from wmse.config import ConfigError, RunConfig
from wmse.data import DatasetSplits, load_dataset
from wmse.evaluate import EvalResult, effective_rank, evaluate_features, extract_features
from wmse.methods import METHODS, Method
from wmse.models import ProjectionHead, build_encoder
from wmse.reproducibility import code_revision, restore_rng_state, rng_state, seed_everything

__all__ = ["Trainer", "TrainCallbacks", "build_method", "load_run_data", "resolve_device"]

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint-prev.pt"
METRICS = "metrics.jsonl"
CONFIG = "config.json"
EVAL = "eval.json"


class TrainCallbacks:
    """Progress hooks; the default does nothing. Override what you need."""

    def on_train_start(self, total_steps: int, start_step: int) -> None:
        """Called once, before the first step (``start_step`` > 0 when resuming)."""

    def on_step(self, step: int, loss: float | None, images_per_s: float) -> None:
        """Called after every step; ``loss`` is read back only every log_every steps."""

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        """Called with the epoch's metrics record."""

    def on_train_end(self) -> None:
        """Called after the last step."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else as given.

    Raises:
        ConfigError: for CUDA on a machine without it.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device


def load_run_data(config: RunConfig) -> DatasetSplits:
    """Load the configured dataset, cut to the configured subsets."""
    data = config.data
    splits = load_dataset(data.dataset, Path(data.data_dir) if data.data_dir else None)
    if data.train_subset:
        splits.pretrain = splits.pretrain.subset(data.train_subset)
        splits.train = splits.train.subset(data.train_subset)
    if data.test_subset:
        splits.test = splits.test.subset(data.test_subset)
    return splits


def build_method(config: RunConfig, image_size: int, channels: int) -> Method:
    """Encoder, head and method as configured.

    Raises:
        ConfigError: for an unknown method.
    """
    method_name = config.loss.method
    if method_name not in METHODS:
        raise ConfigError(f"unknown method {method_name!r}; choose from {sorted(METHODS)}")
    model = config.model
    encoder = build_encoder(
        image_size,
        channels,
        arch=model.arch,
        width=model.width,
        stem=model.stem,
        stem_stride=model.stem_stride,
    )
    head = ProjectionHead(encoder.feature_dim, model.head_hidden, model.embedding_dim)
    return METHODS[method_name](encoder, head, config)


def warmup_then_decay(config: RunConfig, steps_per_epoch: int, total_steps: int):  # noqa: ANN201
    """Learning-rate multiplier per step: linear warm-up, then cosine or step decay."""
    optim = config.optim
    warmup = min(optim.warmup_steps, max(total_steps - 1, 0))
    milestones = [
        steps_per_epoch * (config.train.epochs - 50),
        steps_per_epoch * (config.train.epochs - 25),
    ]

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if optim.schedule == "cosine":
            progress = (step - warmup) / max(total_steps - warmup, 1)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return 0.2 ** sum(step >= milestone for milestone in milestones)

    return multiplier


@dataclass
class TrainState:
    """Where a run stands; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps completed


class Trainer:
    """Trains a method on a dataset and evaluates it.

    Args:
        config: The run's configuration (validated here).
        run_dir: Folder for config.json, metrics.jsonl, checkpoint.pt and eval.json
            (default: ``config.train.run_dir``, else runs/<date>-<time>-<dataset>-<method>).
        splits: Data to use; loaded from the configuration when omitted.
        callbacks: Progress hooks (the CLI's progress bar).
    """

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path | None = None,
        splits: DatasetSplits | None = None,
        callbacks: TrainCallbacks | None = None,
    ) -> None:
        config.validate()
        if config.optim.schedule == "step" and config.train.epochs <= 50:
            raise ConfigError(
                f"the step schedule decays at 50 and 25 epochs before the end and needs "
                f"more than 50 epochs, got {config.train.epochs}; use --schedule cosine"
            )
        self.config = config
        if run_dir is None:
            run_dir = Path(config.train.run_dir) if config.train.run_dir else default_run_dir(config)
        self.run_dir = run_dir
        self.callbacks = callbacks or TrainCallbacks()
        self.device = resolve_device(config.train.device)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        seed_everything(config.train.seed)

        # Data and the views made from it.
        self.splits = splits if splits is not None else load_run_data(config)
        self.check_data_fits()
        self.augmenter = ViewAugmenter(config.augment, self.splits.mean, self.splits.std)

        # Model, optimizer and schedule.
        self.method = build_method(config, self.splits.image_size, self.splits.channels)
        self.method.to(self.device)
        self.optimizer = torch.optim.Adam(
            self.method.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        self.steps_per_epoch = len(self.splits.pretrain) // config.optim.batch_size
        self.total_steps = config.train.max_steps or config.train.epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_then_decay(config, self.steps_per_epoch, self.total_steps)
        )

        # Independent random streams: data order, augmentation, batch slicing.
        seed = config.train.seed
        self.order_generator = torch.Generator().manual_seed(seed)
        self.augment_generator = torch.Generator(self.device).manual_seed(seed + 1)
        self.slice_generator = torch.Generator(self.device).manual_seed(seed + 2)
        self.state = TrainState()
        self.revision = code_revision()

    def check_data_fits(self) -> None:
        """Refuse a dataset too small for one batch, before any work is done."""
        batch_size = self.config.optim.batch_size
        if len(self.splits.pretrain) < batch_size:
            raise ConfigError(
                f"the training set has {len(self.splits.pretrain)} images, fewer than one "
                f"batch of {batch_size}; lower --batch-size (and --w-size) or use more data"
            )

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly."""
        return {
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.state.epoch,
            "step": self.state.step,
            "rng": rng_state(),
            "generators": {
                "order": self.order_generator.get_state(),
                "augment": self.augment_generator.get_state(),
                "slice": self.slice_generator.get_state(),
            },
            "config": self.config.to_dict(),
            "revision": self.revision,
        }

    def save(self) -> None:
        """Write the checkpoint, keeping the previous one as a fallback."""
        path = self.run_dir / CHECKPOINT
        if path.exists():
            path.replace(self.run_dir / PREVIOUS_CHECKPOINT)
        save_checkpoint(self.checkpoint_state(), path)

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint written by :meth:`save`.

        Raises:
            CheckpointError: if the checkpoint does not fit this model.
        """
        try:
            self.method.load_state_dict(state["model"])
        except RuntimeError as error:
            raise CheckpointError(
                f"checkpoint does not fit the configured model ({error}); was it written "
                f"with another architecture, width or embedding size?"
            ) from error
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.state = TrainState(epoch=state["epoch"], step=state["step"])
        restore_rng_state(state["rng"])
        self.order_generator.set_state(state["generators"]["order"])
        self.augment_generator.set_state(state["generators"]["augment"])
        self.slice_generator.set_state(state["generators"]["slice"])
        logger.info("resumed at epoch %d, step %d", self.state.epoch, self.state.step)

    # ---------------------------------------------------------------------- training

    def write_run_info(self) -> None:
        """Save the resolved config, seed and code revision next to the results."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        info = {
            "config": self.config.to_dict(),
            "revision": self.revision,
            "seed": self.config.train.seed,
            "device": str(self.device),
            "torch": torch.__version__,
            "dataset_source": self.splits.source,
            "started": datetime.now().isoformat(timespec="seconds"),
        }
        (self.run_dir / CONFIG).write_text(json.dumps(info, indent=2))
        logger.info("run %s, revision %s", self.run_dir, self.revision)
        logger.info("config %s", json.dumps(self.config.to_dict()))

    def batch_views(self, indices: torch.Tensor) -> torch.Tensor:
        """Augmented views of the images at ``indices``: (d, N, C, H, W) on the device."""
        images = self.splits.pretrain.images[indices].to(self.device, non_blocking=True)
        return self.augmenter(images, self.config.loss.views, self.augment_generator)

    def train_step(self, indices: torch.Tensor) -> torch.Tensor:
        """One optimizer step on the batch ``indices``; returns the loss (on device)."""
        views = self.batch_views(indices)
        loss = self.method(views, self.slice_generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.state.step += 1
        self.method.after_step(self.state.step, self.total_steps)
        return loss.detach()

    def run_epoch(self) -> dict[str, Any]:
        """Train one epoch (or up to max_steps); returns its metrics record."""
        batch_size, log_every = self.config.optim.batch_size, self.config.train.log_every
        order = torch.randperm(len(self.splits.pretrain), generator=self.order_generator)
        loss_sum = torch.zeros((), device=self.device)
        steps, started = 0, time.perf_counter()

        for batch_start in range(0, self.steps_per_epoch * batch_size, batch_size):
            if self.state.step >= self.total_steps:
                break
            loss = self.train_step(order[batch_start : batch_start + batch_size])
            loss_sum += loss
            steps += 1

            # Reading the loss back synchronises the device, so only every log_every.
            elapsed = time.perf_counter() - started
            shown = float(loss) if steps % log_every == 0 or steps == 1 else None
            self.callbacks.on_step(self.state.step, shown, steps * batch_size / elapsed)

        elapsed = time.perf_counter() - started
        self.state.epoch += 1
        return {
            "epoch": self.state.epoch,
            "step": self.state.step,
            "loss": float(loss_sum) / max(steps, 1),
            "lr": self.scheduler.get_last_lr()[0],
            "images_per_s": steps * batch_size / max(elapsed, 1e-9),
            "epoch_seconds": elapsed,
        }

    def fit(self) -> EvalResult:
        """Train to the end (from where a restored run stopped) and evaluate.

        Returns:
            The final evaluation, also written to eval.json.
        """
        if self.state.step == 0:
            self.write_run_info()
        train = self.config.train
        self.callbacks.on_train_start(self.total_steps, self.state.step)
        self.method.train()

        while self.state.step < self.total_steps:
            record = self.run_epoch()
            last = self.state.step >= self.total_steps
            if train.checkpoint_every and self.state.epoch % train.checkpoint_every == 0 or last:
                self.save()
            every = self.config.eval.eval_every
            if every and self.state.epoch % every == 0 and not last:
                record.update(self.evaluate().as_dict())
                self.method.train()
            self.append_metrics(record)
            self.callbacks.on_epoch_end(record)

        self.callbacks.on_train_end()
        result = self.evaluate()
        self.write_eval(result)
        return result

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line to metrics.jsonl."""
        with open(self.run_dir / METRICS, "a") as file:
            file.write(json.dumps(record) + "\n")

    # -------------------------------------------------------------------- evaluation

    def evaluate(self) -> EvalResult:
        """k-NN, linear probe and embedding effective rank on the frozen encoder."""
        splits, config = self.splits, self.config.eval
        extract = lambda model, data: extract_features(  # noqa: E731
            model, data, splits.mean, splits.std, self.device, config.batch_size
        )
        assert splits.train.labels is not None and splits.test.labels is not None
        train_features = extract(self.method.encoder, splits.train)
        test_features = extract(self.method.encoder, splits.test)
        result = evaluate_features(
            train_features,
            splits.train.labels,
            test_features,
            splits.test.labels,
            knn_k=config.knn_k,
            weighted_k=config.knn_weighted_k,
            temperature=config.knn_temperature,
            linear_epochs=config.linear_epochs,
            linear_lr=config.linear_lr,
            seed=self.config.train.seed,
        )

        # Effective rank of the test embeddings (head output): a collapse signal.
        self.method.head.eval()
        with torch.no_grad():
            embeddings = self.method.head(test_features)
        result.effective_rank = effective_rank(embeddings)
        logger.info("evaluation at epoch %d: %s", self.state.epoch, result.as_dict())
        return result

    def write_eval(self, result: EvalResult) -> None:
        """Save the final evaluation with the run's identity."""
        record = {
            **result.as_dict(),
            "epoch": self.state.epoch,
            "step": self.state.step,
            "revision": self.revision,
            "seed": self.config.train.seed,
            "dataset": self.config.data.dataset,
            "test_images": len(self.splits.test),
        }
        (self.run_dir / EVAL).write_text(json.dumps(record, indent=2))


def default_run_dir(config: RunConfig) -> Path:
    """runs/<date>-<time>-<dataset>-<method>"""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{config.data.dataset}-{config.loss.method}"


def resume_trainer(
    run_dir: Path, callbacks: TrainCallbacks | None = None, splits: DatasetSplits | None = None
) -> Trainer:
    """A trainer restored from ``run_dir``'s latest checkpoint, with the run's own config.

    Raises:
        CheckpointError: if the run has no readable checkpoint.
    """
    state = load_checkpoint(run_dir / CHECKPOINT)
    config = RunConfig.from_dict(state["config"])
    trainer = Trainer(config, run_dir, splits=splits, callbacks=callbacks)
    trainer.restore(state)
    return trainer
