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
    task : "multilabel" (independent findings) or "multiclass" (one class per image).
    boxes : expert bounding boxes (image_id, finding, x, y, w, h) for rows that have them.
    """

    table: pd.DataFrame
    labels: np.ndarray
    label_names: tuple[str, ...]
    name: str = "dataset"
    problems: tuple[Problem, ...] = field(default=())
    task: str = "multilabel"  # or "multiclass": exactly one 1 per row (class folders)
    boxes: pd.DataFrame | None = field(default=None, repr=False)

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
        table = self.table.iloc[index].reset_index(drop=True)
        boxes = None if self.boxes is None else \
            self.boxes[self.boxes["image_id"].isin(set(table["image_id"]))].reset_index(drop=True)
        return replace(self, table=table, labels=self.labels[index], boxes=boxes)

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
        Yk = np.nan_to_num(self.labels, nan=0.0)
        co = (Yk.T @ Yk).astype(int)
        out["cooccurrence"] = {a: {b: int(co[i, j]) for j, b in enumerate(self.label_names) if j != i and co[i, j]}
                               for i, a in enumerate(self.label_names)}
        if "age" in self.table.columns:
            age = pd.to_numeric(self.table["age"], errors="coerce")
            bins = pd.cut(age, [0, 18, 30, 40, 50, 60, 70, 80, 200], right=False)
            out["age"]["histogram"] = {str(k): int(v) for k, v in bins.value_counts(sort=False).items()}
        if self.boxes is not None:
            out["boxes"] = int(len(self.boxes))
        counts: dict[str, int] = {}
        for p in self.problems:
            counts[p.kind] = counts.get(p.kind, 0) + 1
        out["problems"] = counts
        return out


def _num(x):
    return None if pd.isna(x) else float(x)


# ----------------------------------------------------------------------------- readers


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
        f"{', '.join(_TABLE_NAMES)} beside the images), a CSV of paths and labels, a folder with "
        "one subfolder of images per class, or a folder of DICOM files")


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


def _drop_duplicate_rows(meta: pd.DataFrame, key: str, label_cols: list[str], source,
                         problems: list[Problem]) -> pd.DataFrame:
    """Identical repeats are dropped and recorded; repeats with other labels are an error."""
    dup = meta[key].duplicated(keep=False)
    if not dup.any():
        return meta
    for image_id, rows in meta[dup].groupby(key, sort=False):
        labels = rows[label_cols].astype(str).agg("|".join, axis=1)
        if labels.nunique() > 1:
            lines = ", ".join(str(i + 2) for i in rows.index)
            raise DataError(f"{source}: image '{image_id}' is listed {len(rows)} times with different "
                            f"labels (lines {lines}); keep one row per image and fix its labels.")
        problems.append(Problem("duplicate_row", str(image_id),
                                f"listed {len(rows)} times in {Path(str(source)).name}; first row kept"))
    return meta.loc[~meta[key].duplicated(keep="first")].reset_index(drop=True)


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

    meta = _drop_duplicate_rows(meta, "image_id", ["finding_labels"], table_path, problems)

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
    boxes = read_chestxray14_boxes(root)
    if boxes is not None:
        boxes = boxes[boxes["image_id"].isin(set(out["image_id"]))].reset_index(drop=True)
    return Dataset(out, labels, tuple(findings), name=f"ChestX-ray14 at {root}",
                   problems=tuple(problems), boxes=boxes)


def read_chestxray14_boxes(root: str | Path) -> pd.DataFrame | None:
    """The official BBox_List_2017.csv(.gz) as (image_id, finding, x, y, w, h) in pixels of
    the 1024x1024 release images, or None when the folder has no such file."""
    root = Path(root)
    for name in ("BBox_List_2017.csv", "BBox_List_2017.csv.gz"):
        if (root / name).is_file():
            raw = pd.read_csv(root / name, header=None, skiprows=1, dtype=str)
            if raw.shape[1] < 6:
                raise DataError(f"'{root / name}' should have 6 columns (Image Index, Finding Label, "
                                f"x, y, w, h), found {raw.shape[1]}")
            out = raw.iloc[:, :6].copy()
            out.columns = ["image_id", "finding", "x", "y", "w", "h"]
            for c in ("x", "y", "w", "h"):
                out[c] = pd.to_numeric(out[c], errors="raise")
            # The box file spells one finding differently from the labels.
            out["finding"] = out["finding"].replace({"Infiltrate": "Infiltration"})
            return out
    return None


def official_split(ds: Dataset, root: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the official train_val and test lists of ChestX-ray14.

    Refuses to run without both list files: guessing the split would mislabel results."""
    root = Path(root)
    lists = {}
    for name in ("train_val_list.txt", "test_list.txt"):
        path = root / name
        if not path.is_file():
            raise DataError(f"the official split needs '{path}', which is missing. Copy "
                            "train_val_list.txt and test_list.txt from the release into the folder, "
                            "or use a patient-wise split instead.")
        lists[name] = {ln.strip() for ln in path.read_text().splitlines() if ln.strip()}
    ids = ds.table["image_id"].to_numpy()
    tr = np.flatnonzero(np.isin(ids, list(lists["train_val_list.txt"])))
    te = np.flatnonzero(np.isin(ids, list(lists["test_list.txt"])))
    from .splits import check_no_patient_overlap

    check_no_patient_overlap(ds.patient_ids, tr, te)
    return tr, te


