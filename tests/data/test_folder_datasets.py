"""The user's own image folders and ImageNet-100 through load_dataset and training."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from wmse.config import RunConfig
from wmse.data import DatasetError, load_dataset
from wmse.train import Trainer


def write_images(folder: Path, count: int, colour: tuple[int, int, int]) -> None:
    """``count`` small PNG files of one colour with a random patch."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(count)
    for index in range(count):
        pixels = torch.tensor(colour, dtype=torch.uint8).view(1, 1, 3).repeat(20, 24, 1)
        pixels[:8, :8] = torch.randint(
            0, 256, (8, 8, 3), generator=generator, dtype=torch.uint8
        )
        Image.fromarray(pixels.numpy()).save(folder / f"img{index:03d}.png")


def test_labelled_folder_with_train_and_test(tmp_path: Path) -> None:
    for split, count in (("train", 6), ("test", 3)):
        write_images(tmp_path / split / "red", count, (200, 0, 0))
        write_images(tmp_path / split / "blue", count, (0, 0, 200))
    splits = load_dataset("folder", tmp_path, image_size=16)

    assert splits.labelled
    assert splits.train.images.shape == (12, 3, 16, 16)
    assert splits.classes == ["blue", "red"]
    assert splits.test is not None and splits.test.labels is not None
    # The bottom-right corner keeps the class colour: blue images have a high blue value.
    blue = splits.test.images[splits.test.labels == 0]
    assert (blue[:, 2, -1, -1] > 150).all() and (blue[:, 0, -1, -1] < 50).all()


def test_unlabelled_folder_trains_without_evaluation(tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 40, (30, 120, 60))
    config = RunConfig()
    config.data.dataset = "folder"
    config.data.data_dir = str(tmp_path / "photos")
    config.data.image_size = 16
    config.model.width = 4
    config.model.head_hidden = 32
    config.model.embedding_dim = 8
    config.loss.views = 2
    config.loss.w_size = 32
    config.optim.batch_size = 32
    config.train.epochs = 1
    config.train.threads = 2
    trainer = Trainer(config, tmp_path / "run")

    assert not trainer.splits.labelled
    assert trainer.fit() is None
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    assert not (tmp_path / "run" / "eval.json").exists()


def test_folder_needs_a_data_dir() -> None:
    with pytest.raises(DatasetError, match="'folder' needs --data-dir"):
        load_dataset("folder")


def test_imagenet100_needs_a_class_list(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="needs --class-list"):
        load_dataset("imagenet100", tmp_path)


def test_imagenet100_through_the_registry(tmp_path: Path) -> None:
    for split in ("train", "val"):
        write_images(tmp_path / split / "n01", 2, (255, 0, 0))
        write_images(tmp_path / split / "n02", 2, (0, 255, 0))
        write_images(tmp_path / split / "n03", 2, (0, 0, 255))
    (tmp_path / "classes.txt").write_text("n03\nn01\n")
    splits = load_dataset(
        "imagenet100", tmp_path, image_size=8, class_list=tmp_path / "classes.txt"
    )

    assert splits.classes == ["n03", "n01"]
    assert splits.train.labels is not None
    assert sorted(splits.train.labels.tolist()) == [0, 0, 1, 1]
