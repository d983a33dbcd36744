"""Where the time of a training step goes: a per-part breakdown and the peak memory.

The step is cut into the parts the trainer runs in order: fetching the batch,
augmentation, encoder forward, head forward, loss forward, the backward pass through
loss and head, the backward pass through the encoder, and the optimizer step. Each
part ends with a device synchronisation (on a GPU), which the real step does not
have, so the parts add up to a little more than the real step; both are reported.
"""

from __future__ import annotations

import logging
import resource
import statistics
import time
from dataclasses import dataclass

import torch

from wmse.config import ConfigError
from wmse.methods import Method
from wmse.train import Trainer

__all__ = ["PARTS", "StepBreakdown", "measure_breakdown"]

logger = logging.getLogger(__name__)

PARTS = (
    "data (batch to device)",
    "augmentation",
    "encoder forward",
    "head forward",
    "loss forward",
    "loss + head backward",
    "encoder backward",
    "optimizer step",
)
# Parts that are neither the encoder nor the optimizer (the 10% budget).
OVERHEAD_PARTS = PARTS[:2] + PARTS[3:6]


@dataclass
class StepBreakdown:
    """Median seconds per part, the real step time and the peak memory.

    Attributes:
        parts: Part name (see ``PARTS``) -> median seconds.
        step_seconds: Median seconds of an uninstrumented training step.
        batch_size: Images per step (each seen in ``views`` views).
        views: d.
        peak_memory_bytes: CUDA: peak allocated by tensors. CPU: peak resident size of
            the whole process (dataset included).
        memory_kind: What ``peak_memory_bytes`` measures, in words.
        device: Where it ran.
    """

    parts: dict[str, float]
    step_seconds: float
    batch_size: int
    views: int
    peak_memory_bytes: int
    memory_kind: str
    device: str

    @property
    def parts_seconds(self) -> float:
        return sum(self.parts.values())

    @property
    def overhead_share(self) -> float:
        """Share of the parts' time outside the encoder and the optimizer."""
        return sum(self.parts[name] for name in OVERHEAD_PARTS) / self.parts_seconds

    @property
    def images_per_second(self) -> float:
        return self.batch_size / self.step_seconds


class PartTimer:
    """Wall time between successive ``lap`` calls, synchronising CUDA first."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: dict[str, list[float]] = {name: [] for name in PARTS}
        self.last = time.perf_counter()

    def start(self) -> None:
        self.sync()
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        self.sync()
        now = time.perf_counter()
        self.times[name].append(now - self.last)
        self.last = now

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def instrumented_step(
    trainer: Trainer, indices: torch.Tensor, timer: PartTimer
) -> None:
    """One training step cut into ``PARTS``, each timed by ``timer``."""
    method, views_per_image = trainer.method, trainer.config.loss.views
    check = trainer.check_every == 1
    timer.start()

    images = trainer.batch_images(indices)
    timer.lap("data (batch to device)")
    views = trainer.make_views(images)  # (d, N, C, H, W)
    timer.lap("augmentation")

    # Forward, with the features cut from the graph so that the two backward halves
    # can be timed apart: (d*N, F) -> (d, N, D) -> scalar.
    trainer.optimizer.zero_grad(set_to_none=True)
    with trainer.autocast():
        features = method.encoder(views.flatten(0, 1))
        timer.lap("encoder forward")
        cut = features.detach().requires_grad_()
        embeddings = method.head(cut).view(views_per_image, len(images), -1)
        timer.lap("head forward")
        loss = method.embedding_loss(embeddings, trainer.slice_generator, check)
        timer.lap("loss forward")

    loss.backward()
    timer.lap("loss + head backward")
    features.backward(cut.grad)
    timer.lap("encoder backward")
    trainer.optimizer.step()
    timer.lap("optimizer step")


def measure_breakdown(
    trainer: Trainer, steps: int = 10, warmup: int = 3
) -> StepBreakdown:
    """Time ``steps`` instrumented and ``steps`` real training steps after ``warmup``.

    Raises:
        ConfigError: for methods whose loss is not a function of the embeddings
            (BYOL), and for multi-process runs.
    """
    if type(trainer.method).forward is not Method.forward:
        raise ConfigError(
            f"wmse bench splits the step of methods whose loss depends on the "
            f"embeddings only (wmse, simclr, nowhiten), not {trainer.method.name!r}; "
            f"time it with benchmarks/pipeline_speed.py instead"
        )
    if trainer.dist.enabled:
        raise ConfigError("wmse bench runs on one process; start it without torchrun")
    device, batch_size = trainer.device, trainer.config.optim.batch_size
    order = torch.randperm(len(trainer.splits.pretrain))
    batches = [
        order[(i * batch_size) % (len(order) - batch_size + 1) :][:batch_size]
        for i in range(warmup + steps)
    ]
    trainer.method.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    # Instrumented steps for the parts, then plain steps for the real step time.
    timer = PartTimer(device)
    for number, indices in enumerate(batches):
        if number == warmup:
            timer = PartTimer(device)
        instrumented_step(trainer, indices, timer)
    step_times = []
    for number, indices in enumerate(batches):
        started = time.perf_counter()
        float(trainer.train_step(indices))  # waits for the device
        if number >= warmup:
            step_times.append(time.perf_counter() - started)

    peak, kind = peak_memory(device)
    return StepBreakdown(
        parts={name: statistics.median(times) for name, times in timer.times.items()},
        step_seconds=statistics.median(step_times),
        batch_size=batch_size,
        views=trainer.config.loss.views,
        peak_memory_bytes=peak,
        memory_kind=kind,
        device=str(device),
    )


def peak_memory(device: torch.device) -> tuple[int, str]:
    """Peak bytes and what they count: CUDA tensors, or the process's resident size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "peak CUDA memory allocated"
    # ru_maxrss is in kilobytes on Linux.
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kilobytes * 1024, "peak resident memory of the process (data included)"