def split_from_file(ds: Dataset, path: str | Path) -> dict[str, np.ndarray]:
    """Row indices per split name from a CSV with columns image_id and split."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file '{path}' does not exist")
    df = pd.read_csv(path, dtype=str)
    missing = {"image_id", "split"} - set(df.columns)
    if missing:
        raise DataError(f"split file '{path}' needs the columns image_id and split; it lacks "
                        f"{', '.join(sorted(missing))} (found {', '.join(df.columns)})")
    where = dict(zip(df["image_id"], df["split"]))
    unknown = [i for i in ds.table["image_id"] if i not in where]
    if unknown:
        raise DataError(f"split file '{path}' does not assign {len(unknown)} image(s) of the dataset "
                        f"(e.g. {', '.join(unknown[:3])}); give every image a split")
    names = ds.table["image_id"].map(where).to_numpy()
    parts = {name: np.flatnonzero(names == name) for name in sorted(set(names))}
    from .splits import check_no_patient_overlap

    check_no_patient_overlap(ds.patient_ids, *parts.values())
    return parts


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


# ----------------------------------------------------------------------------- generic CSV

PATH_COLUMNS = ("path", "image", "filename", "Path", "Image Index")
PATIENT_COLUMNS = ("patient_id", "patient", "Patient ID", "PatientID", "subject_id")


def _pick(columns, wanted, given, what: str, source) -> str | None:
    if given is not None:
        if given not in columns:
            raise DataError(f"{source}: no column '{given}' for the {what}; columns are "
                            f"{', '.join(columns)}")
        return given
    for c in wanted:
        if c in columns:
            return c
    return None


def parse_label_cell(value, *, row: int, column: str, source) -> float:
    """'1'/'0'/'1.0'/'0.0'/'' -> 1.0/0.0/NaN. Anything else is an error naming the cell."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    text = str(value).strip()
    if text == "" or text.lower() in ("nan", "na"):
        return np.nan
    try:
        num = float(text)
    except ValueError:
        num = None
    if num in (0.0, 1.0):
        return num
    raise DataError(f"{source} line {row + 2}, column '{column}': label '{text}' is not 1, 0 or "
                    "blank (unknown). Map uncertain labels (e.g. -1) to 1, 0 or blank first.")


