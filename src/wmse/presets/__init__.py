"""Named, readable training recipes stored as TOML files beside this module.

``<dataset>-<method>.toml``: the paper's Table 1 recipes (GPU-sized) for CIFAR-10/100,
STL-10 and Tiny ImageNet with W-MSE 2, W-MSE 4, SimCLR and BYOL, and CPU-sized
Fashion-MNIST recipes for every method. Each file has a ``description`` and the
sections of a run configuration.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from wmse.config import ConfigError, RunConfig

__all__ = ["PRESET_DIR", "list_presets", "load_preset"]

PRESET_DIR = Path(__file__).resolve().parent


def list_presets() -> dict[str, str]:
    """Preset name -> one-line description, sorted by name."""
    presets = {}
    for path in sorted(PRESET_DIR.glob("*.toml")):
        presets[path.stem] = tomllib.loads(path.read_text()).get("description", "")
    return presets


def load_preset(name: str) -> dict[str, Any]:
    """The settings of preset ``name`` as nested dicts (sections of RunConfig).

    Raises:
        ConfigError: for an unknown name or a preset that does not validate.
    """
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(
            f"unknown preset {name!r}; `wmse presets` lists them: {', '.join(list_presets())}"
        )
    values = tomllib.loads(path.read_text())
    values.pop("description", None)
    RunConfig.from_dict(values).validate()  # a broken preset fails here, not mid-run
    return values
