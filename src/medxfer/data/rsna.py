"""RSNA Pneumonia Detection Challenge (Kaggle, 2018) as released: ``stage_2_train_labels.csv``
(one row per box), ``stage_2_detailed_class_info.csv`` and ``stage_2_train_images/*.dcm``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from .contract import Dataset, Problem
from .parsing import parse_age
from .public import find_table, index_by_stem, keep_present, normalise_view, read_release_table
from .registry import register_reader

RSNA_LABELS = "stage_2_train_labels.csv"
RSNA_CLASSES = "stage_2_detailed_class_info.csv"
#: The one finding: "Lung Opacity", the challenge's target (opacity suggestive of pneumonia).
RSNA_FINDING = "Lung Opacity"


def _headers(paths: list[Path]) -> pd.DataFrame:
    import pydicom

    rows = []
    for p in paths:
        sex = age = view = None
        if p.suffix.lower() == ".dcm":
            try:
                h = pydicom.dcmread(p, stop_before_pixels=True,
                                    specific_tags=["PatientSex", "PatientAge", "ViewPosition"])
                sex, age, view = (str(getattr(h, k, "") or "").strip() or None
                                  for k in ("PatientSex", "PatientAge", "ViewPosition"))
            except Exception:  # an unreadable header leaves these blank; the image check says why
                pass
        rows.append((sex, age, view))
    return pd.DataFrame(rows, columns=["sex", "age", "view"])


def read_rsna_pneumonia(root: str | Path, *, dicom_headers: bool = True) -> Dataset:
    """Read the RSNA Pneumonia Detection Challenge training set.

    Parameters
    ----------
    root : the folder holding ``stage_2_train_labels.csv`` (also ``stage_1_...``) and the
        images named ``<patientId>.dcm`` (or converted PNG/JPEG, any depth).
    dicom_headers : read sex, age and view from each DICOM header (the tables carry none).

    Returns
    -------
    Dataset with the one finding "Lung Opacity" (``Target``: 1 if any box). Every box is in
    ``boxes``; ``rsna_class`` is the detailed class ("Lung Opacity", "No Lung Opacity / Not
    Normal", "Normal") where that table is present. Despite its name, ``patientId`` names
    one image, not a patient (the images come from ChestX-ray14, whose patient ids the
    challenge withheld): ``patient_ids_from="image_id"``, each image its own patient, so a
    patient-wise split may put one person's images on both sides.
    """
    root = Path(root)
    lab_path = find_table(root, [RSNA_LABELS, "stage_1_train_labels.csv"])
    if lab_path is None:
        raise DataError(f"no {RSNA_LABELS} in '{root}'")
    df = read_release_table(lab_path, ["patientId", "x", "y", "width", "height", "Target"],
                            what="RSNA pneumonia")
    target = pd.to_numeric(df["Target"].str.strip(), errors="coerce")
    if not target.isin([0, 1]).all():
        i = int(np.flatnonzero(~target.isin([0, 1]).to_numpy())[0])
        raise DataError(f"{lab_path} line {i + 2}, column 'Target': '{df['Target'].iloc[i]}' is not 0 or 1")
    pid = df["patientId"].str.strip()
    per_image = target.groupby(pid, sort=False).max()
    ids = per_image.index.tolist()
    y = per_image.to_numpy(dtype=np.float32)[:, None]
    has_box = df["x"].str.strip() != ""
    box = df.loc[has_box]
    boxes = pd.DataFrame({"image_id": box["patientId"].str.strip(), "finding": RSNA_FINDING,
                          **{k: pd.to_numeric(box[c]) for k, c in
                             (("x", "x"), ("y", "y"), ("w", "width"), ("h", "height"))}})
    problems: list[Problem] = []
    on_disk = index_by_stem(root)
    paths = [on_disk.get(i) for i in ids]
    present = keep_present(paths, lab_path, root, problems, ids=ids)
    problems.append(Problem("no_patient_ids", str(lab_path),
                            "RSNA's patientId names one image, not a patient: each image is its "
                            "own patient"))
    kept = [p for p, ok in zip(paths, present) if ok]
    out = pd.DataFrame({"image_id": np.array(ids, dtype=object)[present], "path": [str(p) for p in kept],
                        "patient_id": np.array(ids, dtype=object)[present]})
    cls_path = find_table(root, [RSNA_CLASSES, "stage_1_detailed_class_info.csv"])
    if cls_path is not None:
        cls = read_release_table(cls_path, ["patientId", "class"], what="RSNA class info")
        out["rsna_class"] = out["image_id"].map(dict(zip(cls["patientId"].str.strip(), cls["class"].str.strip())))
    if dicom_headers:
        h = _headers(kept)
        out["view"] = [normalise_view(v) for v in h["view"]]
        out["sex"] = h["sex"].to_numpy()
        out["age"] = parse_age(h["age"].fillna(""), problems, f"DICOM headers under {root}").to_numpy()
    out["file_size"] = [p.stat().st_size for p in kept]
    boxes = boxes[boxes["image_id"].isin(set(out["image_id"]))].reset_index(drop=True)
    return Dataset(out, y[present], (RSNA_FINDING,), name=f"RSNA Pneumonia at {root}",
                   problems=tuple(problems), boxes=boxes, format="rsna_pneumonia", patient_ids_from="image_id")


# Above DICOM folders: the release's images are .dcm files.
@register_reader("rsna_pneumonia", description=f"RSNA Pneumonia Detection ({RSNA_LABELS} beside "
                 "the images)", read=read_rsna_pneumonia, priority=25)
def _rsna(path: Path) -> str | None:
    table = find_table(path, [RSNA_LABELS, "stage_1_train_labels.csv"]) if path.is_dir() else None
    return None if table is None else f"holds {table.name}"
