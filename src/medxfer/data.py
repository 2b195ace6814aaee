"""Datasets: one contract for every source.

A :class:`Dataset` is a table with one row per image (columns ``image_id``, ``path``,
``patient_id`` plus metadata such as ``age``, ``sex``, ``view``, ``follow_up``), a float
``labels`` array aligned row by row holding 1, 0 or NaN (unknown) per finding, and the
finding names. Methods that select rows return new datasets; nothing mutates in place.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError, unknown_name_message
from .images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

#: The 14 findings of ChestX-ray14 in the order of the release paper.
CHESTXRAY14_FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
    "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
    "Pleural_Thickening", "Hernia",
)
NO_FINDING = "No Finding"
_TABLE_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017_v2020.csv.gz",
                "Data_Entry_2017.csv", "Data_Entry_2017.csv.gz")
_EXPECTED_HEAD = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID",
                  "Patient Age", "Patient Gender", "View Position"]


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
    """

    table: pd.DataFrame
    labels: np.ndarray
    label_names: tuple[str, ...]
    name: str = "dataset"
    problems: tuple[Problem, ...] = field(default=())

    def __post_init__(self):
        if self.labels.shape != (len(self.table), len(self.label_names)):
            raise DataError(
                f"labels have shape {self.labels.shape} but the table has "
                f"{len(self.table)} rows and {len(self.label_names)} label names")
        for col in ("image_id", "path", "patient_id"):
            if col not in self.table.columns:
                raise DataError(f"dataset table lacks the column '{col}'")

    def __len__(self) -> int:
        return len(self.table)

    @property
    def patient_ids(self) -> np.ndarray:
        return self.table["patient_id"].astype(str).to_numpy()

    def subset(self, index) -> "Dataset":
        """Rows by integer positions or a boolean mask; a new dataset."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return replace(self, table=self.table.iloc[index].reset_index(drop=True),
                       labels=self.labels[index])

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
        for j, new in enumerate(new_names):
            cols = [i for i, old in enumerate(self.label_names) if mapping.get(old, old) == new]
            block = self.labels[:, cols]
            known = ~np.isnan(block)
            anypos = np.nanmax(np.where(known, block, -np.inf), axis=1) == 1
            allknown = known.all(axis=1)
            out[:, j] = np.where(anypos, 1.0, np.where(allknown, 0.0, np.nan))
        return replace(self, labels=out, label_names=tuple(new_names))

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
            "images": len(self),
            "patients": int(self.table["patient_id"].nunique()),
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
        counts: dict[str, int] = {}
        for p in self.problems:
            counts[p.kind] = counts.get(p.kind, 0) + 1
        out["problems"] = counts
        return out


def _num(x):
    return None if pd.isna(x) else float(x)


# ----------------------------------------------------------------------------- readers


def read_dataset(path: str | Path, **kwargs) -> Dataset:
    """Open a dataset folder by its layout (currently: the ChestX-ray14 release layout)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset folder '{path}' does not exist")
    if path.is_dir() and find_chestxray14_table(path) is not None:
        return read_chestxray14(path, **kwargs)
    raise DataError(
        f"'{path}' is not a dataset medxfer recognises: expected a ChestX-ray14 folder with "
        f"one of {', '.join(_TABLE_NAMES)} beside an images folder")


