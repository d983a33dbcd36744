"""The training loop: data order, views, loss, optimizer, schedule, checkpoints, metrics.

The loop reports progress through a :class:`TrainCallbacks` object, so the library never
prints; the command line turns the callbacks into a progress bar.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from wmse.augment import ViewAugmenter
from wmse.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from wmse.config import ConfigError, RunConfig
from wmse.data import DatasetSplits, load_dataset
from wmse.distributed import init_distributed
from wmse.evaluate import (
    EvalResult,
    effective_rank,
    evaluate_features,
    extract_features,
)
from wmse.loss import NonFiniteError
from wmse.methods import METHODS, Method
from wmse.models import ProjectionHead, build_encoder
from wmse.reproducibility import (
    code_revision,
    restore_rng_state,
    rng_state,
    seed_everything,
)
from wmse.whitening import WhiteningError

__all__ = [
    "TrainCallbacks",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "build_method",
    "load_run_data",
    "resolve_device",
    "resume_trainer",
    "steps_for_budget",
]

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
        raise ConfigError(
            f"device {name!r} requested but CUDA is not available; use --device cpu"
        )
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--precision`` on ``device``; None for float32."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return torch.bfloat16 if precision == "bf16" else None


def resolve_check_every(config: RunConfig, device: torch.device) -> int:
    """Steps between finiteness checks: 1 on the CPU and with --nan-policy skip."""
    if config.train.nan_policy == "skip":
        return 1
    if config.train.check_every:
        return config.train.check_every
    return 50 if device.type == "cuda" else 1


def load_run_data(config: RunConfig) -> DatasetSplits:
    """Load the configured dataset, cut to the configured subsets."""
    data = config.data
    splits = load_dataset(
        data.dataset,
        Path(data.data_dir) if data.data_dir else None,
        image_size=data.image_size,
        class_list=Path(data.class_list) if data.class_list else None,
    )
    if data.train_subset:
        splits.pretrain = splits.pretrain.subset(data.train_subset)
        splits.train = splits.train.subset(data.train_subset)
    if data.test_subset and splits.test is not None:
        splits.test = splits.test.subset(data.test_subset)
    return splits


def build_method(config: RunConfig, image_size: int, channels: int) -> Method:
    """Encoder, head and method as configured.

    Raises:
        ConfigError: for an unknown method.
    """
    method_name = config.loss.method
    if method_name not in METHODS:
        raise ConfigError(
            f"unknown method {method_name!r}; choose from {sorted(METHODS)}"
        )
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


def warmup_then_decay(config: RunConfig, steps_per_epoch: int, total_steps: int):
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
    """Where a run stands; saved in every checkpoint.

    A run interrupted mid-epoch keeps that epoch's image order and how many of its
    batches are done, so that resuming replays exactly the remaining batches.
    """

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps completed (skipped non-finite steps included)
    epoch_order: torch.Tensor | None = None  # (N,) order of the epoch in progress
    batches_done: int = 0  # batches of that epoch already trained
    epoch_loss_sum: float = 0.0  # running sums of the epoch in progress
    epoch_seconds: float = 0.0
    skipped_steps: int = 0


class TrainingDiverged(RuntimeError):
    """The loss or the gradients became non-finite (and the policy is to stop)."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written and the run can resume."""


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
        self.config = config
        if run_dir is None:
            run_dir = (
                Path(config.train.run_dir)
                if config.train.run_dir
                else default_run_dir(config)
            )
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(
                f"run folder {run_dir} exists and is not a folder; choose another --run-dir"
            )
        self.run_dir = run_dir
        self.device = resolve_device(config.train.device)
        self.dist = init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.check_distributed_batch()

        # Only the main process reports progress and writes files.
        self.callbacks = (
            (callbacks or TrainCallbacks()) if self.dist.is_main else TrainCallbacks()
        )
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        seed_everything(config.train.seed)

        # Data and the views made from it.
        self.splits = splits if splits is not None else load_run_data(config)
        self.check_data_fits()
        self.augmenter = ViewAugmenter(
            config.augment, self.splits.mean, self.splits.std
        )

        # Model, optimizer and schedule.
        self.method = build_method(config, self.splits.image_size, self.splits.channels)
        if self.dist.enabled and config.model.sync_batchnorm:
            if self.device.type != "cuda":
                raise ConfigError(
                    "--sync-batchnorm needs CUDA (torch's SyncBatchNorm runs on GPUs "
                    "only); drop it for CPU runs"
                )
            self.method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.method)
        self.method.to(self.device)
        self.speed_up_model()
        self.model: torch.nn.Module = self.method
        if self.dist.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.method, device_ids=device_ids)
        # One fused kernel for the whole update on GPUs; the CPU default
        # (multi-tensor) is as fast there.
        self.optimizer = torch.optim.Adam(
            self.method.parameters(),
            lr=config.optim.lr,
            weight_decay=config.optim.weight_decay,
            fused=self.device.type == "cuda" or None,
        )
        self.steps_per_epoch = len(self.splits.pretrain) // config.optim.batch_size
        self.total_steps = (
            config.train.max_steps or config.train.epochs * self.steps_per_epoch
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            warmup_then_decay(config, self.steps_per_epoch, self.total_steps),
        )

        # Independent random streams: data order, augmentation, batch slicing. The
        # augmentation stream is reseeded at every step (see augment_seed).
        seed = config.train.seed
        self.order_generator = torch.Generator().manual_seed(seed)
        self.augment_generator = torch.Generator(self.device)
        self.slice_generator = torch.Generator(self.device).manual_seed(seed + 2)
        self.state = TrainState()
        self.check_every = resolve_check_every(config, self.device)
        # First step with a non-finite loss or gradient since the last check (-1: none);
        # kept on the device so that unchecked steps never wait for it.
        self.first_bad_step = torch.full((), -1, device=self.device)
        self.stop_signal: int | None = None
        self.revision = code_revision()

    def speed_up_model(self) -> None:
        """Memory layout, mixed precision and compilation, as configured."""
        train = self.config.train
        if train.channels_last:
            self.method.to(memory_format=torch.channels_last)
        self.autocast_dtype = resolve_precision(train.precision, self.device)
        if train.compile:
            # In place, so that parameter names (and checkpoints) stay unchanged.
            self.method.encoder.compile()

    def autocast(self) -> torch.autocast:
        """Mixed-precision context for the encoder and head (a no-op in float32)."""
        return torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        )

    def check_distributed_batch(self) -> None:
        """Each process must get an equal, whitenable share of every batch."""
        world, batch_size = self.dist.world_size, self.config.optim.batch_size
        if not self.dist.enabled:
            return
        if batch_size % world:
            raise ConfigError(
                f"batch size {batch_size} does not split evenly over {world} processes"
            )
        local = batch_size // world
        loss = self.config.loss
        if (
            loss.method == "wmse"
            and loss.whitening_scope == "local"
            and local % loss.w_size
        ):
            raise ConfigError(
                f"with --whitening-scope local each of the {world} processes whitens its "
                f"own {local} images per view, which w_size {loss.w_size} must divide "
                f"(and exceed D = {self.config.model.embedding_dim}); lower --w-size, "
                f"raise --batch-size, or use --whitening-scope global"
            )

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
            "epoch_progress": {
                "order": self.state.epoch_order,
                "batches_done": self.state.batches_done,
                "loss_sum": self.state.epoch_loss_sum,
                "seconds": self.state.epoch_seconds,
                "skipped_steps": self.state.skipped_steps,
            },
            "rng": rng_state(),
            "generators": {
                "order": self.order_generator.get_state(),
                "slice": self.slice_generator.get_state(),
            },
            "config": self.config.to_dict(),
            "data": {
                "mean": list(self.splits.mean),
                "std": list(self.splits.std),
                "image_size": self.splits.image_size,
                "channels": self.splits.channels,
            },
            "revision": self.revision,
        }

    def save(self) -> None:
        """Write the checkpoint (main process only), keeping the previous one."""
        if not self.dist.is_main:
            return
        path = self.run_dir / CHECKPOINT

        # Keep the last good checkpoint as a hard link, so that checkpoint.pt exists at
        # every moment: a crash leaves either the old or the new one in place.
        if path.exists():
            link = self.run_dir / f".{PREVIOUS_CHECKPOINT}.link"
            link.unlink(missing_ok=True)
            os.link(path, link)
            os.replace(link, self.run_dir / PREVIOUS_CHECKPOINT)
        save_checkpoint(self.checkpoint_state(), path)

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint written by :meth:`save`.

        Raises:
            CheckpointError: if the checkpoint does not fit this model.
        """
        load_weights(self.method, state["model"], f"checkpoint in {self.run_dir}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        progress = state["epoch_progress"]
        self.state = TrainState(
            epoch=state["epoch"],
            step=state["step"],
            epoch_order=progress["order"],
            batches_done=progress["batches_done"],
            epoch_loss_sum=progress["loss_sum"],
            epoch_seconds=progress["seconds"],
            skipped_steps=progress["skipped_steps"],
        )
        restore_rng_state(state["rng"])
        self.order_generator.set_state(state["generators"]["order"])
        self.slice_generator.set_state(state["generators"]["slice"])
        self.drop_metrics_after(self.state.epoch)
        logger.info(
            "resumed at epoch %d, step %d (%d batches into the next epoch)",
            self.state.epoch,
            self.state.step,
            self.state.batches_done,
        )

    # ---------------------------------------------------------------------- training

    def write_run_info(self) -> None:
        """Save the resolved config, seed and code revision next to the results."""
        if not self.dist.is_main:
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"cannot create run folder {self.run_dir}: {error}"
            ) from error
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
        """Augmented views of the images at ``indices`` for the next step:
        (d, N, C, H, W) on the device."""
        self.augment_generator.manual_seed(self.augment_seed(self.state.step))
        return self.make_views(self.batch_images(indices))

    def augment_seed(self, step: int) -> int:
        """Seed of this process's augmentation at ``step``.

        A function of the run's seed, the process rank and the step alone: every
        process draws its own views, and a resumed run (with any number of processes)
        draws exactly the views an uninterrupted one would, with no generator state
        to gather from the other processes into the checkpoint.
        """
        seed, rank = self.config.train.seed, self.dist.rank
        return ((seed * 2**16 + rank) * 2**32 + step) % 2**63

    def batch_images(self, indices: torch.Tensor) -> torch.Tensor:
        """This process's uint8 images of a batch, on the device: (N, C, H, W)."""
        if self.dist.enabled:  # this process's contiguous share of the batch
            share = len(indices) // self.dist.world_size
            indices = indices[self.dist.rank * share : (self.dist.rank + 1) * share]
        return self.splits.pretrain.images[indices].to(self.device, non_blocking=True)

    def make_views(self, images: torch.Tensor) -> torch.Tensor:
        """d augmented float views of uint8 images: (d, N, C, H, W)."""
        views = self.augmenter(images, self.config.loss.views, self.augment_generator)
        if self.config.train.channels_last:  # (d, N, C, H, W) stored as NHWC per view
            views = views.flatten(0, 1).contiguous(memory_format=torch.channels_last)
            views = views.unflatten(0, (self.config.loss.views, len(images)))
        return views

    def train_step(self, indices: torch.Tensor) -> torch.Tensor:
        """One optimizer step on the batch ``indices``; returns the loss (on device).

        A non-finite loss or gradient (or embeddings that cannot be whitened) stops
        the run with :class:`TrainingDiverged`, or with ``nan_policy = "skip"`` skips
        the update with a warning. Only every ``check_every``-th step reads anything
        back from the device; the steps in between record a problem on the device,
        and the next check reports the step it began at.
        """
        check = (self.state.step + 1) % self.check_every == 0
        if check:  # earlier unchecked steps first: their problem is the root cause
            self.raise_if_diverged_since_check()
        views = self.batch_views(indices)
        self.optimizer.zero_grad(set_to_none=True)
        try:
            with self.autocast():
                loss = self.model(views, self.slice_generator, check=check)
            loss.backward()
            # The total gradient norm is finite exactly when every gradient is.
            grad_norm = torch.nn.utils.clip_grad_norm_(
                self.method.parameters(), float("inf")
            )
            finite = torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)
            problem = None
            if check:
                if not bool(finite):
                    problem = (
                        f"loss {float(loss.detach()):.4g}, "
                        f"gradient norm {float(grad_norm):.4g}"
                    )
            else:
                unseen = (self.first_bad_step < 0) & ~finite
                self.first_bad_step.masked_fill_(unseen, self.state.step + 1)
        # NOTE: under torchrun with --whitening-scope local, one process may fail
        # here while the others wait in the gradient all-reduce; with the default
        # global scope every process sees the same embeddings and fails alike.
        except (NonFiniteError, WhiteningError) as error:  # NaN embeddings, Cholesky
            loss, problem = torch.full((), float("nan"), device=self.device), str(error)

        if problem is None:
            self.optimizer.step()
        else:
            self.handle_divergence(problem)
        self.scheduler.step()
        self.state.step += 1
        self.method.after_step(self.state.step, self.total_steps)
        return loss.detach()

    def raise_if_diverged_since_check(self) -> None:
        """Report a non-finite step that unchecked steps recorded on the device.

        Raises:
            TrainingDiverged: naming the first such step; its updates (and all later
                ones) are lost, and the last good checkpoint is kept.
        """
        first_bad = int(self.first_bad_step)
        if first_bad < 0:
            return
        self.first_bad_step.fill_(-1)
        self.handle_divergence(
            f"found by the check at step {self.state.step + 1} "
            f"(--check-every {self.check_every})",
            step=first_bad,
        )

    def handle_divergence(self, problem: str, step: int | None = None) -> None:
        """Stop (default) or skip a step whose loss or gradients are not finite.

        ``step`` is the 1-based step that went wrong (default: the current one).
        """
        step = self.state.step + 1 if step is None else step
        message = (
            f"non-finite training step {step} (epoch {self.state.epoch + 1}):"
            f" {problem.rstrip('.')}. Likely causes: a learning rate too high (--lr, now "
            f"{self.config.optim.lr:g}), whitening without shrinkage (--w-eps, now "
            f"{self.config.loss.w_eps:g}; try 1e-4), or a whitening sub-batch too small "
            f"for the embedding size (--w-size {self.config.loss.w_size}, D = "
            f"{self.config.model.embedding_dim})."
        )
        if self.config.train.nan_policy == "skip":
            self.optimizer.zero_grad(set_to_none=True)
            self.state.skipped_steps += 1
            logger.warning("%s Skipped (--nan-policy skip).", message)
            return
        raise TrainingDiverged(
            f"{message} The last good checkpoint is kept in {self.run_dir}; use "
            f"--nan-policy skip to skip such steps instead."
        )

    def run_epoch(self) -> dict[str, Any]:
        """Train one epoch (or up to max_steps); returns its metrics record.

        Continues a partly done epoch when the state holds one (after a resume).

        Raises:
            TrainingInterrupted: after saving a checkpoint, when SIGINT or SIGTERM
                arrived during the epoch.
        """
        batch_size, log_every = (
            self.config.optim.batch_size,
            self.config.train.log_every,
        )
        state = self.state
        if state.epoch_order is None:
            state.epoch_order = torch.randperm(
                len(self.splits.pretrain), generator=self.order_generator
            )
            state.batches_done, state.epoch_loss_sum, state.epoch_seconds = 0, 0.0, 0.0
        loss_sum = torch.zeros((), device=self.device)
        steps, started = 0, time.perf_counter()

        for batch in range(state.batches_done, self.steps_per_epoch):
            if state.step >= self.total_steps:
                break
            indices = state.epoch_order[batch * batch_size : (batch + 1) * batch_size]
            loss = self.train_step(indices)
            loss_sum += loss.nan_to_num(0.0)
            steps += 1
            state.batches_done = batch + 1

            # Reading the loss back synchronises the device, so only every log_every.
            elapsed = time.perf_counter() - started
            shown = float(loss) if steps % log_every == 0 or steps == 1 else None
            self.callbacks.on_step(state.step, shown, steps * batch_size / elapsed)

            if self.stop_signal is not None:
                self.save_interrupted(float(loss_sum), time.perf_counter() - started)

        # Nothing unchecked may reach a checkpoint or an evaluation.
        self.raise_if_diverged_since_check()

        # Close the epoch, counting what a resumed run did before the interruption.
        elapsed = time.perf_counter() - started
        total_steps = state.batches_done
        total_loss = state.epoch_loss_sum + float(loss_sum)
        total_seconds = state.epoch_seconds + elapsed
        state.epoch += 1
        state.epoch_order, state.batches_done = None, 0
        state.epoch_loss_sum, state.epoch_seconds = 0.0, 0.0
        return {
            "epoch": state.epoch,
            "step": state.step,
            "loss": total_loss / max(total_steps, 1),
            "lr": self.scheduler.get_last_lr()[0],
            "images_per_s": steps * batch_size / max(elapsed, 1e-9),
            "epoch_seconds": total_seconds,
            "skipped_steps": state.skipped_steps,
        }

    def save_interrupted(self, loss_sum: float, seconds: float) -> None:
        """Checkpoint mid-epoch after a stop signal, then raise TrainingInterrupted."""
        self.raise_if_diverged_since_check()
        self.state.epoch_loss_sum += loss_sum
        self.state.epoch_seconds += seconds
        self.save()
        raise TrainingInterrupted(
            f"stopped by signal {self.stop_signal} at step {self.state.step}; checkpoint "
            f"saved. Continue with: wmse train --resume {self.run_dir}"
        )

    def request_stop(self, signum: int, frame: object) -> None:
        """Signal handler: finish the current step, save and stop."""
        logger.warning(
            "signal %d received: saving a checkpoint after this step", signum
        )
        self.stop_signal = signum

    def fit(self) -> EvalResult | None:
        """Train to the end (from where a restored run stopped) and evaluate.

        Returns:
            The final evaluation, also written to eval.json; None for unlabelled data,
            which is trained on but cannot be evaluated.
        """
        if self.state.step == 0:
            self.write_run_info()
        self.callbacks.on_train_start(self.total_steps, self.state.step)
        self.method.train()
        try:
            with stop_signals_handled(self.request_stop):
                self.train_epochs()
        finally:  # also on errors, so that the progress bar closes before the message
            self.callbacks.on_train_end()
        if not self.splits.labelled:
            logger.warning(
                "no labelled train and test split: evaluation skipped. For a folder of "
                "your own images, use train/<class>/ and test/<class>/ sub-folders."
            )
            return None
        if not self.dist.is_main:  # evaluation runs on the main process alone
            self.dist.barrier()
            return None
        result = self.evaluate()
        self.write_eval(result)
        self.dist.barrier()
        return result

    def train_epochs(self) -> None:
        """Epochs until the step budget is spent, with checkpoints and evaluations."""
        train = self.config.train
        while self.state.step < self.total_steps:
            record = self.run_epoch()
            last = self.state.step >= self.total_steps
            every = self.config.eval.eval_every
            if (
                every
                and self.state.epoch % every == 0
                and not last
                and self.splits.labelled
            ):
                if self.dist.is_main:
                    record.update(self.evaluate().as_dict())
                    self.method.train()
                self.dist.barrier()

            # Metrics first: a resume drops lines newer than its checkpoint.
            self.append_metrics(record)
            if (
                train.checkpoint_every
                and self.state.epoch % train.checkpoint_every == 0
                or last
            ):
                self.save()
            self.callbacks.on_epoch_end(record)

    def drop_metrics_after(self, epoch: int) -> None:
        """Forget metrics lines of epochs the checkpoint does not include."""
        path = self.run_dir / METRICS
        if not path.exists():
            return
        lines = path.read_text().splitlines()
        kept = [line for line in lines if line and json.loads(line)["epoch"] <= epoch]
        if len(kept) != len(lines):
            path.write_text("".join(line + "\n" for line in kept))

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line to metrics.jsonl (main process only)."""
        if not self.dist.is_main:
            return
        with open(self.run_dir / METRICS, "a") as file:
            file.write(json.dumps(record) + "\n")

    # -------------------------------------------------------------------- evaluation

    def evaluate(self) -> EvalResult:
        """k-NN, linear probe and embedding effective rank on the frozen encoder."""
        splits, config = self.splits, self.config.eval
        extract = lambda model, data: extract_features(
            model, data, splits.mean, splits.std, self.device, config.batch_size
        )
        if not splits.labelled:
            raise ConfigError(
                "this dataset has no labelled train and test split to evaluate"
            )
        assert splits.test is not None
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
            "test_images": len(self.splits.test) if self.splits.test is not None else 0,
        }
        (self.run_dir / EVAL).write_text(json.dumps(record, indent=2))


@contextlib.contextmanager
def stop_signals_handled(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``handler`` (main thread only), restoring after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def measure_step_seconds(
    config: RunConfig,
    splits: DatasetSplits | None = None,
    steps: int = 10,
    warmup: int = 3,
) -> float:
    """Median wall time of one training step with ``config`` on this machine.

    Used to turn a wall-clock budget into a step count before a run starts, so that the
    learning-rate schedule still completes within the budget. Writes no files.
    """
    trainer = Trainer(config, Path("unused-run-dir"), splits=splits)
    batch_size = config.optim.batch_size
    order = torch.randperm(len(trainer.splits.pretrain))
    times = []
    for step in range(warmup + steps):
        start = (step * batch_size) % (len(order) - batch_size + 1)
        started = time.perf_counter()
        loss = trainer.train_step(order[start : start + batch_size])
        float(loss)  # wait for the device
        if step >= warmup:
            times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def steps_for_budget(
    config: RunConfig, minutes: float, splits: DatasetSplits | None = None
) -> int:
    """How many steps of ``config`` fit in ``minutes`` of training on this machine."""
    seconds = measure_step_seconds(config, splits)
    steps = max(1, int(minutes * 60 / seconds))
    logger.info("%.3f s/step: %d steps fit in %g minutes", seconds, steps, minutes)
    return steps


def default_run_dir(config: RunConfig) -> Path:
    """runs/<date>-<time>-<dataset>-<method>"""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{config.data.dataset}-{config.loss.method}"


def resume_trainer(
    run_dir: Path,
    callbacks: TrainCallbacks | None = None,
    splits: DatasetSplits | None = None,
) -> Trainer:
    """A trainer restored from ``run_dir``'s latest checkpoint, with the run's own config.

    Raises:
        CheckpointError: if the run has no readable checkpoint.
    """
    try:
        state = load_checkpoint(run_dir / CHECKPOINT)
    except CheckpointError as error:
        if not (run_dir / PREVIOUS_CHECKPOINT).is_file():
            raise
        logger.warning("%s; resuming from %s instead", error, PREVIOUS_CHECKPOINT)
        state = load_checkpoint(run_dir / PREVIOUS_CHECKPOINT)
    config = RunConfig.from_dict(state["config"])
    trainer = Trainer(config, run_dir, splits=splits, callbacks=callbacks)
    trainer.restore(state)
    return trainer
