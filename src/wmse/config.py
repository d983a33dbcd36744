"""Typed run configuration: one dataclass per concern, gathered in :class:`RunConfig`.

Every field carries a ``help`` text in its metadata; the command line is generated from
these, so the help you read in ``wmse train --help`` is the text written here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from wmse.augment import AugmentConfig

__all__ = [
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names it and the remedy."""


def option(default: Any, help: str) -> Any:
    """A dataclass field with help text for the command line."""
    if isinstance(default, (list, dict)):
        return field(
            default_factory=lambda: type(default)(default), metadata={"help": help}
        )
    return field(default=default, metadata={"help": help})


@dataclass
class DataConfig:
    dataset: str = option(
        "fashion-mnist",
        "Dataset: fashion-mnist (CPU-sized, installed by setup.sh), cifar10, cifar100, "
        "stl10, tiny-imagenet, imagenet100 (the paper's; files in --data-dir) or "
        "folder (your own images in --data-dir; train/ and test/ class folders for "
        "evaluation). synthetic-cifar is CIFAR-shaped noise for timing only.",
    )
    data_dir: str | None = option(
        None,
        "Folder with the dataset files; if they are not there, the default system "
        "location is tried, then a download when online.",
    )
    image_size: int | None = option(
        None,
        "Side in pixels for image-folder datasets (imagenet100 default 224 - about "
        "20 GB in memory, so 64-128 is advised - and folder default 64).",
    )
    class_list: str | None = option(
        None, "imagenet100 only: text file with one class id (wnid) per line."
    )
    train_subset: int | None = option(
        None,
        "Use only the first N training images (for quick trials and tests); the "
        "evaluation uses the same N for its training split.",
    )
    test_subset: int | None = option(
        None, "Use only the first N test images (for quick trials and tests)."
    )


@dataclass
class ModelConfig:
    arch: str = option(
        "resnet18",
        "Encoder: resnet18 (the paper's), resnet34 or resnet50 (more capacity, 2-3x "
        "the cost).",
    )
    width: int = option(
        16,
        "Channels of the first ResNet stage (64 = standard ResNet). The default 16 "
        "fits a CPU budget; use 64 on a GPU to match the paper.",
    )
    stem: str = option(
        "auto",
        "First layers: 'small' (3x3 conv, no max-pool; CIFAR-style), 'small-maxpool' "
        "(3x3 conv and max-pool; the paper's STL-10 and Tiny ImageNet), 'imagenet' "
        "(7x7 stride-2 conv and max-pool), or 'auto' (small for images <= 32 px, "
        "else imagenet).",
    )
    stem_stride: int = option(
        2,
        "Stride of the 3x3 stem on small images. 2 makes every layer 4x cheaper (CPU "
        "default); the paper uses 1.",
    )
    sync_batchnorm: bool = option(
        False,
        "With several processes: synchronise BatchNorm statistics across them "
        "(slower; use when each process's share of the batch is small).",
    )
    head_hidden: int = option(
        1024,
        "Hidden units of the projection head (the paper: 1024); keep it above the "
        "embedding size.",
    )
    embedding_dim: int = option(
        64, "Embedding size D (the paper: 64 for CIFAR, 128 for larger datasets)."
    )


@dataclass
class LossConfig:
    method: str = option(
        "wmse",
        "Self-supervised method: wmse, simclr (contrastive baseline), byol (EMA "
        "target baseline) or nowhiten (the ablation that collapses).",
    )
    views: int = option(
        4,
        "Views per image d (>= 2): 4 is the paper's best variant (W-MSE 4), 2 is W-MSE "
        "2, at half the compute per image. With the CPU defaults, d=4 beat d=2 on "
        "k-NN at the same cost (README, Results).",
    )
    w_size: int = option(
        128,
        "Rows per whitening sub-batch; must divide the batch size and exceed the "
        "embedding size (2x or more is advised).",
    )
    w_iter: int = option(
        1,
        "Independent batch slicings averaged per step; raise (e.g. 4) to stabilise "
        "small sub-batches, at a small extra cost.",
    )
    w_eps: float = option(
        0.0, "Covariance shrinkage towards identity; try 1e-4 if Cholesky fails."
    )
    whitening_precision: str = option(
        "float64",
        "Arithmetic of the whitening and the loss: 'float64' (default) or 'float32' "
        "(the paper's). As training goes on, the embeddings' covariance becomes "
        "ill-conditioned and float32 whitening turns rounding error into gradient; "
        "on Fashion-MNIST that degraded W-MSE runs (README, design notes). float64 "
        "costs under 0.3% of a CPU step; choose float32 only on GPUs with slow float64.",
    )
    whitening_scope: str = option(
        "global",
        "With several processes (torchrun): 'global' gathers every process's "
        "embeddings and whitens the whole batch as one process would; 'local' whitens "
        "each process's share on its own (the paper's multi-GPU behaviour, smaller "
        "sub-batches).",
    )
    temperature: float = option(
        0.5, "SimCLR only: NT-Xent temperature (the paper's baseline: 0.5)."
    )
    byol_tau: float = option(
        0.99, "BYOL only: initial target EMA rate, raised to 1 on a cosine schedule."
    )


