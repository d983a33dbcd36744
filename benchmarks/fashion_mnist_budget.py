"""Fixed wall-clock W-MSE run on Fashion-MNIST against two baselines.

Prints k-NN (k=5) and linear top-1 on the test split for
- raw pixels (the normalised 784 values of each image),
- a randomly initialised encoder (same architecture, before any training),
- the encoder after W-MSE training for ``--minutes`` of wall-clock time,
with the training throughput and the number of epochs done.

The budget is turned into a step count by timing a few steps first, so that the
learning-rate schedule (warm-up, then cosine) runs to completion within the budget.

Usage:
    .venv/bin/python benchmarks/fashion_mnist_budget.py --minutes 9 --views 4
    .venv/bin/python benchmarks/fashion_mnist_budget.py --minutes 60 --eval-every 5
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from datetime import datetime
from pathlib import Path

from wmse.config import RunConfig
from wmse.evaluate import evaluate_features
from wmse.train import Trainer, load_run_data, steps_for_budget

logger = logging.getLogger("benchmark")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="Training budget.")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="Train exactly this many steps instead of timing a few steps "
        "to fit --minutes (timing is off when the machine is busy).",
    )
    parser.add_argument("--views", type=int, default=4, help="Views per image d.")
    parser.add_argument("--batch-size", type=int, default=256, help="Images per step.")
    parser.add_argument("--w-size", type=int, default=128, help="Whitening sub-batch.")
    parser.add_argument("--width", type=int, default=16, help="ResNet width.")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate.")
    parser.add_argument("--seed", type=int, default=0, help="Seed.")
    parser.add_argument(
        "--eval-every", type=int, default=0, help="Evaluate every N epochs."
    )
    parser.add_argument(
        "--skip-baselines",
        action="store_true",
        help="Only train and evaluate the W-MSE encoder.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="Run folder (default runs/bench-<time>-d<views>).",
    )
    return parser.parse_args()


def make_config(args: argparse.Namespace, run_dir: Path) -> RunConfig:
    config = RunConfig()
    config.loss.views = args.views
    config.loss.w_size = args.w_size
    config.optim.batch_size = args.batch_size
    config.optim.lr = args.lr
    config.model.width = args.width
    config.train.seed = args.seed
    config.train.run_dir = str(run_dir)
    config.eval.eval_every = args.eval_every
    return config


def raw_pixel_result(config: RunConfig) -> dict[str, float]:
    """k-NN and linear accuracy on normalised pixels."""
    splits = load_run_data(config)
    assert splits.train.labels is not None and splits.test.labels is not None
    mean, std = splits.mean[0], splits.std[0]
    train = (splits.train.images.flatten(1).float() / 255 - mean) / std  # (M, 784)
    test = (splits.test.images.flatten(1).float() / 255 - mean) / std  # (Q, 784)
    return evaluate_features(
        train, splits.train.labels, test, splits.test.labels
    ).as_dict()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = args.out or Path("runs") / f"bench-{stamp}-d{args.views}"
    config = make_config(args, run_dir)
    rows: dict[str, dict] = {}

    # Baselines: raw pixels, and the encoder before training.
    if not args.skip_baselines:
        rows["raw pixels"] = raw_pixel_result(config)
        untrained = Trainer(make_config(args, Path("/tmp/wmse-benchmark-random")))
        rows["random encoder"] = untrained.evaluate().as_dict()

    # Budget -> steps, from the measured step time.
    config.train.max_steps = args.steps or steps_for_budget(config, args.minutes)
    steps_per_epoch = 60000 // config.optim.batch_size
    config.train.epochs = -(-config.train.max_steps // steps_per_epoch)
    trainer = Trainer(config)

    # Train and evaluate.
    started = time.perf_counter()
    result = trainer.fit().as_dict()
    train_seconds = time.perf_counter() - started
    steps = trainer.state.step
    result.update(
        {
            "epochs_done": steps / trainer.steps_per_epoch,
            "images_per_s": steps * config.optim.batch_size / train_seconds,
            "wall_minutes": train_seconds / 60,
        }
    )
    rows[f"W-MSE d={args.views}"] = result

    # Report.
    budget = f"{args.steps} steps" if args.steps else f"budget {args.minutes:g} min"
    print(f"\nFashion-MNIST test split, {budget}, seed {args.seed}\n")
    print("| encoder | k-NN top-1 | linear top-1 | epochs | images/s | minutes |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        extra = (
            (
                f"{row['epochs_done']:.1f} | {row['images_per_s']:.0f} | "
                f"{row['wall_minutes']:.1f}"
            )
            if "epochs_done" in row
            else "- | - | -"
        )
        print(
            f"| {name} | {row['knn_top1']:.2f} | {row['linear_top1']:.2f} | {extra} |"
        )
    (run_dir / "benchmark.json").write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "rows": rows,
                "revision": trainer.revision,
            },
            indent=2,
        )
    )
    print(f"\nsaved to {run_dir / 'benchmark.json'}")


if __name__ == "__main__":
    main()
