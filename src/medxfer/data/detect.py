"""Open a dataset by its layout: find out which reader a path needs."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .chestxray14 import CHESTXRAY14_TABLE_NAMES, find_chestxray14_table, read_chestxray14
from .contract import Dataset
from .folders import index_images, read_class_folder, read_dicom_folder
from .tables import read_csv_dataset


def read_dataset(path: str | Path, **kwargs) -> Dataset:
    """Open a dataset by its layout: ChestX-ray14 folder, CSV file, class folder, DICOM folder."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset folder '{path}' does not exist")
    if path.is_file() and path.suffix.lower() in (".csv", ".gz"):
        return read_csv_dataset(path, **kwargs)
    if path.is_dir():
        if find_chestxray14_table(path) is not None:
            return read_chestxray14(path, **kwargs)
        entries = list(path.iterdir())
        if any(p.suffix.lower() in (".dcm", ".dicom") for p in path.rglob("*")):
            return read_dicom_folder(path)
        subdirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
        if len(subdirs) >= 2 and all(index_images(d) for d in subdirs):
            return read_class_folder(path)
    raise DataError(
        f"'{path}' is not a dataset medxfer recognises. It reads: a ChestX-ray14 folder (one of "
        f"{', '.join(CHESTXRAY14_TABLE_NAMES)} beside the images), a CSV of paths and labels, a "
        "folder with one subfolder of images per class, or a folder of DICOM files")
