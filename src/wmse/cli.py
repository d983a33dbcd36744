"""The ``wmse`` command line: ``wmse train`` and ``wmse eval``.

The command line owns all output: log records, one progress bar and the final results
table. Options are generated from the configuration dataclasses in :mod:`wmse.config`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from wmse.allocator import keep_freed_memory
from wmse.bench import StepBreakdown, measure_breakdown
from wmse.checkpoint import CheckpointError
from wmse.config import ConfigError, RunConfig
from wmse.data import DatasetError
from wmse.evaluate import EvalResult
from wmse.presets import list_presets, load_preset
from wmse.train import (
    TrainCallbacks,
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    default_run_dir,
    resume_trainer,
)
from wmse.whitening import WhiteningError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("wmse")

# Errors that mean bad input or settings: one line, no traceback unless --debug.
USER_ERRORS = (ConfigError, DatasetError, CheckpointError, WhiteningError)

# Field annotation (as a string, see `from __future__ import annotations`) -> parser type.
SCALAR_TYPES = {"int": int, "float": float, "str": str}


class ProgressBar(TrainCallbacks):
    """One tqdm bar over all training steps, showing loss, images/s and epoch."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def on_train_start(self, total_steps: int, start_step: int) -> None:
        self.bar = tqdm(
            total=total_steps, initial=start_step, unit="step", dynamic_ncols=True
        )

    def on_step(self, step: int, loss: float | None, images_per_s: float) -> None:
        assert self.bar is not None
        self.bar.update(1)
        postfix = {"img/s": f"{images_per_s:.0f}"}
        if loss is not None:
            postfix["loss"] = f"{loss:.4f}"
            self.bar.set_postfix(postfix, refresh=False)

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        logger.info(
            "epoch %d: loss %.4f, %.0f img/s%s",
            metrics["epoch"],
            metrics["loss"],
            metrics["images_per_s"],
            f", k-NN {metrics['knn_top1']:.2f}" if "knn_top1" in metrics else "",
        )

    def on_train_end(self) -> None:
        if self.bar is not None:
            self.bar.close()


