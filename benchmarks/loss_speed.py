"""Forward+backward time of wmse_loss against the naive loop reference.

Prints a Markdown table: median milliseconds per forward+backward pass of the
vectorised :func:`wmse.wmse_loss` and of ``reference_wmse_loss`` (one whitening call
per iteration, sub-batch and view), both in float32, and their ratio; also ours with
float64 whitening (``dtype=torch.float64``, what ``wmse train`` uses by default) on
the same float32 views. Both draw their permutations
from a generator seeded alike, so they do the same work, which is checked once per
setting before timing. Warm-up passes are excluded; on CUDA the device is
synchronised before and after each timed pass.

Usage:
    python benchmarks/loss_speed.py --repeats 20 --device auto [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from wmse.allocator import keep_freed_memory
from wmse.loss import wmse_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_loss import reference_wmse_loss

# (N images per view, d views, W rows per sub-batch, w_iter, D embedding size)
SETTINGS = [
    (512, 2, 128, 1, 64),
    (256, 4, 128, 1, 64),
    (512, 2, 256, 4, 128),
    (1024, 4, 128, 4, 64),
]

# Passes of one implementation in a row before switching to the other.
BLOCK = 5

LossFn = Callable[[list[torch.Tensor], torch.Generator], torch.Tensor]


def make_views(
    num_rows: int, num_views: int, dim: int, device: torch.device
) -> list[torch.Tensor]:
    """d correlated float32 leaf views of shape (N, D) that require gradients."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(num_rows, dim, generator=gen)
    views = []
    for _ in range(num_views):
        noise = 0.3 * torch.randn(num_rows, dim, generator=gen)
        views.append((base + noise).to(device).requires_grad_())
    return views


def time_pass(
    loss_fn: LossFn, views: list[torch.Tensor], device: torch.device, seed: int
) -> float:
    """Seconds for one forward and backward pass of ``loss_fn`` on ``views``."""
    gen = torch.Generator(device=device).manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()

    # Forward, then gradients w.r.t. every view (nothing accumulates between passes).
    loss = loss_fn(views, gen)
    torch.autograd.grad(loss, views)

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def bench_setting(
    setting: tuple[int, int, int, int, int],
    device: torch.device,
    repeats: int,
    warmup: int,
) -> tuple[float, float, float]:
    """Median milliseconds of (ours, reference, ours in float64) for one setting."""
    num_rows, num_views, w_size, w_iter, dim = setting
    views = make_views(num_rows, num_views, dim, device)

    def ours(views: list[torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        return wmse_loss(views, w_size, w_iter, generator=gen)

    def reference(views: list[torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        return reference_wmse_loss(views, w_size, w_iter, generator=gen)

    def ours_float64(views: list[torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        return wmse_loss(views, w_size, w_iter, generator=gen, dtype=torch.float64)

    # Same seed, same slicing: the two must agree, or the timings compare other work.
    with torch.no_grad():
        mine = ours(views, torch.Generator(device=device).manual_seed(0))
        theirs = reference(views, torch.Generator(device=device).manual_seed(0))
    if not torch.allclose(mine, theirs, rtol=1e-3, atol=1e-5):
        raise RuntimeError(
            f"losses differ for setting {setting} on {device}: ours {float(mine):.6f}, "
            f"reference {float(theirs):.6f}"
        )

    # Warm-up (allocator, kernels, thread pools), then alternate blocks of BLOCK
    # passes of each, so that any drift in machine load hits both alike while each
    # block runs the way a training loop calls its loss: over and over.
    functions = (ours, reference, ours_float64)
    for seed in range(warmup):
        for function in functions:
            time_pass(function, views, device, seed)
    times: list[list[float]] = [[] for _ in functions]
    for first in range(0, repeats, BLOCK):
        seeds = range(first, min(first + BLOCK, repeats))
        for function, kept in zip(functions, times, strict=True):
            kept += [time_pass(function, views, device, seed) for seed in seeds]
    ours_ms, ref_ms, ours64_ms = (1e3 * statistics.median(kept) for kept in times)
    return ours_ms, ref_ms, ours64_ms


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats",
        type=int,
        default=20,
        help="timed passes per setting and implementation; the median is reported. "
        "Raise it (e.g. 50) on a noisy machine.",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="untimed passes per setting and implementation before timing",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch (torch.set_num_threads); 0 keeps torch's default. "
        "Use 1 on a machine shared with other jobs, where idle-waiting threads make "
        "multi-threaded timings erratic.",
    )
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto times the CPU, and CUDA too when it is available",
    )
    args = parser.parse_args()
    if args.repeats < 1 or args.warmup < 0 or args.threads < 0:
        parser.error("--repeats must be >= 1, --warmup and --threads >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but CUDA is not available")
    return args


def main() -> None:
    """Time every setting on every chosen device and print one Markdown table."""
    args = parse_args()
    keep_freed_memory()  # as the CLI does; applies to both implementations alike
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]

    # Say what was measured on: versions, threads, GPU name.
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, float32, "
        f"median of {args.repeats} forward+backward passes after {args.warmup} warm-up"
    )
    if "cuda" in devices:
        print(f"CUDA device: {torch.cuda.get_device_name()}")
    print()

    # One row per (device, setting).
    print(
        "| device | N | d | W | w_iter | D | ours (ms) | reference (ms) | ref/ours "
        "| ours, float64 (ms) | ref/ours float64 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for device_name in devices:
        device = torch.device(device_name)
        for setting in SETTINGS:
            ours_ms, ref_ms, ours64_ms = bench_setting(
                setting, device, args.repeats, args.warmup
            )
            cells = " | ".join(str(value) for value in setting)
            print(
                f"| {device_name} | {cells} | {ours_ms:.2f} | {ref_ms:.2f} | "
                f"{ref_ms / ours_ms:.1f}x | {ours64_ms:.2f} | {ref_ms / ours64_ms:.1f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
