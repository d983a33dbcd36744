"""Time batched view generation: kornia's augmentations against ours.

Both make random resized crops (scale 0.2-1), horizontal flips and brightness/contrast
jitter with independent parameters per image, on a batch of uint8 images already on
the device. Compare the result with a training step (about 200 ms for batch 256, d=2
with the default CPU model): the issue's rule is that augmentation must stay under a
tenth of it.

Usage:
    .venv/bin/python benchmarks/augment_speed.py [--images 512] [--size 28] [--channels 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from wmse.augment import AugmentConfig, ViewAugmenter


def median_ms(function, repeats: int, device: torch.device) -> float:
    """Median wall time of ``function()`` in milliseconds, after two warm-up calls."""
    times = []
    for index in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index >= 2:
            times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


def kornia_pipeline(channels: int, size: int) -> torch.nn.Module:
    """kornia's equivalent of our views: crop, flip, jitter (p=0.8), grayscale, normalise.

    For RGB it adds saturation and hue jitter and random grayscale, as ours does.
    """
    import kornia.augmentation as K

    colour = [K.ColorJitter(0.4, 0.4, p=0.8)]
    if channels == 3:
        colour = [K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), K.RandomGrayscale(p=0.1)]
    return torch.nn.Sequential(
        K.RandomResizedCrop((size, size), scale=(0.2, 1.0)),
        K.RandomHorizontalFlip(),
        *colour,
        K.Normalize(
            mean=torch.full((channels,), 0.5), std=torch.full((channels,), 0.25)
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512, help="Images (all views).")
    parser.add_argument("--size", type=int, default=28, help="Image side.")
    parser.add_argument("--channels", type=int, default=1, help="Channels.")
    parser.add_argument("--repeats", type=int, default=20, help="Timed repeats.")
    parser.add_argument("--device", default="cpu", help="cpu or cuda.")
    args = parser.parse_args()

    device = torch.device(args.device)
    shape = (args.images, args.channels, args.size, args.size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    ours = ViewAugmenter(
        AugmentConfig(), (0.5,) * args.channels, (0.25,) * args.channels
    )
    rows = [
        (
            "wmse.augment.ViewAugmenter",
            median_ms(lambda: ours(images, 1), args.repeats, device),
        )
    ]

    try:
        pipeline = kornia_pipeline(args.channels, args.size).to(device)
        rows.append(
            (
                "kornia (crop, flip, jitter, normalise)",
                median_ms(lambda: pipeline(images.float() / 255), args.repeats, device),
            )
        )
    except ImportError:
        rows.append(("kornia (not installed)", float("nan")))

    print(
        f"\n{args.images} images of {args.channels}x{args.size}x{args.size} on {device}, "
        f"torch threads {torch.get_num_threads()}\n"
    )
    print("| pipeline | median ms |")
    print("|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
    main()