def flag_names(config: RunConfig) -> list[tuple[str, str, str]]:
    """(section, field, --flag) for every option; later duplicates get a section prefix."""
    seen: set[str] = set()
    names = []
    for section in dataclasses.fields(config):
        for item in dataclasses.fields(getattr(config, section.name)):
            flag = item.name.replace("_", "-")
            if flag in seen:
                flag = f"{section.name}-{flag}"
            seen.add(flag)
            names.append((section.name, item.name, f"--{flag}"))
    return names


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per configuration field, grouped by section, help from the field."""
    defaults = RunConfig()
    groups: dict[str, argparse._ArgumentGroup] = {}
    for section, name, flag in flag_names(defaults):
        group = groups.setdefault(
            section, parser.add_argument_group(f"{section} options")
        )
        item = next(
            f for f in dataclasses.fields(getattr(defaults, section)) if f.name == name
        )
        default = getattr(getattr(defaults, section), name)
        kind = str(item.type).replace(" | None", "")
        help_text = f"{item.metadata.get('help', '')} (default: {default})"
        help_text = help_text.replace("%", "%%")  # argparse formats help with %
        dest = f"{section}.{name}"
        if kind.startswith("tuple"):
            group.add_argument(
                flag,
                dest=dest,
                type=float,
                nargs=2,
                metavar=("LOW", "HIGH"),
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif kind == "bool":
            group.add_argument(
                flag,
                dest=dest,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            group.add_argument(
                flag,
                dest=dest,
                type=SCALAR_TYPES[kind],
                default=argparse.SUPPRESS,
                help=help_text,
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wmse",
        description="Self-supervised representation learning with Whitening-MSE (W-MSE).",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="Show full tracebacks and debug logs (when reporting a bug).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train",
        help="Train an encoder with W-MSE, then evaluate it.",
        description="Train an encoder with W-MSE, then evaluate it. With no options: "
        "Fashion-MNIST, ResNet-18 at width 16, about ten minutes on 2 CPU cores.",
    )
    train.add_argument(
        "--preset",
        default=None,
        help="Start from a named recipe (`wmse presets` lists them); "
        "--config and other options override it.",
    )
    train.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML or JSON file of settings (sections as in config.json); "
        "options given on the command line override it.",
    )
    train.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="Continue the run in RUN_DIR from its latest checkpoint, with "
        "its saved settings (other options are ignored).",
    )
    add_config_options(train)

    bench = commands.add_parser(
        "bench",
        help="Time the parts of a training step and report the peak memory.",
        description="Time the parts of a training step (data, augmentation, encoder, "
        "head, loss, optimizer) with the same settings as `wmse train`, and report "
        "images/s and the peak memory. Trains a few steps; writes no files.",
    )
    bench.add_argument("--preset", default=None, help="A named recipe, as for train.")
    bench.add_argument(
        "--config", type=Path, default=None, help="TOML or JSON settings, as for train."
    )
    bench.add_argument(
        "--steps",
        type=int,
        default=10,
        help="Timed steps (the median is reported); raise it on a noisy machine.",
    )
    bench.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="Untimed steps first (allocator, kernels; more with --compile).",
    )
    add_config_options(bench)

    commands.add_parser("presets", help="List the named training recipes.")

    compare = commands.add_parser(
        "compare",
        help="Train several presets under one budget; write a table and a plot.",
        description="Train several presets (methods or settings) on one dataset under "
        "the same budget and seeds, then write results.md (laid out like the paper's "
        "Table 1) and knn_vs_time.png to --out.",
    )
    compare.add_argument(
        "presets",
        nargs="+",
        help="Preset names to compare (`wmse presets` lists them).",
    )
    compare.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="Equal wall-clock training budget per run (default: each "
        "preset's own epochs).",
    )
    compare.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="Seeds; more than one gives mean and std.",
    )
    compare.add_argument(
        "--out",
        type=Path,
        default=None,
        help="Output folder (default runs/compare-<date>-<time>).",
    )
    compare.add_argument("--data-dir", default=None, help="Dataset folder.")
    compare.add_argument(
        "--train-subset",
        type=int,
        default=None,
        help="Use only the first N training images (quick trials).",
    )
    compare.add_argument(
        "--test-subset",
        type=int,
        default=None,
        help="Evaluate on the first N test images only (quick trials).",
    )
    compare.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="Override every preset's epochs (ignored with --minutes).",
    )
    compare.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: all cores).",
    )

    export = commands.add_parser(
        "export",
        help="Write a run's encoder as safetensors (and a torchvision state dict).",
    )
    export.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="checkpoint.pt of a run (or the run's folder).",
    )
    export.add_argument("--out", type=Path, required=True, help="Output folder.")

    embed = commands.add_parser(
        "embed",
        help="Turn a folder of images into encoder features (.npy or .parquet).",
    )
    embed.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="checkpoint.pt of a run (or the run's folder).",
    )
    embed.add_argument(
        "--images",
        type=Path,
        required=True,
        help="Folder of images (searched recursively).",
    )
    embed.add_argument(
        "--out",
        type=Path,
        required=True,
        help="Output file: .npy (the paths go to the same name + .paths.txt) or "
        ".parquet (one table with a path column and an embedding column; needs "
        'pyarrow: pip install "wmse[parquet]").',
    )

    evaluate = commands.add_parser(
        "eval", help="Evaluate a saved checkpoint (k-NN, linear probe, effective rank)."
    )
    evaluate.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="checkpoint.pt of a run (or the run's folder).",
    )
    evaluate.add_argument(
        "--data-dir",
        default=None,
        help="Dataset folder, if not where the run found it.",
    )
    evaluate.add_argument(
        "--device",
        default=None,
        help="Device for evaluation (default: the run's setting).",
    )
    evaluate.add_argument(
        "--test-subset",
        type=int,
        default=None,
        help="Evaluate on the first N test images only.",
    )
    return parser


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML or JSON settings file.

    Raises:
        ConfigError: if it is missing or malformed.
    """
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from error
    try:
        values = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"config file {path} is malformed: {error}") from error
    return values.get("config", values)


