"""Run several methods or settings under one budget and report them side by side.

The report is a Markdown table laid out like the paper's Table 1 (linear top-1, top-5,
5-NN top-1, plus effective rank and images/s; mean +- std over seeds) and a PNG plot
of k-NN accuracy against training time, one line per entry.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wmse.config import RunConfig
from wmse.data import DatasetError, DatasetSplits
from wmse.train import TrainCallbacks, Trainer, load_run_data, steps_for_budget

__all__ = ["CompareEntry", "markdown_table", "plot_knn_curves", "run_comparison"]

logger = logging.getLogger(__name__)

# Table columns taken from the evaluation, in order.
TABLE_KEYS = ("linear_top1", "linear_top5", "knn_top1", "effective_rank")

# Evaluations during each run, for the accuracy-over-time plot.
EVAL_POINTS = 2


@dataclass
class CompareEntry:
    """One line of the comparison: a label and its configuration."""

    label: str
    config: RunConfig


def run_comparison(
    entries: list[CompareEntry],
    out_dir: Path,
    minutes: float | None = None,
    seeds: tuple[int, ...] = (0,),
    callbacks: Callable[[], TrainCallbacks] | None = None,
) -> list[dict[str, Any]]:
    """Train every entry for every seed under the same budget, then write the report.

    Args:
        entries: What to compare; they should share the dataset.
        out_dir: Gets one run folder per entry and seed, results.json, results.md and
            knn_vs_time.png.
        minutes: Equal wall-clock training budget per run (evaluation time excluded);
            None keeps each configuration's own epochs.
        seeds: Seeds to repeat every entry with.
        callbacks: Factory of progress hooks for each run.

    Returns:
        One record per (entry, seed): the label, seed, final evaluation, images/s and
        the k-NN curve as (training seconds, k-NN top-1) points.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    splits: DatasetSplits | None = None
    records = []
    for entry in entries:
        for seed in seeds:
            config = RunConfig.from_dict(entry.config.to_dict())
            config.train.seed = seed
            if splits is None or splits.name != config.data.dataset:
                splits = load_run_data(config)
                if not splits.labelled:
                    raise DatasetError(
                        f"comparison needs labelled train and test splits; "
                        f"{config.data.dataset} in {config.data.data_dir} has none"
                    )
            records.append(
                run_one(entry.label, config, splits, out_dir, minutes, callbacks)
            )
            (out_dir / "results.json").write_text(json.dumps(records, indent=2))

    (out_dir / "results.md").write_text(markdown_table(records, minutes) + "\n")
    plot_knn_curves(records, out_dir / "knn_vs_time.png")
    return records


def run_one(
    label: str,
    config: RunConfig,
    splits: DatasetSplits,
    out_dir: Path,
    minutes: float | None,
    callbacks: Callable[[], TrainCallbacks] | None,
) -> dict[str, Any]:
    """Train and evaluate one entry with one seed; returns its record."""
    steps_per_epoch = len(splits.pretrain) // config.optim.batch_size
    if minutes is not None:
        config.train.max_steps = steps_for_budget(config, minutes, splits)
        config.train.epochs = -(-config.train.max_steps // steps_per_epoch)
    config.eval.eval_every = max(1, config.train.epochs // EVAL_POINTS)
    run_dir = out_dir / f"{slug(label)}-seed{config.train.seed}"
    config.train.run_dir = str(run_dir)

    # Train; the periodic evaluations give the k-NN curve.
    logger.info("comparison: %s, seed %d", label, config.train.seed)
    trainer = Trainer(
        config, run_dir, splits=splits, callbacks=callbacks() if callbacks else None
    )
    result = trainer.fit()
    metrics = [
        json.loads(line)
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]

    # Training time excludes evaluation; accumulate it epoch by epoch.
    curve, seconds = [], 0.0
    for record in metrics:
        seconds += record["epoch_seconds"]
        if "knn_top1" in record:
            curve.append((seconds, record["knn_top1"]))
    curve.append((seconds, result.knn_top1))
    images = sum(r["images_per_s"] * r["epoch_seconds"] for r in metrics)
    return {
        "label": label,
        "seed": config.train.seed,
        **result.as_dict(),
        "images_per_s": images / max(seconds, 1e-9),
        "train_minutes": seconds / 60,
        "epochs": trainer.state.step / steps_per_epoch,
        "knn_curve": curve,
        "run_dir": str(run_dir),
    }


def slug(label: str) -> str:
    """A file-name-safe version of ``label``."""
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")


def mean_std(values: list[float]) -> str:
    """'m' for one value, 'm +- s' for several."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def markdown_table(records: list[dict[str, Any]], minutes: float | None) -> str:
    """Table 1 layout: one row per entry, mean (+- std) over seeds."""
    labels = list(dict.fromkeys(r["label"] for r in records))
    budget = (
        f"{minutes:g} min of training each" if minutes else "each entry's own epochs"
    )
    lines = [
        f"Budget: {budget}; seeds: {sorted({r['seed'] for r in records})}.",
        "",
        (
            "| method | linear top-1 | linear top-5 | 5-NN top-1 | effective rank "
            "| images/s | epochs |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label in labels:
        rows = [r for r in records if r["label"] == label]
        cells = [mean_std([r[key] for r in rows]) for key in TABLE_KEYS]
        speed = statistics.mean(r["images_per_s"] for r in rows)
        epochs = statistics.mean(r["epochs"] for r in rows)
        lines.append(f"| {label} | {' | '.join(cells)} | {speed:.0f} | {epochs:.1f} |")
    return "\n".join(lines)


def plot_knn_curves(records: list[dict[str, Any]], path: Path) -> None:
    """k-NN top-1 against training minutes, one line per entry (first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    seen = set()
    for record in records:
        if record["label"] in seen:
            continue
        seen.add(record["label"])
        minutes = [seconds / 60 for seconds, _ in record["knn_curve"]]
        accuracy = [value for _, value in record["knn_curve"]]
        axes.plot(minutes, accuracy, marker="o", label=record["label"])
    axes.set_xlabel("training time (minutes, evaluation excluded)")
    axes.set_ylabel("5-NN top-1 on the test split (%)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
