"""Bad input, everywhere it enters, through the real command line.

Each case the issue lists (missing or corrupt dataset files, an unreadable image, a
config with an unknown key or a wrong type, w_size larger than the batch, d < 2, an
embedding size larger than w_size, a checkpoint from another architecture) must end
with exit code 2 and one line, ``wmse: error: ...``, that names the bad value and the
remedy, with no traceback unless --debug.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from wmse.cli import main
from wmse.config import RunConfig
from wmse.data.fashion_mnist import FILES
from wmse.data.idx import write_idx
from wmse.train import Trainer


def fails_cleanly(
    argv: list[str], capsys: pytest.CaptureFixture, values: list[str], remedy: str
) -> str:
    """Run ``wmse argv``; check exit code 2 and one error line naming values and remedy.

    Returns:
        The error line.
    """
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("wmse: error: "), line
    for value in values:
        assert value in line, f"{value!r} not named in: {line}"
    assert remedy in line, f"remedy {remedy!r} not in: {line}"
    return line


def train_argv(tmp_path: Path, *options: str) -> list[str]:
    """``wmse train`` into tmp_path/run, followed by ``options``."""
    return ["train", "--run-dir", str(tmp_path / "run"), *options]


# ---------------------------------------------------------------------------------
# Missing dataset files
# ---------------------------------------------------------------------------------


def offline(*args: object, **kwargs: object) -> None:
    """A torchvision dataset class without network, failing with a multi-line error."""
    raise RuntimeError(
        "Error downloading train-images-idx3-ubyte.gz:\nTried http://example/, got:\n"
        "<urlopen error [Errno -2] Name or service not known>\n"
    )


def test_missing_fashion_mnist(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    no_system_dataset: None,
) -> None:
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    empty = tmp_path / "empty"
    empty.mkdir()
    line = fails_cleanly(
        train_argv(tmp_path, "--data-dir", str(empty)),
        capsys,
        values=[str(empty), "train-images-idx3-ubyte", "Name or service not known"],
        remedy="apt-get install dataset-fashion-mnist",
    )
    assert "download failed" in line
    assert not (tmp_path / "run").exists()


def test_missing_cifar10(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    fails_cleanly(
        train_argv(tmp_path, "--dataset", "cifar10", "--data-dir", str(tmp_path)),
        capsys,
        values=["cifar-10-batches-py", "data_batch_1"],
        remedy="Download and extract",
    )


def test_missing_tiny_imagenet(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fails_cleanly(
        train_argv(tmp_path, "--dataset", "tiny-imagenet", "--data-dir", str(tmp_path)),
        capsys,
        values=[str(tmp_path), "wnids.txt"],
        remedy="unzip it in",
    )


def test_missing_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "no-such-folder"
    fails_cleanly(
        train_argv(tmp_path, "--dataset", "folder", "--data-dir", str(missing)),
        capsys,
        values=[str(missing)],
        remedy="pass the folder that holds the images",
    )


# ---------------------------------------------------------------------------------
# Corrupt dataset files
# ---------------------------------------------------------------------------------


def truncate(path: Path) -> None:
    """Cut the gzip stream in half."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def break_deflate(path: Path) -> None:
    """Valid gzip header, then a deflate block of the reserved type (zlib.error)."""
    data = gzip.compress(b"\0" * 1000)
    path.write_bytes(data[:10] + bytes([0x07]) + data[11:])


def not_idx(path: Path) -> None:
    """A well-formed gzip file whose content is not IDX."""
    path.write_bytes(gzip.compress(b"<html>404 Not Found</html>"))


def short_payload(path: Path) -> None:
    """An IDX header for 1,024 images over the bytes of 10."""
    write_idx(path, torch.zeros(10, 28, 28, dtype=torch.uint8))
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[4:8] = (1024).to_bytes(4, "big")
    path.write_bytes(gzip.compress(bytes(data)))


