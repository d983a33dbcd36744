"""End-to-end training throughput: `wmse train`'s step against a reference-style pipeline.

The reference-style pipeline is what the paper's code does: a DataLoader whose workers
decode each image to PIL and augment every view of it one image at a time with
torchvision transforms, then the encoder and head in float32, channels-first, and the
per-block loop loss of ``reference_loss.py``. Ours is the real ``Trainer.train_step``
(uint8 batches in memory, batched augmentation on the device, channels-last, one
batched whitening call, bf16 on CUDA). Both use the same encoder, head, batch size,
d, w_size, optimizer and augmentation settings.

Prints one Markdown table: images per second of each pipeline and the ratio ours /
reference (for each number of DataLoader workers tried, the reference's best is used
for the headline ratio).

Usage:
    python benchmarks/pipeline_speed.py --dataset fashion-mnist --steps 20
    python benchmarks/pipeline_speed.py --dataset synthetic-cifar --views 2
    python benchmarks/pipeline_speed.py --dataset synthetic-cifar --preset \
        cifar10-wmse2 --device cuda --epoch   # the GPU check (one H200)
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from wmse.allocator import keep_freed_memory
from wmse.augment import AugmentConfig
from wmse.cli import config_from_args
from wmse.config import RunConfig
from wmse.data import DatasetSplits, ImageDataset, load_dataset
from wmse.train import Trainer, build_method, resolve_device

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_loss import reference_wmse_loss

# ------------------------------------------------------------- reference-style pipeline


def pil_augmentation(
    augment: AugmentConfig,
    size: int,
    channels: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> transforms.Compose:
    """Per-image torchvision transforms equivalent to ``augment`` (PIL input)."""
    if channels == 1:  # brightness and contrast only, as our augmenter does for gray
        jitter = transforms.ColorJitter(augment.brightness, augment.contrast)
        colour = [transforms.RandomApply([jitter], p=augment.jitter_p)]
    else:
        jitter = transforms.ColorJitter(
            augment.brightness, augment.contrast, augment.saturation, augment.hue
        )
        colour = [
            transforms.RandomApply([jitter], p=augment.jitter_p),
            transforms.RandomGrayscale(p=augment.grayscale_p),
        ]
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(
                size, scale=augment.crop_scale, ratio=augment.crop_ratio
            ),
            *colour,
            transforms.RandomHorizontalFlip(p=augment.flip_p),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


class PILViews(Dataset):
    """Item i: d augmented views of image i, each made from a PIL image."""

    def __init__(
        self, images: ImageDataset, transform: transforms.Compose, views: int
    ) -> None:
        # (N, H, W, C) uint8, as the reference code's datasets hold them.
        self.array = images.images.permute(0, 2, 3, 1).numpy()
        self.transform = transform
        self.views = views

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: int) -> list[torch.Tensor]:
        pixels = self.array[index]
        image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        return [self.transform(image) for _ in range(self.views)]


def reference_images_per_second(
    config: RunConfig,
    splits: DatasetSplits,
    workers: int,
    steps: int,
    warmup: int,
    device: torch.device,
) -> float:
    """Throughput of the reference-style loop with ``workers`` DataLoader workers."""
    torch.manual_seed(config.train.seed)
    method = build_method(config, splits.image_size, splits.channels).to(device)
    optimizer = torch.optim.Adam(
        method.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
    )
    loss_config = config.loss
    dataset = PILViews(
        splits.pretrain,
        pil_augmentation(
            config.augment, splits.image_size, splits.channels, splits.mean, splits.std
        ),
        loss_config.views,
    )
    loader = DataLoader(
        dataset,
        batch_size=config.optim.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
    )
    batches = itertools.cycle(loader)
    method.train()

    def step() -> torch.Tensor:
        views = [view.to(device, non_blocking=True) for view in next(batches)]
        embeddings = method.head(method.encoder(torch.cat(views)))
        loss = reference_wmse_loss(
            embeddings.chunk(loss_config.views),
            loss_config.w_size,
            loss_config.w_iter,
            loss_config.w_eps,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return timed_throughput(step, steps, warmup, config.optim.batch_size)


# ------------------------------------------------------------------------------ ours


def our_images_per_second(
    config: RunConfig, splits: DatasetSplits, steps: int, warmup: int
) -> float:
    """Throughput of ``Trainer.train_step``, exactly as `wmse train` runs it."""
    trainer = Trainer(config, Path("unused-benchmark-run"), splits=splits)
    trainer.method.train()
    batch_size = config.optim.batch_size
    order = itertools.cycle(torch.randperm(len(splits.pretrain)).split(batch_size))

    def step() -> torch.Tensor:
        indices = next(order)
        if len(indices) < batch_size:
            indices = next(order)
        return trainer.train_step(indices)

    return timed_throughput(step, steps, warmup, batch_size)


def timed_throughput(step, steps: int, warmup: int, batch_size: int) -> float:
    """Images per second over ``steps`` calls of ``step`` after ``warmup`` calls."""
    for _ in range(warmup):
        float(step())
    started = time.perf_counter()
    for _ in range(steps - 1):
        step()
    float(step())  # wait for the device
    return steps * batch_size / (time.perf_counter() - started)


# ------------------------------------------------------------------------------ main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist",
                        help="fashion-mnist (real files) or synthetic-cifar (3x32x32 noise)")  # fmt: skip
    parser.add_argument("--preset", default=None,
                        help="start from a preset (e.g. cifar10-wmse2 for the GPU check)")  # fmt: skip
    parser.add_argument("--views", type=int, default=None, help="d (default: config's)")
    parser.add_argument("--width", type=int, default=None, help="encoder width")
    parser.add_argument("--batch-size", type=int, default=None, help="images per step")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--steps", type=int, default=20,
                        help="timed steps per pipeline (raise on a noisy machine)")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--workers", type=int, nargs="+", default=[2],
                        help="DataLoader worker counts to try for the reference")  # fmt: skip
    parser.add_argument("--epoch", action="store_true",
                        help="time ours over one whole epoch instead of --steps "
                        "(the reference's epoch is extrapolated from --steps)")  # fmt: skip
    parser.add_argument("--skip-reference", action="store_true",
                        help="time ours only")  # fmt: skip
    return parser.parse_args()


def build_config(args: argparse.Namespace) -> RunConfig:
    """The run's configuration from a preset and the overrides given."""
    values = {"data.dataset": args.dataset, "train.device": args.device}
    for key, value in (
        ("loss.views", args.views),
        ("model.width", args.width),
        ("optim.batch_size", args.batch_size),
    ):
        if value is not None:
            values[key] = value
    namespace = argparse.Namespace(preset=args.preset, config=None, **values)
    config = config_from_args(namespace)
    config.validate()
    return config


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args()
    keep_freed_memory()  # as the CLI does; applies to both pipelines alike
    config = build_config(args)
    splits = load_dataset(config.data.dataset, download_ok=False)
    device = resolve_device(config.train.device)
    model, loss = config.model, config.loss
    print(
        f"{config.data.dataset}: {model.arch} width {model.width}, batch "
        f"{config.optim.batch_size}, d={loss.views}, w_size {loss.w_size}, w_iter "
        f"{loss.w_iter}, D {model.embedding_dim}, {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {args.steps} steps after {args.warmup}\n"
    )

    our_steps = args.steps
    if args.epoch:
        our_steps = len(splits.pretrain) // config.optim.batch_size
    ours = our_images_per_second(config, splits, our_steps, args.warmup)
    rows = [(f"ours (`wmse train` step, {our_steps} steps)", "-", ours)]
    if not args.skip_reference:
        for workers in args.workers:
            reference = reference_images_per_second(
                config, splits, workers, args.steps, args.warmup, device
            )
            rows.append(
                (f"reference-style (PIL, {workers} workers)", workers, reference)
            )

    best_reference = max((row[2] for row in rows[1:]), default=float("nan"))
    images = len(splits.pretrain)
    print("| pipeline | images/s | epoch (s) | ours / this |")
    print("|---|---:|---:|---:|")
    for name, _workers, rate in rows:
        print(f"| {name} | {rate:.0f} | {images / rate:.1f} | {ours / rate:.2f}x |")
    if not args.skip_reference:
        print(f"\nours / best reference: {ours / best_reference:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
