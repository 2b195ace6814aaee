"""CheXpert (Stanford) as released: ``train.csv`` / ``valid.csv`` beside the image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from .contract import Dataset, Problem
from .parsing import parse_age
from .public import (apply_uncertain, check_uncertain_policy, header_of, keep_present,
                     normalise_view, parse_observations, read_release_table)
from .registry import register_reader

#: The 13 observations of the CheXpert labeler besides "No Finding", in the release's order.
CHEXPERT_OBSERVATIONS: tuple[str, ...] = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
)
#: Table names of the release, each read with its split name.
CHEXPERT_TABLE_NAMES = ("train.csv", "valid.csv")
_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
_SEX = {"Female": "F", "Male": "M"}


def chexpert_labels(df: pd.DataFrame, *, source, uncertain: str = "ignore",
                    no_finding_negative: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(labels, uncertain mask), each (n, 13), from the CheXpert labeler's columns (also
    MIMIC-CXR's -chexpert and -negbio tables, which share them).

    Cells: 1 positive, 0 negative, -1 uncertain, blank not mentioned (NaN). Uncertain cells
    become NaN, 0 or 1 by ``uncertain`` ("ignore", "zeros", "ones"). With
    ``no_finding_negative``, a row whose "No Finding" is 1 has its blank observations,
    except Support Devices, read as 0: the labeler marks No Finding only when no pathology is
    positive or uncertain.
    """
    missing = [c for c in CHEXPERT_OBSERVATIONS if c not in df.columns]
    if missing:
        raise DataError(f"'{source}' lacks the CheXpert observation column(s) "
                        f"{', '.join(map(repr, missing))}; use the table as released")
    raw = parse_observations(df, list(CHEXPERT_OBSERVATIONS), source=source)
    if no_finding_negative and "No Finding" in df.columns:
        healthy = parse_observations(df, ["No Finding"], source=source)[:, 0] == 1
        pathology = np.array([n != "Support Devices" for n in CHEXPERT_OBSERVATIONS])
        blank = np.isnan(raw) & healthy[:, None] & pathology[None, :]
        raw[blank] = 0.0
    return apply_uncertain(raw, uncertain)


