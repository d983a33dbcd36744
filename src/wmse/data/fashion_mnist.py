"""Fashion-MNIST: 70,000 28x28 grayscale photos of clothing in 10 classes."""

from __future__ import annotations

import logging
from pathlib import Path

from wmse.data.base import DatasetError, DatasetSplits, ImageDataset, one_line
from wmse.data.idx import read_idx

__all__ = ["DEBIAN_DIR", "FILES", "load_fashion_mnist"]

logger = logging.getLogger(__name__)

# Where Debian's dataset-fashion-mnist package installs the IDX files.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

# Pixel statistics of the training split, in [0, 1] units.
MEAN, STD = (0.2860,), (0.3530,)


def find_file(folder: Path, stem: str) -> Path | None:
    """The IDX file ``stem`` in ``folder`` (plain or .gz), or None."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_folder(data_dir: Path | None) -> Path | None:
    """The first folder holding all four files: data_dir, its torchvision layout, Debian's.

    Warns when ``data_dir`` was given but the files come from elsewhere, naming what
    ``data_dir`` lacks.
    """
    candidates = []
    if data_dir is not None:
        candidates += [data_dir, data_dir / "FashionMNIST" / "raw"]
    candidates.append(DEBIAN_DIR)
    for folder in candidates:
        if all(find_file(folder, stem) for stem in FILES.values()):
            if data_dir is not None and folder == DEBIAN_DIR:
                missing = [
                    stem for stem in FILES.values() if not find_file(data_dir, stem)
                ]
                logger.warning(
                    "--data-dir %s lacks %s; using the system copy in %s instead",
                    data_dir,
                    ", ".join(missing),
                    folder,
                )
            return folder
    return None


def download(data_dir: Path) -> Path:
    """Download through torchvision (needs internet); returns the folder with the files."""
    from torchvision.datasets import FashionMNIST

    logger.info("Fashion-MNIST not found locally; downloading to %s", data_dir)
    try:
        FashionMNIST(str(data_dir), train=True, download=True)
    except Exception as error:
        raise DatasetError(
            f"Fashion-MNIST files not found in {data_dir} or {DEBIAN_DIR}, and the "
            f"download failed ({one_line(error)}). Install them with "
            f"`apt-get install dataset-fashion-mnist`, or put {', '.join(FILES.values())} "
            f"(optionally .gz) in {data_dir}."
        ) from error
    return data_dir / "FashionMNIST" / "raw"


def load_split(folder: Path, images_key: str, labels_key: str) -> ImageDataset:
    """Read one split's images (N, 1, 28, 28) and labels (N,)."""
    images_path = find_file(folder, FILES[images_key])
    labels_path = find_file(folder, FILES[labels_key])
    assert images_path is not None and labels_path is not None  # found by find_folder
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dim() != 3 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{images_path} (shape {tuple(images.shape)}) and {labels_path} (shape "
            f"{tuple(labels.shape)}) do not form an image/label pair; replace both "
            f"with fresh copies of the same split"
        )
    if int(labels.max()) >= len(CLASSES):
        raise DatasetError(
            f"{labels_path} holds label {int(labels.max())}; expected 0-9, replace it "
            f"with a fresh copy"
        )
    return ImageDataset(images.unsqueeze(1), labels.long())


def load_fashion_mnist(
    data_dir: Path | None = None, download_ok: bool = True
) -> DatasetSplits:
    """Load Fashion-MNIST into memory.

    Looks in ``data_dir`` (plain or .gz IDX files, directly or in torchvision's
    ``FashionMNIST/raw`` layout), then in Debian's /usr/share/datasets/fashion-mnist,
    then downloads through torchvision into ``data_dir`` when ``download_ok``.

    Returns:
        Splits with pretrain = train = the 60,000 training images, test = 10,000.

    Raises:
        DatasetError: if the files are missing and cannot be downloaded, or are corrupt.
    """
    folder = find_folder(data_dir)
    if folder is None:
        if not download_ok or data_dir is None:
            raise DatasetError(
                f"Fashion-MNIST files not found in {data_dir or '(no --data-dir)'} or "
                f"{DEBIAN_DIR}. Install them with `apt-get install dataset-fashion-mnist`, "
                f"or put {', '.join(FILES.values())} (optionally .gz) in --data-dir."
            )
        folder = download(data_dir)
    logger.info("reading Fashion-MNIST from %s", folder)

    train = load_split(folder, "train_images", "train_labels")
    test = load_split(folder, "test_images", "test_labels")
    return DatasetSplits(
        name="fashion-mnist",
        pretrain=train,
        train=train,
        test=test,
        classes=list(CLASSES),
        mean=MEAN,
        std=STD,
        source=str(folder),
    )
