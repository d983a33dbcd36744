"""Self-supervised methods, each in its own module, registered by name."""

from __future__ import annotations

from wmse.methods.base import Method
from wmse.methods.wmse import WMSE

__all__ = ["Method", "METHODS", "WMSE"]

METHODS: dict[str, type[Method]] = {
    "wmse": WMSE,
}