def _tables(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return [path / n for n in CHEXPERT_TABLE_NAMES if (path / n).is_file()]


def _resolve(root: Path, rel: str) -> Path | None:
    """The release's paths start with its folder name (``CheXpert-v1.0-small/train/...``):
    found beside the tables, one level up, or without that first part."""
    parts = Path(rel).parts
    for cand in (root.parent / rel, root / rel, root.joinpath(*parts[1:]) if len(parts) > 1 else None):
        if cand is not None and cand.is_file():
            return cand
    return None


def read_chexpert(path: str | Path, *, table: str | Path | None = None, uncertain: str = "ignore",
                  no_finding_negative: bool = True) -> Dataset:
    """Read CheXpert (the full or the "small" release) as published.

    Parameters
    ----------
    path : the folder holding ``train.csv`` and/or ``valid.csv`` (both are read, with a
        ``split`` column), or one of those files.
    table : read only this table.
    uncertain : what the labeler's -1 (uncertain) becomes: "ignore" (unknown, NaN; the
        default: never a negative), "zeros" or "ones". The dataset records the policy and
        the uncertain cells (``uncertain_counts``).
    no_finding_negative : read the blank observations of a "No Finding" row as 0 (see
        :func:`chexpert_labels`).

    Returns
    -------
    Dataset with the 13 :data:`CHEXPERT_OBSERVATIONS` as findings ("No Finding" is the
    all-zero row), patient ids ``patientNNNNN`` from the paths (``patient_ids_from=
    "metadata"``), ``view`` PA/AP/LATERAL, ``sex`` M/F, ``age``, ``study`` and ``split``.
    Image ids are the paths without the release's folder name (``train/patient00001/
    study1/view1_frontal.jpg``): the file names alone repeat.
    """
    path = Path(path)
    tables = [Path(table)] if table else _tables(path)
    if not tables or not all(t.is_file() for t in tables):
        raise DataError(f"no CheXpert table at '{table or path}': expected "
                        f"{' or '.join(CHEXPERT_TABLE_NAMES)}")
    check_uncertain_policy(uncertain, source=f"reading '{path}'")
    root = tables[0].parent
    problems: list[Problem] = []
    frames, labels, masks = [], [], []
    for t in tables:
        df = read_release_table(t, _COLUMNS, what="CheXpert")
        y, m = chexpert_labels(df, source=t, uncertain=uncertain,
                               no_finding_negative=no_finding_negative)
        patient = df["Path"].str.extract(r"(patient\d+)", expand=False)
        if patient.isna().any():
            i = int(np.flatnonzero(patient.isna().to_numpy())[0])
            raise DataError(f"{t} line {i + 2}: path '{df['Path'].iloc[i]}' names no patientNNNNN "
                            "folder, so its patient is unknown; use the release's paths")
        frontal = df["Frontal/Lateral"].str.strip().str.lower() == "frontal"
        view = [normalise_view(ap) or "FRONTAL" if f else "LATERAL"
                for f, ap in zip(frontal, df["AP/PA"])]
        split = t.name.split(".")[0]
        frames.append(pd.DataFrame({
            "image_id": [p.split("/", 1)[1] if p.startswith("CheXpert") and "/" in p else p
                         for p in df["Path"]],
            "rel": df["Path"], "patient_id": patient, "view": view,
            "sex": df["Sex"].map(_SEX), "age": parse_age(df["Age"], problems, str(t)),
            "study": df["Path"].str.extract(r"(study\d+)", expand=False),
            "split": split, "table": str(t)}))
        labels.append(y)
        masks.append(m)
    meta = pd.concat(frames, ignore_index=True)
    y, m = np.concatenate(labels), np.concatenate(masks)
    dup = meta["image_id"].duplicated()
    if dup.any():
        raise DataError(f"{tables[0].parent}: image '{meta['image_id'][dup].iloc[0]}' is listed "
                        "twice; keep one row per image")
    paths = [_resolve(root, r) for r in meta["rel"]]
    present = keep_present(paths, tables[0] if len(tables) == 1 else root, root, problems,
                           ids=meta["rel"].tolist())
    meta = meta.loc[present].reset_index(drop=True)
    kept = [p for p, ok in zip(paths, present) if ok]
    out = meta.drop(columns=["rel", "table"]).assign(path=[str(p) for p in kept],
                                                     file_size=[p.stat().st_size for p in kept])
    out = out[["image_id", "path", "patient_id", "view", "sex", "age", "study", "split", "file_size"]]
    return Dataset(out, y[present], CHEXPERT_OBSERVATIONS, name=f"CheXpert at {path}",
                   problems=tuple(problems), format="chexpert", patient_ids_from="metadata",
                   uncertain_policy=uncertain, uncertain_mask=m[present])


def _is_chexpert_table(path: Path) -> bool:
    head = header_of(path)
    return all(c in head for c in _COLUMNS) and "Lung Opacity" in head


# Above class folders (the release's train/ and valid/ would read as two classes) and DICOM.
@register_reader("chexpert", description="CheXpert (train.csv / valid.csv with Path, "
                 "Frontal/Lateral, AP/PA and the 14 observations)", read=read_chexpert, priority=25)
def _chexpert(path: Path) -> str | None:
    if path.is_file():
        ok = path.name in CHEXPERT_TABLE_NAMES and _is_chexpert_table(path)
        return f"{path.name} with CheXpert's columns" if ok else None
    found = [t.name for t in _tables(path) if _is_chexpert_table(t)] if path.is_dir() else []
    return f"holds {' and '.join(found)} with CheXpert's columns (Path, Frontal/Lateral, AP/PA)" \
        if found else None
