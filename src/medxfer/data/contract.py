"""The contract every reader returns: :class:`Dataset` rows with labels, :class:`Problem` records."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ..errors import DataError, unknown_name_message

#: The 14 findings of ChestX-ray14 in the order of the release paper.
CHESTXRAY14_FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
    "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
    "Pleural_Thickening", "Hernia",
)
#: The problem kind of a folder that holds part of the images its table lists: a note
#: about the copy, not a skipped input (reports show it apart).
PARTIAL_COPY = "partial_copy"
#: The label text of an image without any finding.
NO_FINDING = "No Finding"
#: Where a dataset's ``patient_id`` values come from (:attr:`Dataset.patient_ids_from`).
#: Only "metadata" ids group a patient's images; with the others every image is its own
#: patient as far as medxfer can tell, so a patient-wise split may still leak.
PATIENT_ID_SOURCES: dict[str, str] = {
    "metadata": "the format's own patient identifier",
    "file_name": "derived from each image's file name (one patient per image)",
    "image_id": "the format's identifier of an image, not of a patient (one patient per image)",
    "mixed": "the format's patient identifier where present, the file name elsewhere",
    "unknown": "not stated by whoever built the dataset",
}
#: What a reader does with a label the source marks uncertain (CheXpert's and MIMIC's -1).
UNCERTAIN_POLICIES: dict[str, str] = {
    "ignore": "unknown (NaN): neither positive nor negative",
    "zeros": "negative (0), the U-Zeros policy of the CheXpert paper",
    "ones": "positive (1), the U-Ones policy of the CheXpert paper",
}


@dataclass(frozen=True)
class Problem:
    """One thing that went wrong with one input, kept so a run can report it."""

    kind: str  # e.g. "missing_image", "unreadable_image", "bad_age"
    item: str  # file or row the problem concerns
    detail: str

    def as_dict(self) -> dict:
        return {"kind": self.kind, "item": self.item, "detail": self.detail}


@dataclass(frozen=True)
class Dataset:
    """Rows of images with labels.

    Attributes
    ----------
    table : DataFrame, n rows; at least ``image_id``, ``path``, ``patient_id``.
    labels : ndarray of shape (n, n_labels), float32, entries 1.0, 0.0 or NaN.
    label_names : tuple of n_labels str.
    name : short description of the source.
    problems : what was skipped or looked odd while reading, in reading order.
    task : "multilabel" (independent findings) or "multiclass" (one class per image).
    boxes : expert bounding boxes (image_id, finding, x, y, w, h) for rows that have them.
    format, format_reason : the reader :func:`read_dataset` chose and why (None when a
        reader was called directly; the public-set readers name their format themselves,
        so :func:`~medxfer.data.harmonise` knows the source).
    patient_ids_from : one of :data:`PATIENT_ID_SOURCES`: whether ``patient_id`` is a real
        patient identifier ("metadata") or stands in for one ("file_name", "image_id").
    uncertain_policy : one of :data:`UNCERTAIN_POLICIES` for sources that mark labels
        uncertain, else None.
    uncertain_mask : ndarray of shape (n, n_labels), bool: the cells the source marked
        uncertain (whatever the policy made of them), or None. Follows the rows through
        subset() and the findings through relabel(); :attr:`uncertain_counts` counts it.
    """

    table: pd.DataFrame
    labels: np.ndarray
    label_names: tuple[str, ...]
    name: str = "dataset"
    problems: tuple[Problem, ...] = field(default=())
    task: str = "multilabel"  # or "multiclass": exactly one 1 per row (class folders)
    boxes: pd.DataFrame | None = field(default=None, repr=False)
    format: str | None = None
    format_reason: str | None = None
    patient_ids_from: str = "unknown"
    uncertain_policy: str | None = None
    uncertain_mask: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.labels.shape != (len(self.table), len(self.label_names)):
            raise DataError(
                f"labels have shape {self.labels.shape} but the table has "
                f"{len(self.table)} rows and {len(self.label_names)} label names")
        for col in ("image_id", "path", "patient_id"):
            if col not in self.table.columns:
                raise DataError(f"dataset table lacks the column '{col}'")
        if self.patient_ids_from not in PATIENT_ID_SOURCES:
            raise DataError(f"patient_ids_from must be one of {', '.join(PATIENT_ID_SOURCES)}; "
                            f"got {self.patient_ids_from!r}")
        if self.uncertain_policy is not None and self.uncertain_policy not in UNCERTAIN_POLICIES:
            raise DataError(f"uncertain_policy must be one of {', '.join(UNCERTAIN_POLICIES)} or "
                            f"None; got {self.uncertain_policy!r}")
        if self.uncertain_mask is not None and self.uncertain_mask.shape != self.labels.shape:
            raise DataError(f"uncertain_mask has shape {self.uncertain_mask.shape}, the labels "
                            f"{self.labels.shape}")

    def __len__(self) -> int:
        return len(self.table)

    @property
    def patient_ids(self) -> np.ndarray:
        return self.table["patient_id"].astype(str).to_numpy()

    @property
    def uncertain_counts(self) -> dict[str, int]:
        """Finding -> how many of these rows the source marked uncertain (only findings with
        any; empty for sources without uncertain labels)."""
        if self.uncertain_mask is None:
            return {}
        n = self.uncertain_mask.sum(axis=0)
        return {name: int(k) for name, k in zip(self.label_names, n) if k}

    def subset(self, index) -> "Dataset":
        """Rows by integer positions or a boolean mask; a new dataset."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        table = self.table.iloc[index].reset_index(drop=True)
        boxes = None if self.boxes is None else \
            self.boxes[self.boxes["image_id"].isin(set(table["image_id"]))].reset_index(drop=True)
        mask = None if self.uncertain_mask is None else self.uncertain_mask[index]
        return replace(self, table=table, labels=self.labels[index], boxes=boxes, uncertain_mask=mask)

    def filter(self, **equals) -> "Dataset":
        """Rows whose metadata equal the given values, e.g. ``filter(view="PA")``."""
        mask = np.ones(len(self), dtype=bool)
        for col, value in equals.items():
            if col not in self.table.columns:
                raise DataError(unknown_name_message("metadata column", col, self.table.columns))
            mask &= (self.table[col] == value).to_numpy()
        return self.subset(mask)

    def relabel(self, mapping: dict[str, str | None]) -> "Dataset":
        """Rename, merge (several names to one, positive if any is) or drop (None) findings."""
        for old in mapping:
            if old not in self.label_names:
                raise DataError(unknown_name_message("finding", old, self.label_names))
        new_names: list[str] = []
        for old in self.label_names:
            new = mapping.get(old, old)
            if new is not None and new not in new_names:
                new_names.append(new)
        out = np.full((len(self), len(new_names)), np.nan, dtype=np.float32)
        unsure = None if self.uncertain_mask is None else np.zeros(out.shape, dtype=bool)
        for j, new in enumerate(new_names):
            cols = [i for i, old in enumerate(self.label_names) if mapping.get(old, old) == new]
            if unsure is not None:
                unsure[:, j] = self.uncertain_mask[:, cols].any(axis=1)
            block = self.labels[:, cols]
            known = ~np.isnan(block)
            anypos = np.nanmax(np.where(known, block, -np.inf), axis=1) == 1
            allknown = known.all(axis=1)
            out[:, j] = np.where(anypos, 1.0, np.where(allknown, 0.0, np.nan))
        return replace(self, labels=out, label_names=tuple(new_names), uncertain_mask=unsure)

    def fingerprint(self) -> str:
        """sha256 over image ids, file sizes and labels: changes when the rows change."""
        h = hashlib.sha256()
        for image_id, size in zip(self.table["image_id"], self.table.get("file_size", [0] * len(self))):
            h.update(f"{image_id}\t{size}\n".encode())
        h.update(np.nan_to_num(self.labels, nan=-1).astype(np.int8).tobytes())
        h.update("|".join(self.label_names).encode())
        return h.hexdigest()

    def summary(self) -> dict:
        """Counts per finding, patients, views, sex and age, plus problems."""
        known = ~np.isnan(self.labels)
        out = {
            "name": self.name,
            "format": self.format,
            "format_reason": self.format_reason,
            "images": len(self),
            "patients": int(self.table["patient_id"].nunique()),
            "patient_ids_from": self.patient_ids_from,
            "findings": {n: int(np.nansum(self.labels[:, j]) if known[:, j].any() else 0)
                         for j, n in enumerate(self.label_names)},
            "unknown_labels": {n: int((~known[:, j]).sum()) for j, n in enumerate(self.label_names)
                               if (~known[:, j]).any()},
            "no_finding": int(((self.labels == 0) | ~known).all(axis=1).sum()),
        }
        for col in ("view", "sex"):
            if col in self.table.columns:
                out[col] = {str(k): int(v) for k, v in self.table[col].value_counts(dropna=False).items()}
        if "age" in self.table.columns:
            age = pd.to_numeric(self.table["age"], errors="coerce")
            out["age"] = {"min": _num(age.min()), "median": _num(age.median()),
                          "max": _num(age.max()), "missing": int(age.isna().sum())}
        Yk = np.nan_to_num(self.labels, nan=0.0)
        co = (Yk.T @ Yk).astype(int)
        out["cooccurrence"] = {a: {b: int(co[i, j]) for j, b in enumerate(self.label_names) if j != i and co[i, j]}
                               for i, a in enumerate(self.label_names)}
        if "age" in self.table.columns:
            age = pd.to_numeric(self.table["age"], errors="coerce")
            bins = pd.cut(age, [0, 18, 30, 40, 50, 60, 70, 80, 200], right=False)
            out["age"]["histogram"] = {str(k): int(v) for k, v in bins.value_counts(sort=False).items()}
        if self.uncertain_policy is not None:
            out["uncertain_policy"] = self.uncertain_policy
            out["uncertain_labels"] = self.uncertain_counts
        if self.boxes is not None:
            out["boxes"] = int(len(self.boxes))
        counts: dict[str, int] = {}
        for p in self.problems:
            counts[p.kind] = counts.get(p.kind, 0) + 1
        out["problems"] = counts
        return out


def _num(x):
    return None if pd.isna(x) else float(x)
