"""The real ChestX-ray14 sample bundled in the package (tests, the demo, export checks)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def bundled_sample() -> Path:
    """Path of the bundled ChestX-ray14 sample (421 real images at 256 px)."""
    return Path(str(resources.files("medxfer") / "sample_data" / "nih14-mini"))