@dataclass
class OptimConfig:
    lr: float = option(
        2e-3,
        "Adam learning rate after warm-up, per step, not scaled by batch size (the "
        "paper: 3e-3 for CIFAR, 2e-3 otherwise). Lower it if the loss turns non-finite.",
    )
    weight_decay: float = option(
        1e-6, "Adam weight decay (the paper: 1e-6); rarely worth changing."
    )
    warmup_steps: int = option(
        500, "Steps of linear learning-rate warm-up; shorten it for very short runs."
    )
    schedule: str = option(
        "cosine",
        "After warm-up: 'cosine' decay to zero, or 'step' (x0.2 at 50 and 25 epochs "
        "before the end, the paper's schedule for its 1000-epoch runs).",
    )
    batch_size: int = option(
        256,
        "Images per step, each yielding d views; a multiple of w_size. Lower it (and "
        "w_size) when memory is short.",
    )


@dataclass
class EvalConfig:
    eval_every: int = option(
        0,
        "Evaluate every N epochs during training (0: only at the end); set it to "
        "watch accuracy grow, at about 20 s per evaluation on Fashion-MNIST.",
    )
    knn_k: int = option(
        5, "Neighbours of the majority-vote k-NN classifier (the paper reports k=5)."
    )
    knn_weighted_k: int = option(
        200, "Neighbours of the weighted k-NN classifier (200 is the common choice)."
    )
    knn_temperature: float = option(
        0.07, "Temperature of the weighted k-NN's exp(cosine / T) weights (0.07 usual)."
    )
    linear_epochs: int = option(
        100,
        "Epochs of the linear classifier on precomputed features (the paper: 500); "
        "lower for quick trials.",
    )
    linear_lr: float = option(
        1e-2, "Adam learning rate of the linear classifier (the paper: 1e-2)."
    )
    batch_size: int = option(
        1024, "Images per batch when extracting features; lower it if memory is short."
    )


@dataclass
class TrainConfig:
    epochs: int = option(
        6,
        "Training epochs; the default (with d=4) fits about ten minutes on 2 CPU "
        "cores. More epochs keep improving; the paper trains for 1000 (CIFAR) to "
        "2000 (STL-10).",
    )
    max_steps: int | None = option(
        None, "Stop after this many steps (overrides epochs; the schedule follows it)."
    )
    seed: int = option(
        0, "Seed of every random number generator; change it to measure seed spread."
    )
    device: str = option(
        "auto", "'auto' (CUDA if available), 'cpu' or 'cuda[:i]' to pick a device."
    )
    threads: int | None = option(
        None, "CPU threads for torch (default: torch's choice, usually all cores)."
    )
    run_dir: str | None = option(
        None,
        "Folder for this run's files (default: runs/<date>-<time>-<dataset>-<method>).",
    )
    checkpoint_every: int = option(
        1,
        "Write a checkpoint every N epochs (and always at the end); raise it when "
        "epochs are short and checkpoints large.",
    )
    nan_policy: str = option(
        "stop",
        "What a non-finite loss or gradient does: 'stop' the run (the last good "
        "checkpoint stays) or 'skip' the step with a warning.",
    )
    log_every: int = option(
        20,
        "Update the progress bar's loss every N steps; each update waits for the "
        "device, so raise it on fast GPUs.",
    )
    check_every: int = option(
        0,
        "Check the loss and gradients for NaN/inf every N steps; 0 means every step "
        "on the CPU (where it is free) and every 50 on a GPU (where each check waits "
        "for the device). A problem found later is reported with the step it began "
        "at. --nan-policy skip always checks every step.",
    )
    precision: str = option(
        "auto",
        "Arithmetic of the encoder and head: 'bf16' (autocast), 'fp32', or 'auto' "
        "(bf16 on CUDA, fp32 on the CPU). Whitening and the losses always run in "
        "float32.",
    )
    channels_last: bool = option(
        True,
        "Keep images and convolution weights channels-last (NHWC), which is faster "
        "on CPUs with oneDNN and on GPUs; --no-channels-last only to compare.",
    )
    compile: bool = option(
        False,
        "Compile the encoder with torch.compile: faster steps after a slow first "
        "one; needs a C++ compiler on the CPU. Worth it for long GPU runs.",
    )


