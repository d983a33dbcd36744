"""Reader for the IDX format of MNIST and Fashion-MNIST (optionally gzip-compressed).

torchvision's reader asserts on malformed files and does not read ``.gz`` files, which is
how Debian ships Fashion-MNIST, so this small reader checks every field and says what is
wrong with the file.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from wmse.data.base import DatasetError, one_line

__all__ = ["read_idx", "write_idx"]

# IDX type codes we accept (the datasets here only use unsigned bytes).
IDX_UBYTE = 0x08

# The end of every message about a damaged file.
REPLACE = "replace it with a fresh copy"


def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file of unsigned bytes into a uint8 tensor of its stored shape.

    Raises:
        DatasetError: if the file is unreadable, not IDX, or truncated.
    """
    # A damaged gzip stream fails as OSError (bad header, CRC), EOFError (truncated)
    # or zlib.error (corrupt deflate data), which is not an OSError.
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(
            f"cannot read {path} ({one_line(error)}); the file is damaged or not what "
            f"its name says, {REPLACE}"
        ) from error

    # Header: two zero bytes, a type code, the number of dimensions, then sizes.
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{path} is not an IDX file (bad magic number); {REPLACE}")
    if data[2] != IDX_UBYTE:
        raise DatasetError(
            f"{path}: IDX type code {data[2]:#04x} is not unsigned byte (0x08); "
            f"{REPLACE}"
        )
    num_dims = data[3]
    header_end = 4 + 4 * num_dims
    if num_dims < 1 or len(data) < header_end:
        raise DatasetError(f"{path}: truncated IDX header; {REPLACE}")
    shape = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(num_dims)
    )

    # Payload: exactly prod(shape) bytes.
    expected = int(np.prod(shape))
    payload = np.frombuffer(data, dtype=np.uint8, offset=header_end)
    if payload.size != expected:
        raise DatasetError(
            f"{path}: IDX header says shape {shape} ({expected} bytes) but the file holds "
            f"{payload.size}; the file is truncated or corrupt, {REPLACE}"
        )
    return torch.from_numpy(payload.copy()).view(shape)


def write_idx(path: Path, array: torch.Tensor) -> None:
    """Write a uint8 tensor as an IDX file (gzip-compressed if ``path`` ends in .gz)."""
    header = bytes([0, 0, IDX_UBYTE, array.dim()])
    header += b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    data = header + array.to(torch.uint8).contiguous().numpy().tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as handle:
        handle.write(data)
