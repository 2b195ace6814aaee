"""PadChest (BIMCV, Alicante) as released: the 160K labels table beside the numbered image folders."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError, unknown_name_message
from .contract import Dataset, Problem
from .folders import index_images
from .parsing import normalise_patient_ids
from .public import keep_present, normalise_view, read_release_table
from .registry import register_reader

PADCHEST_TABLE_GLOB = "PADCHEST_chest_x_ray_images_labels_160K*.csv*"
_COLUMNS = ("ImageID", "PatientID", "Projection", "Labels", "ImageDir")
#: Labels that are not findings: "normal" is the all-zero row, "" an empty list entry.
_NOT_FINDINGS = {"", "normal"}


def find_padchest_table(root: Path) -> Path | None:
    found = sorted(p for p in root.glob(PADCHEST_TABLE_GLOB)
                   if p.name.endswith((".csv", ".csv.gz")) and p.is_file())
    return found[0] if found else None


def _parse_labels(cell: str, *, line: int, source) -> list[str] | None:
    text = cell.strip()
    if text in ("", "nan", "None"):
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{source} line {line}, column 'Labels': {text[:60]!r} is not a list of "
                        "label names such as \"['pleural effusion', 'cardiomegaly']\"")
    names = [v.strip() for v in value if v.strip()]
    return names or None  # "['']" (777 rows of the release): nothing was extracted


def read_padchest(root: str | Path, *, table: str | Path | None = None,
                  findings: tuple[str, ...] | None = None) -> Dataset:
    """Read PadChest as published.

    Parameters
    ----------
    root : folder holding ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv(.gz)`` and
        the images in the release's numbered folders (``ImageDir``: ``0/``, ``1/``, ...), or
        flat, or at any depth.
    table : the labels table; by default the one in ``root``.
    findings : the label set and order; a label outside it is an error naming the row.
        By default every label the table uses, sorted.

    ``Labels`` holds a list literal of PadChest's own label names; a finding it does not
    name is 0 (the release's reports were read for every label), "normal" is the all-zero
    row, and a row without a list or with an empty one (``['']``; about 900 in the release)
    has unknown labels and is recorded in one ``no_labels`` problem. Patient ids are ``PatientID`` (metadata); ``view``
    is Projection as PA/AP/LATERAL (AP_horizontal is AP; COSTAL, EXCLUDE, UNK kept as
    given); ``age`` is the study year minus the birth year (so within a year);
    ``label_method`` says whether a physician or the release's model labelled the report.
    """
    root = Path(root)
    table_path = Path(table) if table else find_padchest_table(root)
    if table_path is None or not table_path.is_file():
        raise DataError(f"no PadChest table in '{root}': expected a file named like "
                        f"{PADCHEST_TABLE_GLOB}")
    df = read_release_table(table_path, _COLUMNS, what="PadChest")
    problems: list[Problem] = []
    parsed = [_parse_labels(c, line=i + 2, source=table_path) for i, c in enumerate(df["Labels"])]
    used = sorted({n for row in parsed if row for n in row} - _NOT_FINDINGS)
    names = tuple(findings) if findings is not None else tuple(used)
    index = {n: j for j, n in enumerate(names)}
    y = np.zeros((len(df), len(names)), np.float32)
    for i, row in enumerate(parsed):
        if row is None:
            y[i] = np.nan
            continue
        for n in row:
            if n in _NOT_FINDINGS:
                continue
            if n not in index:
                raise DataError(f"{table_path} line {i + 2}: " + unknown_name_message("finding", n, index)
                                + " Add it to findings= or leave findings= unset.")
            y[i, index[n]] = 1.0
    nolab = [i for i, r in enumerate(parsed) if r is None]
    if nolab:
        problems.append(Problem("no_labels", str(table_path),
                                f"{len(nolab)} rows have no or an empty Labels list (lines "
                                f"{', '.join(str(i + 2) for i in nolab[:5])}); their labels are unknown"))
    ids = df["ImageID"].str.strip()
    direct = [root / d.strip() / i for d, i in zip(df["ImageDir"], ids)]
    paths: list[Path | None] = [p if p.is_file() else None for p in direct]
    if any(p is None for p in paths):
        on_disk = index_images(root)
        paths = [p if p is not None else on_disk.get(i) for p, i in zip(paths, ids)]
    present = keep_present(paths, table_path, root, problems, ids=ids.tolist())
    out = pd.DataFrame({
        "image_id": ids, "path": [str(p) for p in paths],
        "patient_id": normalise_patient_ids(df["PatientID"]).to_numpy(),
        "study": df["StudyID"].str.strip() if "StudyID" in df else None,
        "view": [normalise_view(v) for v in df["Projection"]],
        "projection": df["Projection"].str.strip(),
    })
    if "PatientSex_DICOM" in df:
        out["sex"] = df["PatientSex_DICOM"].str.strip().replace({"": None})
    if {"PatientBirth", "StudyDate_DICOM"} <= set(df.columns):
        born = pd.to_numeric(df["PatientBirth"], errors="coerce")
        year = pd.to_numeric(df["StudyDate_DICOM"].str.strip().str[:4], errors="coerce")
        out["age"] = year - born
    if "MethodLabel" in df:
        out["label_method"] = df["MethodLabel"].str.strip()
    out = out.loc[present].reset_index(drop=True)
    out["file_size"] = [Path(p).stat().st_size for p in out["path"]]
    return Dataset(out, y[present], names, name=f"PadChest at {root}", problems=tuple(problems),
                   format="padchest", patient_ids_from="metadata")


@register_reader("padchest", description="PadChest (PADCHEST_chest_x_ray_images_labels_160K*.csv(.gz) "
                 "beside the image folders)", read=read_padchest, priority=25)
def _padchest(path: Path) -> str | None:
    table = find_padchest_table(path) if path.is_dir() else None
    return None if table is None else f"holds the labels table {table.name}"
