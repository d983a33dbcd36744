"""CIFAR loaders on small files written in the official python-pickle format."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from wmse.data import DatasetError, load_dataset
from wmse.data.cifar import CIFAR10_FILES, load_cifar10, load_cifar100

CIFAR10_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes bytes as Python 2 ``str`` (BINSTRING), as the official files hold them."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj: Any) -> bytes:
    """Protocol 2 pickle as Python 2 with numpy 1 wrote it (numpy.core module names)."""
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    data = buffer.getvalue()
    return data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def batch_dict(data: np.ndarray, labels: list[int], label_key: bytes) -> dict:
    """A batch dict with the official keys, all bytes (Python 2 str)."""
    return {
        b"batch_label": b"training batch 1 of 5",
        label_key: labels,
        b"data": data,
        b"filenames": [f"image_{index}.png".encode() for index in range(len(data))],
    }


def random_batch(seed: int, count: int) -> np.ndarray:
    """(count, 3072) uint8 rows."""
    return np.random.default_rng(seed).integers(0, 256, (count, 3072), dtype=np.uint8)


def write_cifar10(folder: Path, per_batch: int = 4, test_count: int = 6) -> dict:
    """Write the seven CIFAR-10 files; returns the data and labels written."""
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, tuple[np.ndarray, list[int]]] = {}
    for index, name in enumerate([*CIFAR10_FILES[:5], "test_batch"]):
        count = test_count if name == "test_batch" else per_batch
        data = random_batch(index, count)
        labels = [(index * 3 + row) % 10 for row in range(count)]
        (folder / name).write_bytes(py2_pickle(batch_dict(data, labels, b"labels")))
        written[name] = (data, labels)
    meta = {
        b"label_names": [name.encode() for name in CIFAR10_NAMES],
        b"num_cases_per_batch": per_batch,
        b"num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    return written


def test_cifar10_pixels_labels_and_names(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path / "cifar-10-batches-py")

    splits = load_cifar10(tmp_path, download_ok=False)

    # Shapes and types: 5 batches of 4 train images, 6 test images.
    assert splits.train.images.shape == (20, 3, 32, 32)
    assert splits.train.images.dtype == torch.uint8
    assert splits.train.labels is not None and splits.train.labels.dtype == torch.int64
    assert splits.test.images.shape == (6, 3, 32, 32)
    assert splits.pretrain is splits.train
    assert splits.classes == CIFAR10_NAMES
    assert splits.mean == (0.4914, 0.4822, 0.4465)

    # Pixel (c, y, x) of an image is byte c * 1024 + y * 32 + x of its row.
    data, labels = written["data_batch_2"]
    image = splits.train.images[4 + 1]  # second image of the second batch
    for channel, y, x in [(0, 0, 0), (1, 5, 7), (2, 31, 30), (0, 17, 3)]:
        assert image[channel, y, x] == data[1, channel * 1024 + y * 32 + x]
    assert splits.train.labels[4 + 1] == labels[1]

    # Every value, batches concatenated in order.
    rows = np.concatenate([written[name][0] for name in CIFAR10_FILES[:5]])
    expected = torch.from_numpy(rows).view(20, 3, 32, 32)
    assert torch.equal(splits.train.images, expected)
    test_data, test_labels = written["test_batch"]
    assert torch.equal(splits.test.images.flatten(1), torch.from_numpy(test_data))
    assert splits.test.labels is not None
    assert splits.test.labels.tolist() == test_labels


def test_cifar10_files_directly_in_data_dir_and_registry(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path)

    splits = load_dataset("cifar10", tmp_path, download_ok=False)

    assert splits.name == "cifar10"
    assert splits.source == str(tmp_path)
    assert torch.equal(
        splits.test.images.flatten(1), torch.from_numpy(written["test_batch"][0])
    )


def test_cifar10_reads_python3_pickles(tmp_path: Path) -> None:
    # Re-pickled under Python 3 (bytes keys, default protocol): same content.
    written = write_cifar10(tmp_path)
    for name in CIFAR10_FILES:
        content = pickle.loads((tmp_path / name).read_bytes(), encoding="bytes")
        (tmp_path / name).write_bytes(pickle.dumps(content))

    splits = load_cifar10(tmp_path, download_ok=False)

    assert torch.equal(
        splits.test.images.flatten(1), torch.from_numpy(written["test_batch"][0])
    )
    assert splits.classes == CIFAR10_NAMES


def write_cifar100(folder: Path) -> dict:
    """Write train, test and meta of CIFAR-100; returns the data and fine labels."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for seed, (name, count) in enumerate([("train", 12), ("test", 5)]):
        data = random_batch(10 + seed, count)
        fine = [(7 * row + seed) % 100 for row in range(count)]
        batch = batch_dict(data, fine, b"fine_labels")
        batch[b"coarse_labels"] = [label // 5 for label in fine]
        (folder / name).write_bytes(py2_pickle(batch))
        written[name] = (data, fine)
    meta = {
        b"fine_label_names": [f"fine_{index}".encode() for index in range(100)],
        b"coarse_label_names": [f"coarse_{index}".encode() for index in range(20)],
    }
    (folder / "meta").write_bytes(py2_pickle(meta))
    return written


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    written = write_cifar100(tmp_path / "cifar-100-python")

    splits = load_cifar100(tmp_path, download_ok=False)

    assert splits.train.images.shape == (12, 3, 32, 32)
    data, fine = written["train"]
    assert splits.train.images[3, 2, 10, 20] == data[3, 2 * 1024 + 10 * 32 + 20]
    assert splits.train.labels is not None and splits.test.labels is not None
    assert splits.train.labels.tolist() == fine
    assert splits.test.labels.tolist() == written["test"][1]
    assert len(splits.classes) == 100 and splits.classes[42] == "fine_42"
    assert splits.name == "cifar100"


def test_missing_files_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    (folder / "data_batch_3").unlink()

    with pytest.raises(DatasetError) as caught:
        load_cifar10(tmp_path, download_ok=False)

    message = str(caught.value)
    assert "data_batch_3" in message and str(folder) in message
    assert "data_batch_2" not in message
    assert "cifar-10-python.tar.gz" in message


def test_empty_folder_names_every_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as caught:
        load_cifar100(tmp_path, download_ok=False)

    message = str(caught.value)
    assert "train, test, meta" in message
    assert str(tmp_path / "cifar-100-python") in message


def test_truncated_pickle_is_named(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    content = (tmp_path / "data_batch_4").read_bytes()
    (tmp_path / "data_batch_4").write_bytes(content[: len(content) // 2])

    with pytest.raises(DatasetError, match="data_batch_4"):
        load_cifar10(tmp_path, download_ok=False)


def test_wrong_data_shape_is_named(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    bad = batch_dict(np.zeros((4, 3000), np.uint8), [0, 1, 2, 3], b"labels")
    (tmp_path / "test_batch").write_bytes(py2_pickle(bad))

    with pytest.raises(DatasetError, match=r"test_batch.*\(4, 3000\)"):
        load_cifar10(tmp_path, download_ok=False)


def test_label_out_of_range_is_named(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    bad = batch_dict(random_batch(0, 2), [3, 10], b"labels")
    (tmp_path / "data_batch_1").write_bytes(py2_pickle(bad))

    with pytest.raises(DatasetError, match=r"data_batch_1.*3\.\.10"):
        load_cifar10(tmp_path, download_ok=False)


class Payload:
    """An object whose unpickling would call os.system."""

    def __reduce__(self) -> tuple:
        import os

        return (os.system, ("echo should-not-run",))


def test_pickle_with_foreign_code_is_refused(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": Payload()}))

    with pytest.raises(DatasetError, match=r"batches\.meta.*refusing to load"):
        load_cifar10(tmp_path, download_ok=False)


def test_download_branch_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torchvision's CIFAR10 replaced by a stand-in that writes the files offline.
    import torchvision.datasets

    calls = []

    def fake_cifar10(root: str, train: bool, download: bool) -> None:
        calls.append((root, train, download))
        write_cifar10(Path(root) / "cifar-10-batches-py")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)

    splits = load_cifar10(tmp_path, download_ok=True)

    assert calls == [(str(tmp_path), False, True)]
    assert splits.source == str(tmp_path / "cifar-10-batches-py")


def test_failed_download_names_files_and_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets

    def offline(root: str, train: bool, download: bool) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)

    with pytest.raises(DatasetError) as caught:
        load_cifar100(tmp_path, download_ok=True)

    message = str(caught.value)
    assert "train, test, meta" in message and "network unreachable" in message