@pytest.mark.parametrize(
    ("damage", "symptom"),
    [
        (truncate, "Compressed file ended"),
        (break_deflate, "invalid block type"),
        (not_idx, "not an IDX file"),
        (short_payload, "truncated or corrupt"),
    ],
)
def test_corrupt_fashion_mnist(
    small_fashion_mnist: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    damage: Callable[[Path], None],
    symptom: str,
) -> None:
    broken = small_fashion_mnist / f"{FILES['train_images']}.gz"
    damage(broken)
    line = fails_cleanly(
        train_argv(tmp_path, "--data-dir", str(small_fashion_mnist)),
        capsys,
        values=[str(broken)],
        remedy="replace it with a fresh copy",
    )
    assert symptom in line


# ---------------------------------------------------------------------------------
# An unreadable image in a folder
# ---------------------------------------------------------------------------------


def folder_with_a_bad_image(folder: Path) -> Path:
    """Two good photos and bad.png, which is not an image; returns bad.png's path."""
    folder.mkdir(parents=True)
    for index in range(2):
        Image.new("RGB", (40, 30), (index * 80, 100, 50)).save(folder / f"{index}.png")
    bad = folder / "bad.png"
    bad.write_bytes(b"this is not a PNG")
    return bad


def test_unreadable_image_in_a_training_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wmse.data import image_folder

    # One decoding worker: the failure still travels back from a worker process.
    monkeypatch.setattr(image_folder, "default_workers", lambda: 1)
    bad = folder_with_a_bad_image(tmp_path / "photos")
    fails_cleanly(
        train_argv(
            tmp_path,
            "--dataset",
            "folder",
            "--data-dir",
            str(bad.parent),
            "--image-size",
            "16",
        ),
        capsys,
        values=[str(bad), "UnidentifiedImageError"],
        remedy="Replace or delete the file",
    )


@pytest.fixture
def saved_run(small_fashion_mnist: Path, tmp_path: Path) -> Path:
    """An untrained width-16 run with a checkpoint; returns its folder."""
    config = RunConfig()
    config.data.data_dir = str(small_fashion_mnist)
    config.train.threads = 2
    trainer = Trainer(config, tmp_path / "saved")
    trainer.run_dir.mkdir(parents=True)
    trainer.save()
    return trainer.run_dir


def test_unreadable_image_to_embed(
    saved_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = folder_with_a_bad_image(tmp_path / "photos")
    out = tmp_path / "emb.npy"
    fails_cleanly(
        [
            "embed",
            "--checkpoint",
            str(saved_run),
            "--images",
            str(bad.parent),
            "--out",
            str(out),
        ],
        capsys,
        values=[str(bad)],
        remedy="Replace or delete the file",
    )
    assert not out.exists()


# ---------------------------------------------------------------------------------
# Config files: unknown keys and wrong types
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "values", "remedy"),
    [
        ("typo.toml", "[loss]\nwsize = 64\n", ["loss.wsize"], "'w_size'"),
        ("section.toml", "[losses]\nw_size = 64\n", ["'losses'"], "'loss'"),
        (
            "typo.json",
            json.dumps({"optim": {"learning_rate": 0.1}}),
            ["optim.learning_rate"],
            "'lr'",
        ),
    ],
)
def test_config_with_an_unknown_key(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    name: str,
    text: str,
    values: list[str],
    remedy: str,
) -> None:
    config = tmp_path / name
    config.write_text(text)
    line = fails_cleanly(
        train_argv(tmp_path, "--config", str(config)), capsys, values, remedy
    )
    assert "expected one of" in line  # the remedy: the valid names
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("name", "text", "values", "remedy"),
    [
        (
            "type.toml",
            '[loss]\nw_size = "big"\n',
            ["loss.w_size", "'big'"],
            "must be int",
        ),
        (
            "type.json",
            json.dumps({"optim": {"lr": "fast"}}),
            ["optim.lr", "'fast'"],
            "must be float",
        ),
        (
            "flag.toml",
            "[train]\nepochs = true\n",
            ["train.epochs", "True"],
            "must be int",
        ),
    ],
)
def test_config_with_a_wrong_type(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    name: str,
    text: str,
    values: list[str],
    remedy: str,
) -> None:
    config = tmp_path / name
    config.write_text(text)
    fails_cleanly(train_argv(tmp_path, "--config", str(config)), capsys, values, remedy)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------
# Whitening settings: w_size larger than the batch, d < 2, D larger than w_size
# ---------------------------------------------------------------------------------


