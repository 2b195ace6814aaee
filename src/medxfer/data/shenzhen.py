"""The Shenzhen tuberculosis set (US National Library of Medicine with Shenzhen No.3 People's
Hospital) as released: ``CXR_png/CHNCXR_NNNN_<0|1>.png`` and ``ClinicalReadings/``."""

from __future__ import annotations

from pathlib import Path

from .contract import Dataset
from .public import first_image_named, read_tb_set
from .registry import register_reader

_PATTERN = r"CHNCXR_\d+_[01]"


def read_shenzhen(root: str | Path) -> Dataset:
    """Read the Shenzhen TB set (ChinaSet_AllFiles, or a copy holding its PNG files).

    The finding "Tuberculosis" comes from each file name's last digit (``CHNCXR_0001_0``:
    normal, ``_1``: tuberculosis); sex and age from ``ClinicalReadings/<name>.txt``
    (``male 35yrs``), whose reading text is kept as ``reading``. The release has no patient
    ids: each image is its own patient under its file name (``patient_ids_from=
    "file_name"``). Lung-mask folders are left out.
    """
    return read_tb_set(Path(root), prefix="CHNCXR", set_name="Shenzhen", format="shenzhen_tb")


@register_reader("shenzhen_tb", description="the Shenzhen TB set (CHNCXR_NNNN_0/1.png)",
                 read=read_shenzhen, priority=25)
def _shenzhen(path: Path) -> str | None:
    first = first_image_named(path, _PATTERN) if path.is_dir() else None
    return None if first is None else f"holds images named CHNCXR_NNNN_0/1, e.g. {first.as_posix()}"