def read_csv_dataset(csv_path: str | Path, *, root: str | Path | None = None,
                     path_column: str | None = None, patient_column: str | None = None,
                     label_columns: list[str] | None = None, labels_column: str | None = None,
                     separator: str = "|", label_names: list[str] | None = None) -> Dataset:
    """A dataset from a CSV of image paths and labels.

    Either one column per label holding 1, 0 or blank (blank = unknown, NaN; never read as
    negative), or one ``labels_column`` holding ``separator``-joined finding names (then every
    finding not named is 0, and ``label_names`` fixes the label set and order).
    Relative paths are resolved against ``root`` (default: the CSV's folder). Rows whose image
    is missing are skipped and recorded as problems.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"CSV file '{csv_path}' does not exist")
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(f"cannot read CSV '{csv_path}': {exc}") from exc
    cols = list(df.columns)
    pcol = _pick(cols, PATH_COLUMNS, path_column, "image path", csv_path)
    if pcol is None:
        raise DataError(f"{csv_path}: no image path column; name one with path_column= (or "
                        f"--path-column). Looked for {', '.join(PATH_COLUMNS)}; found {', '.join(cols)}")
    gcol = _pick(cols, PATIENT_COLUMNS, patient_column, "patient id", csv_path)
    problems: list[Problem] = []
    if labels_column is not None or (label_columns is None and "labels" in cols):
        lcol = labels_column or "labels"
        if lcol not in cols:
            raise DataError(f"{csv_path}: no column '{lcol}'; columns are {', '.join(cols)}")
        names = label_names or sorted({n.strip() for cell in df[lcol] for n in str(cell).split(separator)
                                       if n.strip() and n.strip() != NO_FINDING})
        labels = parse_finding_labels(df[lcol].str.replace(separator, "|", regex=False), tuple(names),
                                      source=str(csv_path))
    else:
        used = {pcol, gcol}
        names = label_columns or [c for c in cols if c not in used and c not in
                                  ("age", "sex", "view", "split", "Patient Age", "Patient Gender",
                                   "View Position")]
        missing = [c for c in names if c not in cols]
        if missing:
            raise DataError(f"{csv_path}: label column(s) {', '.join(missing)} not found; columns "
                            f"are {', '.join(cols)}")
        if not names:
            raise DataError(f"{csv_path}: no label columns found besides the path and patient columns")
        labels = np.array([[parse_label_cell(v, row=i, column=c, source=csv_path)
                            for c, v in zip(names, row)]
                           for i, row in enumerate(df[names].itertuples(index=False))],
                          dtype=np.float32).reshape(len(df), len(names))
    df = df.assign(_labels=[tuple(r) for r in np.nan_to_num(labels, nan=-1)], _row=np.arange(len(df)))
    df = _drop_duplicate_rows(df, pcol, ["_labels"], csv_path, problems)
    labels = labels[df["_row"].to_numpy()]
    base = Path(root) if root else csv_path.parent
    paths = [Path(p) if Path(p).is_absolute() else base / p for p in df[pcol]]
    exists = np.array([p.is_file() for p in paths])
    for p in np.array(paths, dtype=object)[~exists]:
        problems.append(Problem("missing_image", str(p), f"listed in {csv_path.name}, not on disk; row skipped"))
    if not exists.any():
        raise DataError(f"none of the {len(paths)} images listed in '{csv_path}' exist (first: "
                        f"{paths[0] if paths else 'none'}); check root= / the paths")
    table = pd.DataFrame({
        "image_id": [p.name for p in paths],
        "path": [str(p) for p in paths],
        "patient_id": df[gcol].astype(str) if gcol else [p.stem for p in paths],
    })
    if gcol is None:
        problems.append(Problem("no_patient_column", str(csv_path),
                                "no patient column: each image is treated as its own patient, so "
                                "splits cannot keep a patient's images together"))
    for c in ("age", "sex", "view"):
        if c in df.columns:
            table[c] = df[c].to_numpy()
    if "age" in table.columns:
        table["age"] = _parse_age(table["age"].astype(str), problems, str(csv_path))
    table["file_size"] = [p.stat().st_size if p.is_file() else 0 for p in paths]
    ds = Dataset(table, labels, tuple(names), name=f"CSV {csv_path}", problems=tuple(problems))
    return ds.subset(exists)


# ----------------------------------------------------------------------------- folders


def read_class_folder(root: str | Path) -> Dataset:
    """Single-label data: one subfolder per class, images inside (any depth)."""
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
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
                   problems=(Problem("no_patient_column", str(root),
                                     "class folders carry no patient ids: each image is its own "
                                     "patient"),))


def read_dicom_folder(root: str | Path) -> Dataset:
    """Unlabelled DICOM files (for prediction, inspection or pairing with a CSV), patient ID
    taken from each header."""
    from .images import DICOM_SUFFIXES, dicom_patient_id

    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in DICOM_SUFFIXES)
    if not files:
        raise DataError(f"no .dcm files under '{root}'")
    problems, rows = [], []
    for f in files:
        try:
            pid = dicom_patient_id(f)
        except Exception as exc:
            problems.append(Problem("unreadable_image", str(f), f"DICOM header unreadable: {exc}"))
            continue
        if pid is None:
            problems.append(Problem("no_patient_id", str(f), "no PatientID in the header; file name used"))
        rows.append((f.name, str(f), pid or f.stem, f.stat().st_size))
    table = pd.DataFrame(rows, columns=["image_id", "path", "patient_id", "file_size"])
    return Dataset(table, np.zeros((len(table), 0), np.float32), (), name=f"DICOM folder {root}",
                   problems=tuple(problems))
