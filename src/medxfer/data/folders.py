"""Datasets from folders: class subfolders, DICOM files, loose image files and folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..images import DICOM_SUFFIXES, IMAGE_SUFFIXES
from .contract import Dataset, Problem
from .registry import register_reader


def index_images(root: Path) -> dict[str, Path]:
    """File name -> path for every image below ``root`` (flat or images_0NN/images/)."""
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            if Path(fn).suffix.lower() in IMAGE_SUFFIXES and fn not in found:
                found[fn] = Path(dirpath) / fn
    return found


def read_image_paths(paths: list[str | Path]) -> tuple[Dataset, list[Problem]]:
    """A label-free dataset from image files and folders (for prediction).

    Folders are searched recursively for image files. Paths that do not exist are returned
    as problems rather than raised, so one bad argument does not stop the others.
    """
    files: list[Path] = []
    problems: list[Problem] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(index_images(p).values())
            if not found:
                problems.append(Problem("no_images", str(p), "a folder without PNG, JPEG or "
                                        "DICOM files"))
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            problems.append(Problem("missing_image", str(p), "no such file or folder"))
    table = pd.DataFrame({
        "image_id": [f.name for f in files],
        "path": [str(f) for f in files],
        "patient_id": [f.stem for f in files],
        "file_size": [f.stat().st_size for f in files],
    })
    return Dataset(table, np.full((len(files), 0), np.nan, np.float32), (), name="images",
                   problems=tuple(problems), patient_ids_from="file_name"), problems


def _class_names(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def read_class_folder(root: str | Path) -> Dataset:
    """Single-label data: one subfolder per class, images inside (any depth)."""
    root = Path(root)
    classes = _class_names(root)
    if len(classes) < 2:
        raise DataError(f"class folder '{root}' needs at least two subfolders (one per class), "
                        f"found {classes}")
    rows, ys = [], []
    for j, c in enumerate(classes):
        for path in sorted(index_images(root / c).values()):
            rows.append((path.name, str(path), path.stem, c, path.stat().st_size))
            ys.append(j)
    if not rows:
        raise DataError(f"no image files in the class subfolders of '{root}'")
    table = pd.DataFrame(rows, columns=["image_id", "path", "patient_id", "class", "file_size"])
    labels = np.eye(len(classes), dtype=np.float32)[ys]
    return Dataset(table, labels, tuple(classes), name=f"class folder {root}", task="multiclass",
                   patient_ids_from="file_name",
                   problems=(Problem("no_patient_column", str(root),
                                     "class folders carry no patient ids: each image is its own "
                                     "patient"),))


def read_dicom_folder(root: str | Path) -> Dataset:
    """Unlabelled DICOM files (for prediction, inspection or pairing with a CSV), patient ID
    taken from each header (``patient_ids_from="metadata"``); a file without one is its own
    patient under its file name ("file_name" when none has one, "mixed" when some have)."""
    from ..images import dicom_patient_id

    root = Path(root)
    files = sorted(_dicom_files(root))
    if not files:
        raise DataError(f"no .dcm files under '{root}'")
    problems, rows, from_header = [], [], 0
    for f in files:
        try:
            pid = dicom_patient_id(f)
        except Exception as exc:
            problems.append(Problem("unreadable_image", str(f), f"DICOM header unreadable: {exc}"))
            continue
        if pid is None:
            problems.append(Problem("no_patient_id", str(f), "no PatientID in the header; file name used"))
        from_header += pid is not None
        rows.append((f.name, str(f), pid or f.stem, f.stat().st_size))
    table = pd.DataFrame(rows, columns=["image_id", "path", "patient_id", "file_size"])
    source = ("metadata" if from_header == len(rows) else
              "file_name" if from_header == 0 else "mixed")
    return Dataset(table, np.zeros((len(table), 0), np.float32), (), name=f"DICOM folder {root}",
                   problems=tuple(problems), patient_ids_from=source)


def _dicom_files(root: Path):
    return (p for p in root.rglob("*") if p.suffix.lower() in DICOM_SUFFIXES)


# Asked before class folders: DICOM exports often hold one subfolder per patient or study,
# which would otherwise read as one class per patient.
@register_reader("dicom_folder", description="a folder of DICOM files (unlabelled)",
                 read=read_dicom_folder, priority=20)
def _dicom_folder(path: Path) -> str | None:
    first = next(_dicom_files(path), None) if path.is_dir() else None
    return None if first is None else f"holds DICOM files, e.g. {first.relative_to(path)}"


@register_reader("class_folder", description="a folder with one subfolder of images per class",
                 read=read_class_folder, priority=10)
def _class_folder(path: Path) -> str | None:
    classes = _class_names(path) if path.is_dir() else []
    if len(classes) < 2 or not all(index_images(path / c) for c in classes):
        return None
    return f"{len(classes)} subfolders of images: " + ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
