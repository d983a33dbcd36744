"""Using a trained encoder outside wmse: weight export and image embedding.

- :func:`export_encoder` writes the encoder alone as safetensors (any width) and, for
  width 64, as a plain torchvision ResNet state dict.
- :func:`embed_folder` turns a folder of images into an (N, F) feature array with the
  image paths, using the run's own normalisation and image size;
  :func:`write_embeddings` stores them as .npy (plus a paths file) or as one parquet
  table.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from wmse.checkpoint import CheckpointError, load_checkpoint, load_weights
from wmse.config import ConfigError, RunConfig
from wmse.data.base import DatasetError
from wmse.data.image_folder import IMG_EXTENSIONS, _image_files, decode_images
from wmse.evaluate import extract_features
from wmse.models import ResNetEncoder
from wmse.train import build_method

__all__ = [
    "EMBEDDING_SUFFIXES",
    "check_embeddings_path",
    "embed_folder",
    "export_encoder",
    "load_encoder",
    "write_embeddings",
]

logger = logging.getLogger(__name__)

LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)

# Output formats of write_embeddings, by file suffix.
EMBEDDING_SUFFIXES = (".npy", ".parquet")


def checkpoint_path(path: Path) -> Path:
    """A run folder's checkpoint.pt, or ``path`` itself."""
    return path / "checkpoint.pt" if path.is_dir() else path


def encoder_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The encoder's parameters and buffers from a checkpoint, without the prefix."""
    prefix = "encoder."
    weights = {
        k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)
    }
    if not weights:
        raise CheckpointError("the checkpoint holds no encoder weights")
    return weights


def load_encoder(path: Path) -> tuple[ResNetEncoder, dict[str, Any]]:
    """The trained encoder (eval mode) and the checkpoint's normalisation record.

    Raises:
        CheckpointError: if the checkpoint is unreadable or lacks normalisation data.
    """
    state = load_checkpoint(checkpoint_path(path))
    data = state.get("data")
    if data is None:
        raise CheckpointError(
            "this checkpoint predates the stored normalisation (mean, std, image size); "
            "re-save it with a current wmse"
        )
    config = RunConfig.from_dict(state["config"])
    method = build_method(config, data["image_size"], data["channels"])
    load_weights(method.encoder, encoder_state(state), str(path))
    return method.encoder.eval(), data


def export_encoder(path: Path, out_dir: Path) -> dict[str, Path]:
    """Write ``encoder.safetensors`` and, at width 64, ``encoder-torchvision.pt``.

    The torchvision file loads with no missing or unexpected keys into
    ``torchvision.models.resnet18()`` (or 34/50) after the same stem change (for small
    images: ``conv1 = Conv2d(C, 64, 3, stride, 1, bias=False)``, ``maxpool =
    Identity()``) and ``fc = Identity()``.

    Returns:
        The files written, by kind ("safetensors", "torchvision").
    """
    state = load_checkpoint(checkpoint_path(path))
    weights = {k: v.contiguous() for k, v in encoder_state(state).items()}
    model_config = state["config"]["model"]
    out_dir.mkdir(parents=True, exist_ok=True)

    # safetensors: weights only, the model settings as string metadata.
    written = {"safetensors": out_dir / "encoder.safetensors"}
    metadata = {
        "model": json.dumps(model_config),
        "revision": str(state.get("revision")),
    }
    save_file(weights, str(written["safetensors"]), metadata=metadata)

    # torchvision's layout only exists for the standard width.
    if model_config["width"] == 64:
        written["torchvision"] = out_dir / "encoder-torchvision.pt"
        torch.save(weights, written["torchvision"])
    else:
        logger.warning(
            "width %d has no torchvision counterpart; wrote safetensors only",
            model_config["width"],
        )
    return written


