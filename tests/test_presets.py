"""Every preset loads, validates and runs one training step on tiny data."""

import pytest
import torch

from wmse.config import ConfigError, RunConfig
from wmse.data import DatasetSplits, ImageDataset
from wmse.presets import list_presets, load_preset
from wmse.train import Trainer

# Image shape of each preset's dataset: (channels, side).
SHAPES = {
    "fashion-mnist": (1, 28),
    "cifar10": (3, 32),
    "cifar100": (3, 32),
    "stl10": (3, 64),
    "tiny-imagenet": (3, 64),
}


def tiny_splits(name: str, count: int) -> DatasetSplits:
    """Random uint8 images of the dataset's shape, 10 classes."""
    channels, side = SHAPES[name]
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (count, channels, side, side), dtype=torch.uint8, generator=generator
    )
    data = ImageDataset(images, torch.arange(count) % 10)
    return DatasetSplits(
        name,
        data,
        data,
        data.subset(32),
        [str(i) for i in range(10)],
        (0.5,) * channels,
        (0.25,) * channels,
    )


def test_every_dataset_and_method_has_presets() -> None:
    names = set(list_presets())
    for dataset in ("cifar10", "cifar100", "stl10", "tiny-imagenet"):
        assert {f"{dataset}-{m}" for m in ("wmse2", "wmse4", "simclr", "byol")} <= names
    assert {
        f"fashion-mnist-{m}" for m in ("wmse2", "wmse4", "simclr", "byol", "nowhiten")
    } <= names
    assert all(description for description in list_presets().values())


def test_paper_recipe_values() -> None:
    config = RunConfig.from_dict(load_preset("cifar10-wmse4"))
    assert (config.loss.views, config.optim.batch_size, config.loss.w_size) == (
        4,
        256,
        128,
    )
    assert (config.optim.lr, config.model.embedding_dim, config.train.epochs) == (
        3e-3,
        64,
        1000,
    )
    stl = RunConfig.from_dict(load_preset("stl10-wmse2"))
    assert (stl.loss.w_size, stl.loss.w_iter, stl.model.stem) == (
        256,
        4,
        "small-maxpool",
    )


@pytest.mark.parametrize("name", sorted(list_presets()))
def test_preset_runs_one_step(name: str, tmp_path) -> None:
    config = RunConfig.from_dict(load_preset(name))
    config.validate()

    # Keep the recipe (method, views, batch, w_size, D, stem) but shrink the network.
    config.model.width = 4
    config.model.head_hidden = 2 * config.model.embedding_dim  # rank >= D: whitenable
    config.train.threads = 2
    splits = tiny_splits(config.data.dataset, config.optim.batch_size)
    trainer = Trainer(config, tmp_path / "run", splits=splits)
    before = [p.detach().clone() for p in trainer.method.encoder.parameters()]
    loss = trainer.train_step(torch.arange(config.optim.batch_size))

    assert torch.isfinite(loss)
    after = list(trainer.method.encoder.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


def test_unknown_preset_lists_the_names() -> None:
    with pytest.raises(
        ConfigError, match="unknown preset 'cifar11-wmse2'.*cifar10-wmse2"
    ):
        load_preset("cifar11-wmse2")
