"""MIMIC-CXR-JPG (PhysioNet) as released: the metadata, label and split tables beside ``files/``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from .chexpert import CHEXPERT_OBSERVATIONS, chexpert_labels
from .contract import Dataset, Problem
from .parsing import normalise_patient_ids
from .public import (check_uncertain_policy, find_table, keep_present, normalise_view,
                     read_release_table)
from .registry import register_reader

MIMIC_METADATA = "mimic-cxr-2.0.0-metadata.csv"
#: Label tables by labeler; both use CheXpert's 14 columns.
MIMIC_LABEL_TABLES = {"chexpert": "mimic-cxr-2.0.0-chexpert.csv", "negbio": "mimic-cxr-2.0.0-negbio.csv"}
MIMIC_SPLIT = "mimic-cxr-2.0.0-split.csv"


def read_mimic_cxr(root: str | Path, *, labeler: str | None = None, uncertain: str = "ignore",
                   no_finding_negative: bool = True) -> Dataset:
    """Read MIMIC-CXR-JPG (2.0.0 or 2.1.0) as published on PhysioNet.

    Parameters
    ----------
    root : the folder holding ``mimic-cxr-2.0.0-metadata.csv(.gz)``, a label table
        (``-chexpert`` and/or ``-negbio``), optionally ``-split``, and the images as
        ``files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg``.
    labeler : "chexpert" or "negbio"; by default chexpert when its table is there.
    uncertain : what a -1 (uncertain) label becomes: "ignore" (unknown, NaN; the
        default), "zeros" or "ones"; recorded with the uncertain cells in the dataset.
    no_finding_negative : as for CheXpert (:func:`~medxfer.data.chexpert_labels`).

    Labels are per study (one report) and given to every image of the study; a study the
    label table does not list has unknown labels (one ``unlabelled_studies`` problem).
    Patient ids are ``subject_id`` (metadata). MIMIC-CXR-JPG carries no sex or age (they
    are in MIMIC-IV); ``view`` is ViewPosition as PA/AP/LATERAL, other positions as given.
    """
    root = Path(root)
    meta_path = find_table(root, [MIMIC_METADATA])
    if meta_path is None:
        raise DataError(f"no {MIMIC_METADATA}(.gz) in '{root}'")
    if labeler is not None and labeler not in MIMIC_LABEL_TABLES:
        raise DataError(f"labeler={labeler!r} is not a MIMIC-CXR label table; use one of "
                        f"{', '.join(MIMIC_LABEL_TABLES)}")
    check_uncertain_policy(uncertain, source=f"reading '{root}'")
    names = [labeler] if labeler else list(MIMIC_LABEL_TABLES)
    found = {n: find_table(root, [MIMIC_LABEL_TABLES[n]]) for n in names}
    found = {n: p for n, p in found.items() if p is not None}
    if not found:
        raise DataError(f"'{root}' holds {meta_path.name} but no label table: expected "
                        + " or ".join(f"{MIMIC_LABEL_TABLES[n]}(.gz)" for n in names))
    labeler, label_path = next(iter(found.items()))
    meta = read_release_table(meta_path, ["dicom_id", "subject_id", "study_id", "ViewPosition"],
                              what="MIMIC-CXR metadata")
    lab = read_release_table(label_path, ["subject_id", "study_id"], what="MIMIC-CXR label")
    y_study, m_study = chexpert_labels(lab, source=label_path, uncertain=uncertain,
                                       no_finding_negative=no_finding_negative)
    problems: list[Problem] = []
    key = lab["subject_id"].str.strip() + "/" + lab["study_id"].str.strip()
    if key.duplicated().any():
        raise DataError(f"{label_path}: study {key[key.duplicated()].iloc[0]} is listed twice; "
                        "keep one row per study")
    row_of = dict(zip(key, range(len(key))))
    mkey = meta["subject_id"].str.strip() + "/" + meta["study_id"].str.strip()
    idx = mkey.map(row_of)
    unlabelled = idx.isna().to_numpy()
    L = len(CHEXPERT_OBSERVATIONS)
    y = np.full((len(meta), L), np.nan, np.float32)
    m = np.zeros((len(meta), L), bool)
    y[~unlabelled] = y_study[idx[~unlabelled].astype(int)]
    m[~unlabelled] = m_study[idx[~unlabelled].astype(int)]
    if unlabelled.any():
        studies = sorted(set(mkey[unlabelled]))
        problems.append(Problem("unlabelled_studies", str(label_path),
                                f"{len(studies)} studies ({int(unlabelled.sum())} images) are not in "
                                f"{label_path.name} (e.g. {', '.join(studies[:3])}); their labels "
                                "are unknown"))
    subject = meta["subject_id"].str.strip()
    paths = [root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st.strip()}" / f"{d.strip()}.jpg"
             for s, st, d in zip(subject, meta["study_id"], meta["dicom_id"])]
    table = pd.DataFrame({
        "image_id": meta["dicom_id"].str.strip(),
        "path": [str(p) for p in paths],
        "patient_id": normalise_patient_ids(subject).to_numpy(),
        "study": meta["study_id"].str.strip(),
        "view": [normalise_view(v) for v in meta["ViewPosition"]],
    })
    split_path = find_table(root, [MIMIC_SPLIT])
    if split_path is not None:
        split = read_release_table(split_path, ["dicom_id", "split"], what="MIMIC-CXR split")
        table["split"] = table["image_id"].map(dict(zip(split["dicom_id"].str.strip(), split["split"])))
    present = keep_present(paths, meta_path, root, problems, ids=table["image_id"].tolist())
    table = table.loc[present].reset_index(drop=True)
    table["file_size"] = [Path(p).stat().st_size for p in table["path"]]
    return Dataset(table, y[present], CHEXPERT_OBSERVATIONS,
                   name=f"MIMIC-CXR-JPG at {root} ({labeler} labels)", problems=tuple(problems),
                   format="mimic_cxr", patient_ids_from="metadata", uncertain_policy=uncertain, uncertain_mask=m[present])


@register_reader("mimic_cxr", description=f"MIMIC-CXR-JPG ({MIMIC_METADATA}(.gz) and a -chexpert "
                 "or -negbio label table beside files/)", read=read_mimic_cxr, priority=25)
def _mimic(path: Path) -> str | None:
    meta = find_table(path, [MIMIC_METADATA]) if path.is_dir() else None
    if meta is None:
        return None
    labels = [p.name for p in (find_table(path, [n]) for n in MIMIC_LABEL_TABLES.values()) if p]
    return f"holds {meta.name}" + (f" and {', '.join(labels)}" if labels else " (no label table)")
