"""Export to safetensors and torchvision, and embedding a folder of images."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import load_file

from wmse.cli import main
from wmse.config import RunConfig
from wmse.train import Trainer


def saved_run(data_dir: Path, run_dir: Path, width: int) -> Trainer:
    """An untrained run with a checkpoint (export does not care about training)."""
    config = RunConfig()
    config.data.data_dir = str(data_dir)
    config.model.width = width
    config.train.threads = 2
    trainer = Trainer(config, run_dir)
    trainer.run_dir.mkdir(parents=True)
    trainer.save()
    return trainer


def test_torchvision_resnet18_loads_the_export(
    small_fashion_mnist: Path, tmp_path: Path
) -> None:
    trainer = saved_run(small_fashion_mnist, tmp_path / "run", width=64)
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(tmp_path / "run"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )

    # torchvision's ResNet-18 with the run's stem (1 channel, 3x3 stride 2, no max-pool).
    model = torchvision.models.resnet18()
    model.conv1 = torch.nn.Conv2d(1, 64, 3, 2, 1, bias=False)
    model.maxpool = torch.nn.Identity()
    model.fc = torch.nn.Identity()
    missing, unexpected = model.load_state_dict(
        torch.load(tmp_path / "out" / "encoder-torchvision.pt", weights_only=True)
    )
    assert missing == [] and unexpected == []

    images = torch.randn(4, 1, 28, 28)
    ours = trainer.method.encoder.eval()(images)
    torch.testing.assert_close(model.eval()(images), ours)

    weights = load_file(str(tmp_path / "out" / "encoder.safetensors"))
    torch.testing.assert_close(
        weights["conv1.weight"], trainer.method.encoder.conv1.weight
    )


def test_narrow_encoder_exports_safetensors_only(
    small_fashion_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    saved_run(small_fashion_mnist, tmp_path / "run", width=16)
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(tmp_path / "run"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    assert "safetensors" in capsys.readouterr().out
    assert not (tmp_path / "out" / "encoder-torchvision.pt").exists()


def test_embed_a_folder(
    small_fashion_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    trainer = saved_run(small_fashion_mnist, tmp_path / "run", width=16)
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for index, where in enumerate(["a.png", "b.jpg", "sub/c.png"]):
        Image.new("RGB", (40, 30), (index * 80, 100, 50)).save(folder / where)

    out = tmp_path / "emb.npy"
    assert (
        main(
            [
                "embed",
                "--checkpoint",
                str(tmp_path / "run"),
                "--images",
                str(folder),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    features = np.load(out)
    paths = (tmp_path / "emb.paths.txt").read_text().splitlines()
    assert features.shape == (3, trainer.method.encoder.feature_dim)
    assert [Path(p).name for p in paths] == ["a.png", "b.jpg", "c.png"]
    assert np.isfinite(features).all()
    assert not np.allclose(features[0], features[2])


def photo_folder(folder: Path) -> Path:
    """Three small photos, one in a sub-folder: a.png, b.jpg, sub/c.png."""
    (folder / "sub").mkdir(parents=True)
    for index, where in enumerate(["a.png", "b.jpg", "sub/c.png"]):
        Image.new("RGB", (40, 30), (index * 80, 100, 50)).save(folder / where)
    return folder


def embed(run: Path, images: Path, out: Path) -> int:
    """``wmse embed`` through the command line; returns its exit code."""
    return main(
        ["embed", "--checkpoint", str(run), "--images", str(images), "--out", str(out)]
    )


def test_embed_to_parquet_matches_npy(
    small_fashion_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    trainer = saved_run(small_fashion_mnist, tmp_path / "run", width=16)
    folder = photo_folder(tmp_path / "photos")

    # The same folder written both ways.
    assert embed(tmp_path / "run", folder, tmp_path / "emb.npy") == 0
    assert embed(tmp_path / "run", folder, tmp_path / "out" / "emb.parquet") == 0
    assert "3 embeddings of size" in capsys.readouterr().out
    assert not (tmp_path / "out" / "emb.paths.txt").exists()

    # One table: path strings and fixed-size lists of F float32.
    F = trainer.method.encoder.feature_dim
    table = pq.read_table(tmp_path / "out" / "emb.parquet")
    assert table.column_names == ["path", "embedding"]
    assert table.schema.field("path").type == pa.string()
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), F)

    # Same paths and the same values, in the same order, as the .npy output.
    listing = (tmp_path / "emb.paths.txt").read_text().splitlines()
    assert table.column("path").to_pylist() == listing
    assert [Path(p).name for p in listing] == ["a.png", "b.jpg", "c.png"]
    embedding = table.column("embedding").combine_chunks()
    features = embedding.flatten().to_numpy().reshape(len(table), F)  # (N, F)
    np.testing.assert_array_equal(features, np.load(tmp_path / "emb.npy"))


@pytest.mark.parametrize("name", ["emb.csv", "emb", "emb.npz", "emb.NPY"])
def test_embed_refuses_an_unknown_suffix_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture, name: str
) -> None:
    # The checkpoint does not even exist: the output is checked first.
    code = embed(tmp_path / "no-run", tmp_path, tmp_path / name)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("wmse: error: ")
    assert str(tmp_path / name) in err and "*.npy" in err and "*.parquet" in err
    assert list(tmp_path.iterdir()) == []


def test_parquet_without_pyarrow_names_the_remedy(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes `import pyarrow` raise ImportError.
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    code = embed(tmp_path / "no-run", tmp_path, tmp_path / "emb.parquet")
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1
    assert 'pip install "wmse[parquet]"' in err and ".npy" in err


def test_embed_on_a_non_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    code = main(
        [
            "embed",
            "--checkpoint",
            str(tmp_path / "junk.pt"),
            "--images",
            str(tmp_path),
            "--out",
            str(tmp_path / "e.npy"),
        ]
    )
    assert code == 2
    assert "is not a readable checkpoint" in capsys.readouterr().err


def test_checkpoint_from_another_architecture(
    small_fashion_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    saved_run(small_fashion_mnist, tmp_path / "run", width=16)
    # Pretend the run was configured with width 8: the weights no longer fit.
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    state["config"]["model"]["width"] = 8
    torch.save(state, tmp_path / "run" / "checkpoint.pt")

    assert main(["eval", "--checkpoint", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "does not fit the configured model" in err and "other shape" in err
    assert len(err.splitlines()) == 1 and len(err) < 600