def embed_folder(
    path: Path, folder: Path, batch_size: int = 512
) -> tuple[np.ndarray, list[str]]:
    """Encoder features of every image below ``folder`` (sorted by path).

    Images are resized and centre-cropped to the run's image size, converted to its
    channel count (luma for 1-channel runs) and normalised with its mean and std.

    Returns:
        float32 array (N, F) and the N image paths, in the same order.

    Raises:
        CheckpointError: if the checkpoint is unusable.
        DatasetError: if ``folder`` is missing, holds no images, or an image cannot
            be decoded (the message names the file).
    """
    encoder, data = load_encoder(path)
    if not folder.is_dir():
        raise DatasetError(
            f"image folder {folder} does not exist; pass a folder of images"
        )
    paths = [str(p) for p in _image_files(folder)]
    if not paths:
        raise DatasetError(
            f"no image files ({', '.join(IMG_EXTENSIONS)}) found in {folder}; pass a "
            f"folder of images"
        )
    images = decode_images(paths, data["image_size"], num_workers=0)  # (N, 3, S, S)
    if data["channels"] == 1:
        images = (
            (images.float() * LUMA).sum(dim=1, keepdim=True).round().to(torch.uint8)
        )

    from wmse.data.base import ImageDataset

    features = extract_features(
        encoder,
        ImageDataset(images),
        tuple(data["mean"]),
        tuple(data["std"]),
        torch.device("cpu"),
        batch_size,
    )
    return features.numpy(), paths


def check_embeddings_path(out: Path) -> None:
    """Refuse an output that :func:`write_embeddings` cannot write, before any work.

    Raises:
        ConfigError: for a suffix other than .npy or .parquet, or for .parquet when
            pyarrow is not installed; the message names the remedy.
    """
    if out.suffix not in EMBEDDING_SUFFIXES:
        raise ConfigError(
            f"cannot write embeddings to {out}: unsupported suffix "
            f"{out.suffix or '(none)'!r}; name the file *.npy (features, plus the paths "
            f"in *.paths.txt) or *.parquet (one table of paths and features)"
        )
    if out.suffix == ".parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError as error:
            raise ConfigError(
                f"writing {out} needs pyarrow, which is not installed; run "
                f'`pip install "wmse[parquet]"`, or write a .npy file instead'
            ) from error


def write_embeddings(features: np.ndarray, paths: list[str], out: Path) -> list[Path]:
    """Write embeddings and their image paths, in the format ``out``'s suffix names.

    - ``.npy``: the float32 array (N, F), and the N paths one per line in the same
      name with ``.paths.txt``.
    - ``.parquet``: one table of N rows with a ``path`` string column and an
      ``embedding`` column, a fixed-size list of F float32. ``np.stack(
      pandas.read_parquet(out)["embedding"])`` gives back the (N, F) array.

    Args:
        features: Array (N, F), one row per image.
        paths: The N image paths, in the row order of ``features``.
        out: Output file ending in .npy or .parquet; its folder is created.

    Returns:
        The files written.

    Raises:
        ConfigError: as :func:`check_embeddings_path`.
    """
    check_embeddings_path(out)
    features = np.ascontiguousarray(features, dtype=np.float32)  # (N, F)
    N, F = features.shape
    if len(paths) != N:
        raise ValueError(f"{len(paths)} paths for {N} embeddings")
    out.parent.mkdir(parents=True, exist_ok=True)

    # .npy: the array alone; the paths go beside it as text.
    if out.suffix == ".npy":
        np.save(out, features)
        listing = out.with_suffix(".paths.txt")
        listing.write_text("".join(f"{path}\n" for path in paths))
        return [out, listing]

    # .parquet: one row per image. The embedding is a single fixed-size list column
    # rather than F columns: pandas reads it as one array per row (np.stack gives the
    # matrix back), pyarrow, polars and DuckDB as an array type whose schema states F,
    # and a 512-wide feature vector does not become 512 loose columns to reassemble.
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = pa.array(features.reshape(-1))  # (N * F,) float32, row-major
    table = pa.table(
        {
            "path": pa.array(paths, type=pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(values, F),  # N lists of F
        }
    )
    pq.write_table(table, out)
    return [out]
