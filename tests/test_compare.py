"""`wmse compare`: table and plot from real (tiny) runs."""

import json
from pathlib import Path

import pytest

from wmse.cli import main
from wmse.compare import CompareEntry, markdown_table, run_comparison
from wmse.config import RunConfig

pytestmark = pytest.mark.slow


def tiny(method: str, data_dir: Path, views: int = 2) -> RunConfig:
    config = RunConfig()
    config.data.data_dir = str(data_dir)
    config.data.test_subset = 128
    config.model.width = 4
    config.model.head_hidden = 32
    config.model.embedding_dim = 16
    config.loss.method = method
    config.loss.views = views
    config.loss.w_size = 64
    config.optim.warmup_steps = 2
    config.eval.linear_epochs = 2
    config.eval.knn_weighted_k = 10
    config.train.epochs = 2
    config.train.threads = 2
    return config


def test_comparison_writes_table_plot_and_curves(
    small_fashion_mnist: Path, tmp_path: Path
) -> None:
    entries = [
        CompareEntry("W-MSE 2", tiny("wmse", small_fashion_mnist)),
        CompareEntry("nowhiten", tiny("nowhiten", small_fashion_mnist)),
    ]
    records = run_comparison(entries, tmp_path / "out", seeds=(0, 1))

    assert [(r["label"], r["seed"]) for r in records] == [
        ("W-MSE 2", 0),
        ("W-MSE 2", 1),
        ("nowhiten", 0),
        ("nowhiten", 1),
    ]
    # The periodic evaluation after epoch 1, then the final one, in time order.
    curve = records[0]["knn_curve"]
    assert len(curve) == 2 and curve[0][0] < curve[1][0]
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| W-MSE 2 |" in table and "±" in table
    png = (tmp_path / "out" / "knn_vs_time.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())) == 4


def test_markdown_table_layout() -> None:
    record = {
        "label": "x",
        "seed": 0,
        "linear_top1": 80.0,
        "linear_top5": 99.0,
        "knn_top1": 79.0,
        "effective_rank": 20.0,
        "images_per_s": 1000.0,
        "epochs": 3.0,
    }
    lines = markdown_table([record], 8).splitlines()
    assert lines[0].startswith("Budget: 8 min")
    assert lines[-1] == "| x | 80.00 | 99.00 | 79.00 | 20.00 | 1000 | 3.0 |"


def test_cli_compare_rejects_unknown_preset(capsys: pytest.CaptureFixture) -> None:
    assert main(["compare", "fashion-mnist-wmse2", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