def test_w_size_larger_than_the_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    fails_cleanly(
        train_argv(tmp_path, "--batch-size", "64", "--w-size", "128"),
        capsys,
        values=["batch size 64", "w_size 128"],
        remedy="raise the batch size or lower w_size",
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("views", ["1", "0"])
def test_fewer_than_two_views(
    tmp_path: Path, capsys: pytest.CaptureFixture, views: str
) -> None:
    fails_cleanly(
        train_argv(tmp_path, "--views", views),
        capsys,
        values=["loss.views", f"got {views}"],
        remedy="use 2 or 4",
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("dim", ["128", "256"])
def test_embedding_size_not_below_w_size(
    tmp_path: Path, capsys: pytest.CaptureFixture, dim: str
) -> None:
    fails_cleanly(
        train_argv(tmp_path, "--embedding-dim", dim, "--w-size", "128"),
        capsys,
        values=[f"embedding size {dim}", "w_size 128"],
        remedy=f"use w_size >= {2 * int(dim)}",
    )
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------
# A checkpoint from another architecture
# ---------------------------------------------------------------------------------


def rewrite_config(run_dir: Path, section: str, key: str, value: object) -> None:
    """Change one stored setting, so that the stored weights no longer fit it."""
    path = run_dir / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state["config"][section][key] = value
    torch.save(state, path)


def test_eval_a_checkpoint_of_another_width(
    saved_run: Path, capsys: pytest.CaptureFixture
) -> None:
    rewrite_config(saved_run, "model", "width", 8)
    line = fails_cleanly(
        ["eval", "--checkpoint", str(saved_run)],
        capsys,
        values=[str(saved_run / "checkpoint.pt"), "other shape"],
        remedy="use a checkpoint saved with these settings",
    )
    assert len(line) < 600


def test_embed_with_a_checkpoint_of_another_arch(
    saved_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rewrite_config(saved_run, "model", "arch", "resnet34")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 30)).save(photos / "a.png")
    fails_cleanly(
        [
            "embed",
            "--checkpoint",
            str(saved_run),
            "--images",
            str(photos),
            "--out",
            str(tmp_path / "emb.npy"),
        ],
        capsys,
        values=[str(saved_run), "missing"],
        remedy="use a checkpoint saved with these settings",
    )


def test_resume_with_a_checkpoint_of_another_embedding_size(
    saved_run: Path, capsys: pytest.CaptureFixture
) -> None:
    rewrite_config(saved_run, "model", "embedding_dim", 32)
    fails_cleanly(
        ["train", "--resume", str(saved_run)],
        capsys,
        values=[str(saved_run), "other shape"],
        remedy="use a checkpoint saved with these settings",
    )


def test_eval_a_plain_state_dict(
    saved_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # A torchvision-style state dict (what `wmse export` writes) is no checkpoint.
    encoder = tmp_path / "encoder.pt"
    state = torch.load(saved_run / "checkpoint.pt", weights_only=True)["model"]
    torch.save(state, encoder)
    fails_cleanly(
        ["eval", "--checkpoint", str(encoder)],
        capsys,
        values=[str(encoder), "not a wmse checkpoint"],
        remedy="pass a run folder or its checkpoint.pt",
    )


# ---------------------------------------------------------------------------------
# A real process: no traceback without --debug, the traceback with it
# ---------------------------------------------------------------------------------


def run_wmse(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m wmse argv`` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "wmse", *argv],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_real_process_prints_one_line(tmp_path: Path) -> None:
    result = run_wmse("train", "--views", "1", "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""

    # The error is the last line of stderr (log records may precede it) and whole.
    lines = result.stderr.splitlines()
    assert [line for line in lines if "wmse: error:" in line] == lines[-1:]
    assert lines[-1].startswith("wmse: error: loss.views must be >= 2, got 1")
    assert "use 2 or 4" in lines[-1]
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_wmse(
        "--debug", "train", "--views", "1", "--run-dir", "run", cwd=tmp_path
    )
    assert result.returncode == 1  # the uncaught exception's exit status
    assert "Traceback (most recent call last)" in result.stderr
    assert "ConfigError: loss.views must be >= 2, got 1" in result.stderr
    assert "wmse: error:" not in result.stderr