def find_chestxray14_table(root: Path) -> Path | None:
    for name in _TABLE_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def read_chestxray14_table(table_path: str | Path) -> pd.DataFrame:
    """Read the official metadata table (v2020 or 2017, gzipped or not).

    Its header names ``OriginalImage[Width,Height]`` and ``OriginalImagePixelSpacing[x,y]``
    contain commas, so rows have more fields than header names; the first seven columns
    are read by position after checking their names.

    Returns
    -------
    DataFrame with columns image_id, finding_labels, follow_up, patient_id, age, sex, view,
    width, height, pixel_spacing_x, pixel_spacing_y.
    """
    table_path = Path(table_path)
    try:
        raw = pd.read_csv(table_path, header=None, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(f"cannot read metadata table '{table_path}': {exc}") from exc
    head = [h.strip() for h in raw.iloc[0].tolist()]
    if head[:7] != _EXPECTED_HEAD:
        raise DataError(
            f"metadata table '{table_path}' does not have the ChestX-ray14 columns: expected "
            f"the header to start with {_EXPECTED_HEAD}, found {head[:7]}. Use the release's "
            "Data_Entry_2017_v2020.csv as published.")
    body = raw.iloc[1:, :11].reset_index(drop=True)
    cols = ["image_id", "finding_labels", "follow_up", "patient_id", "age", "sex", "view",
            "width", "height", "pixel_spacing_x", "pixel_spacing_y"]
    body.columns = cols[: body.shape[1]]
    for c in body.columns:
        body[c] = body[c].str.strip()
    return body


def _parse_age(values: pd.Series, problems: list[Problem], source: str) -> pd.Series:
    # The 2017 table writes ages such as "058Y"; the v2020 one plain integers.
    cleaned = values.str.replace(r"^(\d+)\s*[Yy]$", r"\1", regex=True)
    age = pd.to_numeric(cleaned, errors="coerce")
    for image_id, raw in zip(values.index[age.isna() & (values != "")], values[age.isna() & (values != "")]):
        problems.append(Problem("bad_age", f"{source} row {image_id + 2}",
                                f"age '{raw}' is not a number; kept as missing"))
    return age


def parse_finding_labels(text: pd.Series, label_names=CHESTXRAY14_FINDINGS,
                         *, source: str = "table") -> np.ndarray:
    """'A|B' strings to a (n, n_labels) 0/1 float32 array; 'No Finding' is all zeros.

    Raises DataError naming the row for a finding that is not in ``label_names``.
    """
    index = {n: j for j, n in enumerate(label_names)}
    out = np.zeros((len(text), len(label_names)), dtype=np.float32)
    for i, cell in enumerate(text.tolist()):
        for name in str(cell).split("|"):
            name = name.strip()
            if name in ("", NO_FINDING):
                continue
            if name not in index:
                raise DataError(
                    f"{source} row {i + 2}: " + unknown_name_message("finding", name, index)
                    + " Fix the table or map the name with relabel().")
            out[i, index[name]] = 1.0
    return out


def index_images(root: Path) -> dict[str, Path]:
    """File name -> path for every image below ``root`` (flat or images_0NN/images/)."""
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            if Path(fn).suffix.lower() in IMAGE_SUFFIXES and fn not in found:
                found[fn] = Path(dirpath) / fn
    return found


def read_chestxray14(root: str | Path, *, table: str | Path | None = None,
                     findings: tuple[str, ...] = CHESTXRAY14_FINDINGS) -> Dataset:
    """Read a ChestX-ray14 folder laid out like the NIH release.

    Parameters
    ----------
    root : folder holding the metadata table and the images, flat or in the release's
        ``images_0NN/images/`` subfolders (any depth works).
    table : metadata table path; by default the one found in ``root``.

    Images listed in the table but absent on disk are not an error (many users hold part
    of the release): they are logged once and recorded as ``missing_image`` problems.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"ChestX-ray14 folder '{root}' does not exist or is not a folder")
    table_path = Path(table) if table else find_chestxray14_table(root)
    if table_path is None or not table_path.is_file():
        raise DataError(f"no metadata table in '{root}': expected one of {', '.join(_TABLE_NAMES)}")
    meta = read_chestxray14_table(table_path)
    problems: list[Problem] = []

    dup = meta["image_id"].duplicated(keep="first")
    for image_id in meta.loc[dup, "image_id"]:
        problems.append(Problem("duplicate_row", image_id, f"listed twice in {table_path.name}; first row kept"))
    meta = meta.loc[~dup].reset_index(drop=True)

    files = index_images(root)
    if not files:
        raise DataError(f"no image files found under '{root}'")
    on_disk = meta["image_id"].isin(files.keys()).to_numpy()
    missing = meta.loc[~on_disk, "image_id"].tolist()
    if missing:
        log.info("%d of %d images listed in %s are not under %s (e.g. %s); reading the %d present",
                 len(missing), len(meta), table_path.name, root, ", ".join(missing[:3]),
                 int(on_disk.sum()))
        # One record, not one per file: a partial copy of the release misses ~10^5 files.
        problems.append(Problem(
            "missing_images", str(table_path),
            f"{len(missing)} of {len(meta)} listed images are not under {root} "
            f"(e.g. {', '.join(missing[:5])}); only the {int(on_disk.sum())} present are used"))
    listed = set(meta["image_id"])
    for fn in sorted(set(files) - listed):
        problems.append(Problem("unlisted_image", fn, f"on disk but not in {table_path.name}; ignored"))

    meta = meta.loc[on_disk].reset_index(drop=True)
    if meta.empty:
        raise DataError(f"none of the images listed in '{table_path}' are under '{root}'")
    labels = parse_finding_labels(meta["finding_labels"], findings, source=str(table_path))
    paths = [files[i] for i in meta["image_id"]]
    out = pd.DataFrame({
        "image_id": meta["image_id"],
        "path": [str(p) for p in paths],
        "patient_id": meta["patient_id"].astype(str),
        "age": _parse_age(meta["age"], problems, str(table_path)),
        "sex": meta["sex"],
        "view": meta["view"],
        "follow_up": pd.to_numeric(meta["follow_up"], errors="coerce"),
        "file_size": [p.stat().st_size for p in paths],
    })
    return Dataset(out, labels, tuple(findings), name=f"ChestX-ray14 at {root}",
                   problems=tuple(problems))


def read_image_paths(paths: list[str | Path]) -> tuple[Dataset, list[Problem]]:
    """A label-free dataset from image files and folders (for prediction).

    Folders are searched recursively for image files. Paths that do not exist are returned
    as problems rather than raised, so one bad argument does not stop the others.
    """
    files: list[Path] = []
    problems: list[Problem] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(index_images(p).values()))
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
                   problems=tuple(problems)), problems