@dataclass
class RunConfig:
    """Everything that defines a run; saved as JSON with every run and checkpoint."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build from a nested dict, refusing unknown sections and keys.

        Raises:
            ConfigError: naming the unknown key, or the key with a value of the wrong type.
        """
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        config = cls()
        if not isinstance(values, dict):
            raise ConfigError(
                f"a configuration must be a table of sections, got {values!r}"
            )
        for section, entries in values.items():
            if not isinstance(entries, dict):
                raise ConfigError(
                    f"config section {section!r} must be a table, got {entries!r}"
                )
            if section not in sections:
                raise ConfigError(
                    f"unknown config section {section!r}; expected one of {sorted(sections)}"
                )
            target = getattr(config, section)
            known = {f.name for f in dataclasses.fields(target)}
            for key, value in entries.items():
                if key not in known:
                    raise ConfigError(
                        f"unknown key {section}.{key}; expected one of {sorted(known)}"
                    )
                annotation = str(
                    next(f.type for f in dataclasses.fields(target) if f.name == key)
                )
                default = getattr(target, key)
                setattr(
                    target, key, coerce(f"{section}.{key}", value, annotation, default)
                )
        return config

    def validate(self) -> None:
        """Check every setting before any work starts.

        Raises:
            ConfigError: naming the bad value and the remedy.
        """
        check_ranges(self)
        check_choices(self)
        loss = self.loss
        if loss.method == "wmse":
            self.validate_whitening()
        if self.optim.schedule == "step" and self.train.epochs <= 50:
            raise ConfigError(
                f"the step schedule decays at 50 and 25 epochs before the end and needs "
                f"more than 50 epochs, got {self.train.epochs}; use --schedule cosine"
            )
        try:
            self.augment.validate()
        except ValueError as error:
            raise ConfigError(f"augment: {error}") from error

    def validate_whitening(self) -> None:
        """Batch size, w_size and embedding size must allow full, non-singular slices."""
        batch_size, w_size = self.optim.batch_size, self.loss.w_size
        dim = self.model.embedding_dim
        if batch_size < w_size:
            raise ConfigError(
                f"batch size {batch_size} is smaller than w_size {w_size}; "
                f"raise the batch size or lower w_size"
            )
        if batch_size % w_size:
            raise ConfigError(
                f"batch size {batch_size} is not a multiple of w_size {w_size}; "
                f"every whitening sub-batch must be full"
            )
        if dim >= w_size:
            raise ConfigError(
                f"embedding size {dim} must be smaller than w_size {w_size} (the "
                f"covariance would be singular); use w_size >= {2 * dim}"
            )


# Choices for string settings. The registries (encoders, methods) are checked against
# these in the tests, so that validation needs no heavy imports.
ARCHITECTURES = ("resnet18", "resnet34", "resnet50")
STEMS = ("auto", "small", "small-maxpool", "imagenet")
METHODS = ("wmse", "simclr", "byol", "nowhiten")
CHOICES = {
    "model.arch": ARCHITECTURES,
    "model.stem": STEMS,
    "loss.method": METHODS,
    "optim.schedule": ("cosine", "step"),
    "train.nan_policy": ("stop", "skip"),
    "train.precision": ("auto", "fp32", "bf16"),
    "loss.whitening_scope": ("global", "local"),
    "loss.whitening_precision": ("float64", "float32"),
}

