"""IDX reading and the Fashion-MNIST loader, on files written in the real format."""

from pathlib import Path

import pytest
import torch
from conftest import write_fashion_mnist

from wmse.data import DatasetError, load_dataset
from wmse.data.fashion_mnist import FILES, load_fashion_mnist
from wmse.data.idx import read_idx, write_idx


@pytest.mark.parametrize("name", ["plain", "packed.gz"])
def test_idx_round_trip(tmp_path: Path, name: str) -> None:
    array = torch.arange(2 * 3 * 4, dtype=torch.uint8).view(2, 3, 4)
    write_idx(tmp_path / name, array)
    assert torch.equal(read_idx(tmp_path / name), array)


def test_idx_header_bytes(tmp_path: Path) -> None:
    write_idx(tmp_path / "labels", torch.tensor([3, 1, 4], dtype=torch.uint8))
    raw = (tmp_path / "labels").read_bytes()
    # Magic 0x00000801 (unsigned byte, 1 dimension), size 3 big-endian, then the data.
    assert raw == bytes([0, 0, 8, 1, 0, 0, 0, 3, 3, 1, 4])


def test_truncated_idx_is_named(tmp_path: Path) -> None:
    write_idx(tmp_path / "images", torch.zeros(10, 28, 28, dtype=torch.uint8))
    data = (tmp_path / "images").read_bytes()
    (tmp_path / "images").write_bytes(data[:-100])
    with pytest.raises(
        DatasetError, match=r"images: IDX header says shape \(10, 28, 28\).*truncated"
    ):
        read_idx(tmp_path / "images")


def test_not_idx(tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(tmp_path / "junk")


def test_corrupt_gzip_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DatasetError, match="cannot read .*broken.gz"):
        read_idx(tmp_path / "broken.gz")


@pytest.mark.parametrize("compress", [True, False])
def test_loader_reads_a_folder(
    tmp_path: Path, no_system_dataset: None, compress: bool
) -> None:
    write_fashion_mnist(tmp_path, train=64, test=32, compress=compress)
    splits = load_fashion_mnist(tmp_path, download_ok=False)

    assert splits.pretrain.images.shape == (64, 1, 28, 28)
    assert splits.pretrain.images.dtype == torch.uint8
    assert splits.test.labels is not None and splits.test.labels.dtype == torch.int64
    assert len(splits.test) == 32
    assert splits.classes[9] == "Ankle boot"
    assert splits.source == str(tmp_path)


def test_torchvision_layout_is_found(tmp_path: Path, no_system_dataset: None) -> None:
    write_fashion_mnist(
        tmp_path / "FashionMNIST" / "raw", train=16, test=16, compress=False
    )
    assert len(load_fashion_mnist(tmp_path, download_ok=False).train) == 16


def test_real_files_match_known_values() -> None:
    from wmse.data.fashion_mnist import DEBIAN_DIR

    if not (DEBIAN_DIR / f"{FILES['train_images']}.gz").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    splits = load_fashion_mnist(None, download_ok=False)
    assert len(splits.train) == 60000 and len(splits.test) == 10000
    # The first test images are an ankle boot, a pullover and a trouser.
    assert splits.test.labels[:3].tolist() == [9, 2, 1]
    assert abs(splits.train.images.float().mean().item() / 255 - splits.mean[0]) < 1e-3


def test_missing_files_say_where_to_put_them(
    tmp_path: Path, no_system_dataset: None
) -> None:
    with pytest.raises(
        DatasetError,
        match=r"not found in .*apt-get install dataset-fashion-mnist.*train-images-idx3-ubyte",
    ):
        load_fashion_mnist(tmp_path, download_ok=False)


def test_mismatched_images_and_labels(tmp_path: Path, no_system_dataset: None) -> None:
    write_fashion_mnist(tmp_path, train=32, test=16, compress=False)
    write_idx(tmp_path / FILES["train_labels"], torch.zeros(31, dtype=torch.uint8))
    with pytest.raises(DatasetError, match=r"\(32, 28, 28\).*\(31,\).*do not form"):
        load_fashion_mnist(tmp_path, download_ok=False)


def test_unknown_dataset_name() -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'mnist2'"):
        load_dataset("mnist2")
