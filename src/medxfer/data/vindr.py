"""VinDr-CXR (VinBigData, Hanoi) as released on PhysioNet, and as the Kaggle competition's
``train.csv``: one row per radiologist and finding (and per box)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError, unknown_name_message
from .contract import Dataset, Problem
from .public import header_of, index_by_stem, keep_present, read_release_table
from .registry import register_reader

#: The 14 local findings of the Kaggle competition's train.csv (class_id 0-13; 14 is "No finding").
VINDR_KAGGLE_FINDINGS: tuple[str, ...] = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
    "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion",
    "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis",
)
#: How the radiologists' readings of one image become its label.
VINDR_RULES = {
    "any": "positive if any radiologist who read the image marked the finding, else negative",
    "majority": "positive if more than half of the radiologists who read the image marked it",
}
_NO_FINDING = "No finding"
_BOX = ("x_min", "y_min", "x_max", "y_max")


def _physionet_tables(root: Path) -> dict[str, tuple[Path | None, Path | None]]:
    """split -> (image_labels_<split>.csv, annotations_<split>.csv), looked for in root and
    root/annotations/ (the PhysioNet layout)."""
    out = {}
    for split in ("train", "test"):
        found = []
        for stem in (f"image_labels_{split}.csv", f"annotations_{split}.csv"):
            p = next((d / stem for d in (root, root / "annotations") if (d / stem).is_file()), None)
            found.append(p)
        if any(found):
            out[split] = tuple(found)
    return out


def _kaggle_table(root: Path) -> Path | None:
    p = root / "train.csv"
    head = header_of(p) if p.is_file() else []
    return p if {"image_id", "class_name", "rad_id", "x_min"} <= set(head) else None


def _merge(readings: pd.DataFrame, names: tuple[str, ...], rule: str) -> tuple[list[str], np.ndarray]:
    """(image ids in first-seen order, labels (n, len(names))) from per-radiologist 0/1 rows."""
    ids = list(dict.fromkeys(readings["image_id"]))
    marked = readings.groupby(["image_id", "rad_id"], sort=False)[list(names)].max()
    votes = marked.groupby(level=0, sort=False).sum().reindex(ids)
    readers = marked.groupby(level=0, sort=False).size().reindex(ids).to_numpy()[:, None]
    y = votes.to_numpy() >= 1 if rule == "any" else votes.to_numpy() * 2 > readers
    return ids, y.astype(np.float32)


def _boxes(df: pd.DataFrame, source) -> pd.DataFrame:
    has = df[list(_BOX)].apply(lambda c: c.str.strip() != "").all(axis=1)
    b = df.loc[has]
    try:
        x0, y0, x1, y1 = (pd.to_numeric(b[c]) for c in _BOX)
    except ValueError as exc:
        raise DataError(f"{source}: a box coordinate is not a number ({exc})") from exc
    return pd.DataFrame({"image_id": b["image_id"].str.strip(), "finding": b["class_name"].str.strip(),
                         "x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0,
                         "rad_id": b["rad_id"] if "rad_id" in b else None}).reset_index(drop=True)


def read_vindr_cxr(root: str | Path, *, rule: str = "any") -> Dataset:
    """Read VinDr-CXR: the PhysioNet release (``annotations/image_labels_train.csv``,
    ``annotations_train.csv`` and the ``_test`` pair) or the Kaggle competition's ``train.csv``.

    Parameters
    ----------
    root : the folder holding the tables (or their ``annotations/`` folder) and the images
        (``train/<image_id>.dicom``, or converted PNG/JPEG files named by image id, any depth).
    rule : how the readings of an image's radiologists (three per training image, one
        consensus per test image) become its label: "any" (the default: positive if any
        radiologist marked the finding; negative otherwise, since every radiologist read
        the whole image) or "majority" (positive if more than half of them marked it).

    Returns
    -------
    Dataset whose findings are PhysioNet's label columns (22 local and 5 global labels; the
    sixth global label, "No finding", is the all-zero row) or Kaggle's 14 local findings. Every box of every
    radiologist is kept in ``boxes`` (with its ``rad_id``). VinDr-CXR publishes no patient
    ids: each image is its own patient (``patient_ids_from="image_id"``), so a
    patient-wise split cannot keep one person's images together.
    """
    root = Path(root)
    if rule not in VINDR_RULES:
        raise DataError(f"rule={rule!r} is not a VinDr-CXR merge rule; use one of "
                        + "; ".join(f"'{k}' ({v})" for k, v in VINDR_RULES.items()))
    physionet, kaggle = _physionet_tables(root), _kaggle_table(root)
    problems: list[Problem] = []
    parts, boxes = [], []
    if physionet:
        names = None
        for split, (labels_path, ann_path) in physionet.items():
            if labels_path is None:
                raise DataError(f"'{ann_path}' has no image_labels_{split}.csv beside it; the "
                                "image labels come from that table")
            df = read_release_table(labels_path, ["image_id"], what="VinDr-CXR image labels")
            if "rad_id" not in df:
                df["rad_id"] = "consensus"
            cols = tuple(c for c in df.columns if c not in ("image_id", "rad_id", _NO_FINDING))
            if names is not None and cols != names:
                raise DataError(f"'{labels_path}' has other label columns than the train table; "
                                "use the tables of one release")
            names = cols
            values = df[list(cols)].apply(lambda c: pd.to_numeric(c.str.strip(), errors="coerce"))
            bad = ~values.isin([0, 1])
            if bad.any().any():
                i, j = np.argwhere(bad.to_numpy())[0]
                raise DataError(f"{labels_path} line {i + 2}, column '{cols[j]}': "
                                f"'{df[cols[j]].iloc[i]}' is not 0 or 1")
            readings = pd.concat([df[["image_id", "rad_id"]].apply(lambda c: c.str.strip()), values], axis=1)
            ids, y = _merge(readings, cols, rule)
            parts.append((split, labels_path, ids, y))
            if ann_path is not None:
                ann = read_release_table(ann_path, ["image_id", "class_name", *_BOX],
                                         what="VinDr-CXR annotations")
                boxes.append(_boxes(ann, ann_path))
    elif kaggle is not None:
        names = VINDR_KAGGLE_FINDINGS
        df = read_release_table(kaggle, ["image_id", "class_name", "rad_id", *_BOX], what="VinDr-CXR")
        cls = df["class_name"].str.strip()
        known = set(names) | {_NO_FINDING}
        bad = ~cls.isin(known)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{kaggle} line {i + 2}: " + unknown_name_message("finding", cls.iloc[i], known))
        onehot = pd.DataFrame({n: (cls == n).astype(int) for n in names})
        readings = pd.concat([df[["image_id", "rad_id"]].apply(lambda c: c.str.strip()), onehot], axis=1)
        ids, y = _merge(readings, names, rule)
        parts.append(("train", kaggle, ids, y))
        boxes.append(_boxes(df, kaggle))
    else:
        raise DataError(f"no VinDr-CXR tables in '{root}': expected annotations/image_labels_train.csv "
                        "(PhysioNet) or the competition's train.csv")
    on_disk = index_by_stem(root)
    rows, labels = [], []
    for split, source, ids, y in parts:
        rows.append(pd.DataFrame({"image_id": ids, "split": split, "table": str(source)}))
        labels.append(y)
    table = pd.concat(rows, ignore_index=True)
    y = np.concatenate(labels)
    paths = [on_disk.get(i) for i in table["image_id"]]
    present = keep_present(paths, parts[0][1], root, problems, ids=table["image_id"].tolist())
    problems.append(Problem("no_patient_ids", str(parts[0][1]),
                            "VinDr-CXR publishes no patient ids: each image is its own patient"))
    kept = [p for p, ok in zip(paths, present) if ok]
    table = table.loc[present].reset_index(drop=True)
    out = pd.DataFrame({"image_id": table["image_id"], "path": [str(p) for p in kept],
                        "patient_id": table["image_id"], "split": table["split"],
                        "file_size": [p.stat().st_size for p in kept]})
    box = pd.concat(boxes, ignore_index=True) if boxes else None
    if box is not None:
        box = box[box["image_id"].isin(set(out["image_id"]))].reset_index(drop=True)
    return Dataset(out, y[present], tuple(names), name=f"VinDr-CXR at {root} (rule '{rule}')",
                   problems=tuple(problems), boxes=box, format="vindr_cxr", patient_ids_from="image_id")


# Above DICOM folders: the release's images are .dicom files.
@register_reader("vindr_cxr", description="VinDr-CXR (image_labels_train.csv / annotations_train.csv, "
                 "or the Kaggle competition's train.csv with rad_id and boxes)",
                 read=read_vindr_cxr, priority=25)
def _vindr(path: Path) -> str | None:
    if not path.is_dir():
        return None
    found = _physionet_tables(path)
    if found:
        names = [p.relative_to(path).as_posix() for pair in found.values() for p in pair if p]
        return "holds " + ", ".join(names)
    kaggle = _kaggle_table(path)
    return None if kaggle is None else "holds train.csv with VinDr-CXR's columns (class_name, rad_id, boxes)"