# (field, lowest allowed value, what to tell the user); None values are always allowed.
INT_MINIMUMS = [
    ("model.width", 4, "a multiple of 4; 16 for CPU runs, 64 for the paper's network"),
    ("model.stem_stride", 1, "1 (the paper) or 2 (CPU budget)"),
    ("model.head_hidden", 1, "e.g. 1024"),
    ("model.embedding_dim", 1, "e.g. 64 or 128"),
    ("loss.views", 2, "the views of an image are each other's positives; use 2 or 4"),
    ("loss.w_size", 2, "e.g. 128 (at least twice the embedding size)"),
    ("loss.w_iter", 1, "1, or 4 to stabilise small sub-batches"),
    ("optim.batch_size", 1, "e.g. 256"),
    ("optim.warmup_steps", 0, "e.g. 500, or 0 for none"),
    ("eval.eval_every", 0, "0 evaluates only at the end"),
    ("eval.knn_k", 1, "e.g. 5"),
    ("eval.knn_weighted_k", 1, "e.g. 200"),
    ("eval.linear_epochs", 1, "e.g. 100"),
    ("eval.batch_size", 1, "e.g. 1024"),
    ("train.epochs", 1, "e.g. 6"),
    ("train.checkpoint_every", 0, "0 writes a checkpoint only at the end"),
    ("train.log_every", 1, "e.g. 20"),
    ("train.check_every", 0, "0 (automatic) or e.g. 50"),
    ("data.train_subset", 1, "leave it unset to use every image"),
    ("data.test_subset", 1, "leave it unset to use every image"),
    ("data.image_size", 8, "e.g. 64"),
    ("train.max_steps", 1, "leave it unset to train for --epochs"),
    ("train.threads", 1, "leave it unset to use every core"),
]

# Float fields that must be finite and positive (or >= 0 where marked).
POSITIVE_FLOATS = [
    "optim.lr",
    "eval.linear_lr",
    "eval.knn_temperature",
    "loss.temperature",
]
NON_NEGATIVE_FLOATS = ["optim.weight_decay"]

# Upper bound on views: each view is a full copy of the batch through the network.
MAX_VIEWS = 64


def get(config: RunConfig, name: str) -> Any:
    section, key = name.split(".")
    return getattr(getattr(config, section), key)


def check_ranges(config: RunConfig) -> None:
    """Counts, sizes and rates within their ranges. Raises ConfigError."""
    for name, lowest, advice in INT_MINIMUMS:
        value = get(config, name)
        if value is not None and value < lowest:
            raise ConfigError(f"{name} must be >= {lowest}, got {value} ({advice})")
    for name in POSITIVE_FLOATS + NON_NEGATIVE_FLOATS:
        value = get(config, name)
        bad = (
            not math.isfinite(value)
            or value < 0
            or (value == 0 and name in POSITIVE_FLOATS)
        )
        if bad:
            sign = "positive" if name in POSITIVE_FLOATS else "non-negative"
            raise ConfigError(f"{name} must be a finite {sign} number, got {value}")
    for name in ("loss.w_eps", "loss.byol_tau"):
        value = get(config, name)
        if not 0 <= value < 1:
            raise ConfigError(f"{name} must be in [0, 1), got {value}")
    if config.loss.views > MAX_VIEWS:
        raise ConfigError(
            f"loss.views = {config.loss.views} is more than {MAX_VIEWS}; the paper uses 2 "
            f"or 4, and every view costs a full pass of the network"
        )
    if config.model.width % 4:
        raise ConfigError(
            f"model.width must be a multiple of 4, got {config.model.width}"
        )
    if config.model.stem_stride > 2:
        raise ConfigError(
            f"model.stem_stride must be 1 or 2, got {config.model.stem_stride}"
        )


def check_choices(config: RunConfig) -> None:
    """String settings among their choices, and a device torch understands."""
    for name, choices in CHOICES.items():
        value = get(config, name)
        if value not in choices:
            raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")
    device = config.train.device
    if device != "auto":
        try:
            parsed = torch.device(device)
        except RuntimeError as error:
            raise ConfigError(
                f"train.device {device!r} is not a device: use 'auto', 'cpu' or 'cuda[:i]'"
            ) from error
        if parsed.type not in ("cpu", "cuda", "mps", "xpu"):
            raise ConfigError(
                f"train.device {device!r} cannot train; use 'cpu' or 'cuda'"
            )


def coerce(name: str, value: Any, annotation: str, default: Any) -> Any:
    """Check a loaded value against the field's type (from its annotation).

    Raises:
        ConfigError: naming the field, the expected type and the value.
    """
    optional = annotation.endswith("| None")
    kind = annotation.replace(" | None", "")
    if value is None and optional:
        return None
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if (
        kind == "float"
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
    ):
        return float(value)
    if kind == "str" and isinstance(value, str):
        return value
    numbers = isinstance(value, (list, tuple)) and all(
        isinstance(item, (int, float)) and not isinstance(item, bool) for item in value
    )
    if kind.startswith("tuple") and numbers and len(value) == len(default):
        return tuple(float(item) for item in value)
    expected = f"{kind} or null" if optional else kind
    raise ConfigError(f"{name} must be {expected} (default {default!r}), got {value!r}")
