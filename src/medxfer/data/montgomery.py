"""The Montgomery County tuberculosis set (US National Library of Medicine) as released:
``CXR_png/MCUCXR_NNNN_<0|1>.png``, ``ClinicalReadings/`` and ``ManualMask/``."""

from __future__ import annotations

from pathlib import Path

from .contract import Dataset
from .public import first_image_named, read_tb_set
from .registry import register_reader

_PATTERN = r"MCUCXR_\d+_[01]"


def read_montgomery(root: str | Path) -> Dataset:
    """Read the Montgomery TB set (MontgomerySet, or a copy holding its PNG files).

    The finding "Tuberculosis" comes from each file name's last digit (``MCUCXR_0001_0``:
    normal, ``_1``: tuberculosis); sex and age from ``ClinicalReadings/<name>.txt``
    (``Patient's Sex: F``, ``Patient's Age: 040Y``), whose reading text is kept as
    ``reading``. The release has no patient ids: each image is its own patient under its
    file name (``patient_ids_from="file_name"``). The lung masks of ``ManualMask/``, named
    like the images, are left out.
    """
    return read_tb_set(Path(root), prefix="MCUCXR", set_name="Montgomery", format="montgomery_tb")


@register_reader("montgomery_tb", description="the Montgomery TB set (MCUCXR_NNNN_0/1.png)",
                 read=read_montgomery, priority=25)
def _montgomery(path: Path) -> str | None:
    first = first_image_named(path, _PATTERN) if path.is_dir() else None
    return None if first is None else f"holds images named MCUCXR_NNNN_0/1, e.g. {first.as_posix()}"
