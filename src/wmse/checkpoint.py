"""Atomic, code-free checkpoints.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts written with
``torch.save`` and read with ``torch.load(weights_only=True)``, which refuses pickled
code. Writes go to a temporary file that is flushed, fsync'd and renamed over the
target, so a crash never leaves a half-written checkpoint in place.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint"]

# The end of every message about a file that is not a usable checkpoint.
USE_A_RUN = (
    "pass a run folder or its checkpoint.pt (checkpoint-prev.pt holds the one before)"
)

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, unsafe or from an incompatible run."""


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

    # Make the rename itself durable.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    logger.info("checkpoint written to %s", path)


def load_checkpoint(
    path: Path, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint without executing code.

    Raises:
        CheckpointError: if the file is missing, is not a checkpoint, or carries
            pickled objects other than tensors and plain containers.
    """
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; {USE_A_RUN}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's weights-only loader names a forbidden global ("Unsupported global")
        # when the file carries code or classes; anything else means it is not a
        # checkpoint at all.
        message = str(error)
        if "Unsupported global" not in message:
            raise CheckpointError(
                f"{path} is not a readable checkpoint (not a torch.save file, or "
                f"corrupt); {USE_A_RUN}"
            ) from error
        forbidden = message[message.index("Unsupported global") :].split(" was ")[0]
        raise CheckpointError(
            f"refusing to load {path}: it contains pickled objects that are not plain "
            f"tensors or containers, possibly code ({forbidden}). wmse checkpoints "
            f"never need this; only trust files whose origin you know."
        ) from error
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        IndexError,
        KeyError,
        TypeError,
    ) as error:
        reason = " ".join(str(error).split())  # torch's messages can span lines
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({reason}); {USE_A_RUN}"
        ) from error
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(
            f"{path} is not a wmse checkpoint (no model/config entries; exported "
            f"encoders cannot be read back); {USE_A_RUN}"
        )
    return state


def load_weights(
    module: torch.nn.Module, weights: dict[str, torch.Tensor], source: str
) -> None:
    """Load ``weights`` into ``module`` strictly, or explain the mismatch in one line.

    Raises:
        CheckpointError: naming how many entries are missing, unexpected or of another
            shape, with a few examples, and the likely cause.
    """
    own = module.state_dict()
    missing = [name for name in own if name not in weights]
    unexpected = [name for name in weights if name not in own]
    reshaped = [
        f"{name} {tuple(weights[name].shape)} vs {tuple(own[name].shape)}"
        for name in own
        if name in weights and weights[name].shape != own[name].shape
    ]
    if missing or unexpected or reshaped:
        details = []
        for label, names in (("missing", missing), ("unexpected", unexpected),
                             ("other shape", reshaped)):  # fmt: skip
            if names:
                details.append(f"{len(names)} {label} (e.g. {', '.join(names[:2])})")
        raise CheckpointError(
            f"{source} does not fit the configured model: {'; '.join(details)}. It was "
            f"written for another method, architecture, width or embedding size; use a "
            f"checkpoint saved with these settings by this wmse version, unmodified"
        )
    module.load_state_dict(weights)