def merge(base: dict[str, dict[str, Any]], update: dict[str, Any]) -> None:
    """Merge section dicts of ``update`` into ``base`` in place."""
    for section, entries in update.items():
        if not isinstance(entries, dict):
            raise ConfigError(
                f"config section {section!r} must be a table, got {entries!r}"
            )
        base.setdefault(section, {}).update(entries)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults, then the preset, then the --config file, then command-line options."""
    values: dict[str, dict[str, Any]] = {}
    if args.preset is not None:
        merge(values, load_preset(args.preset))
    if args.config is not None:
        merge(values, load_config_file(args.config))
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".")
            values.setdefault(section, {})[name] = value
    return RunConfig.from_dict(values)


def results_table(result: EvalResult, title: str) -> str:
    """The final results as an aligned text table."""
    rows = [
        ("k-NN top-1 (k=5)", f"{result.knn_top1:.2f} %"),
        ("weighted k-NN top-1 (k=200)", f"{result.knn_weighted_top1:.2f} %"),
        ("linear top-1", f"{result.linear_top1:.2f} %"),
        ("linear top-5", f"{result.linear_top5:.2f} %"),
    ]
    if result.effective_rank is not None:
        rows.append(("embedding effective rank", f"{result.effective_rank:.1f}"))
    width = max(len(name) for name, _ in rows)
    lines = [title, "-" * (width + 12)]
    lines += [f"{name:<{width}}  {value:>9}" for name, value in rows]
    return "\n".join(lines)


def run_train(args: argparse.Namespace) -> int:
    callbacks = ProgressBar()
    if args.resume is not None:
        trainer = resume_trainer(args.resume, callbacks=callbacks)
    else:
        config = config_from_args(args)
        run_dir = (
            Path(config.train.run_dir)
            if config.train.run_dir
            else default_run_dir(config)
        )
        if (run_dir / "checkpoint.pt").exists():
            raise ConfigError(
                f"{run_dir} already holds a run; use --resume {run_dir} to continue it or "
                f"choose another --run-dir"
            )
        trainer = Trainer(config, run_dir, callbacks=callbacks)
    result = trainer.fit()
    if not trainer.dist.is_main:  # under torchrun, the main process reports
        return 0
    if result is None:
        print(
            f"trained without evaluation (unlabelled data); run saved in {trainer.run_dir}"
        )
        return 0
    print(
        results_table(
            result,
            f"{trainer.config.data.dataset}, epoch {trainer.state.epoch}, "
            f"test split ({len(trainer.splits.test)} images)",
        )
    )
    print(f"run saved in {trainer.run_dir}")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    if args.steps < 1 or args.warmup < 0:
        raise ConfigError(
            f"--steps must be >= 1 and --warmup >= 0, got {args.steps} and "
            f"{args.warmup}"
        )
    config = config_from_args(args)
    trainer = Trainer(config, Path("unused-bench-run"))
    breakdown = measure_breakdown(trainer, args.steps, args.warmup)
    print(breakdown_table(breakdown, config))
    return 0


def breakdown_table(breakdown: StepBreakdown, config: RunConfig) -> str:
    """Markdown table of the parts of a step, with the totals underneath."""
    parts_total = breakdown.parts_seconds
    model = config.model
    title = (
        f"{config.data.dataset}, {config.loss.method} d={breakdown.views}, "
        f"{model.arch} width {model.width}, batch {breakdown.batch_size}, "
        f"{breakdown.device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    step_ms = 1e3 * breakdown.step_seconds
    lines = [
        title,
        "",
        "| part | ms | share |",
        "|---|---:|---:|",
    ]
    for name, seconds in breakdown.parts.items():
        lines.append(f"| {name} | {1e3 * seconds:.1f} | {seconds / parts_total:.1%} |")
    lines += [
        f"| sum of parts | {1e3 * parts_total:.1f} | 100% |",
        "",
        f"training step as run (no timing syncs): {step_ms:.1f} ms, "
        + f"{breakdown.images_per_second:.0f} images/s",
        "outside the encoder and the optimizer (data, augmentation, head, loss): "
        + f"{breakdown.overhead_share:.1%}",
        f"{breakdown.memory_kind}: {breakdown.peak_memory_bytes / 2**20:.0f} MiB",
    ]
    return "\n".join(lines)


def run_presets(args: argparse.Namespace) -> int:
    presets = list_presets()
    width = max(len(name) for name in presets)
    for name, description in presets.items():
        print(f"{name:<{width}}  {description}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from datetime import datetime

    from wmse.compare import CompareEntry, markdown_table, run_comparison

    entries = []
    for name in args.presets:
        config = RunConfig.from_dict(load_preset(name))
        if args.data_dir:
            config.data.data_dir = args.data_dir
        config.data.train_subset = args.train_subset or config.data.train_subset
        config.data.test_subset = args.test_subset or config.data.test_subset
        config.train.epochs = args.epochs or config.train.epochs
        config.train.threads = args.threads or config.train.threads
        entries.append(CompareEntry(name, config))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("runs") / f"compare-{stamp}"
    records = run_comparison(entries, out, args.minutes, tuple(args.seeds), ProgressBar)
    print(markdown_table(records, args.minutes))
    print(f"\nreport: {out / 'results.md'}, plot: {out / 'knn_vs_time.png'}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from wmse.export import export_encoder

    for kind, path in export_encoder(args.checkpoint, args.out).items():
        print(f"{kind}: {path}")
    return 0


def run_embed(args: argparse.Namespace) -> int:
    from wmse.export import check_embeddings_path, embed_folder, write_embeddings

    # Refuse an unwritable output before the images are decoded and embedded.
    check_embeddings_path(args.out)
    features, paths = embed_folder(args.checkpoint, args.images)
    written = write_embeddings(features, paths, args.out)
    print(
        f"{features.shape[0]} embeddings of size {features.shape[1]}: "
        f"{', '.join(str(path) for path in written)}"
    )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from wmse.checkpoint import load_checkpoint, load_weights

    path = (
        args.checkpoint / "checkpoint.pt"
        if args.checkpoint.is_dir()
        else args.checkpoint
    )
    state = load_checkpoint(path)
    config = RunConfig.from_dict(state["config"])
    if args.data_dir:
        config.data.data_dir = args.data_dir
    if args.device:
        config.train.device = args.device
    if args.test_subset:
        config.data.test_subset = args.test_subset
    trainer = Trainer(config, path.parent)
    load_weights(trainer.method, state["model"], str(path))
    trainer.state.epoch, trainer.state.step = state["epoch"], state["step"]
    result = trainer.evaluate()
    output = path.parent / f"eval-{path.stem}.json"
    output.write_text(
        json.dumps(
            {**result.as_dict(), "checkpoint": str(path), "epoch": state["epoch"]},
            indent=2,
        )
    )
    print(results_table(result, f"{path} (epoch {state['epoch']})"))
    print(f"written to {output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # faster CPU steps; see wmse.allocator
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    commands = {
        "train": run_train,
        "bench": run_bench,
        "eval": run_eval,
        "presets": run_presets,
        "compare": run_compare,
        "export": run_export,
        "embed": run_embed,
    }
    command = commands[args.command]
    try:
        with logging_redirect_tqdm():
            return command(args)
    except USER_ERRORS as error:
        if args.debug:
            raise
        print(f"wmse: error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"wmse: error: {error}", file=sys.stderr)
        return 1
    except TrainingInterrupted as error:
        print(f"wmse: {error}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("wmse: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
