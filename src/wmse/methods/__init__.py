"""Self-supervised methods, each in its own module, registered by name."""

from __future__ import annotations

from wmse.methods.base import Method
from wmse.methods.byol import BYOL
from wmse.methods.nowhiten import NoWhiten
from wmse.methods.simclr import SimCLR
from wmse.methods.wmse import WMSE

__all__ = ["BYOL", "METHODS", "WMSE", "Method", "NoWhiten", "SimCLR"]

METHODS: dict[str, type[Method]] = {
    "wmse": WMSE,
    "simclr": SimCLR,
    "byol": BYOL,
    "nowhiten": NoWhiten,
}
