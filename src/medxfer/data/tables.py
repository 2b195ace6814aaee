"""Datasets from a generic CSV table of image paths, patient ids and labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from .contract import NO_FINDING, Dataset, Problem
from .parsing import (drop_duplicate_rows, normalise_patient_ids, parse_age, parse_finding_labels,
                      parse_label_cell)
from .registry import register_reader

#: Column names tried, in order, for the image path and the patient id.
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

    Patient ids come from the patient column (``patient_ids_from="metadata"``), written
    as :func:`normalise_patient_ids` does ("00075" is "75"); without one, from each file
    name (``"file_name"``: one patient per image).
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
    df = drop_duplicate_rows(df, pcol, ["_labels"], csv_path, problems)
    labels = labels[df["_row"].to_numpy()]
    base = Path(root) if root else csv_path.parent
    paths = [Path(p) if Path(p).is_absolute() else base / p for p in df[pcol]]
    exists = np.array([p.is_file() for p in paths], dtype=bool)
    for p in np.array(paths, dtype=object)[~exists]:
        problems.append(Problem("missing_image", str(p), f"listed in {csv_path.name}, not on disk; row skipped"))
    if not exists.any():
        raise DataError(f"none of the {len(paths)} images listed in '{csv_path}' exist (first: "
                        f"{paths[0] if paths else 'none'}); check root= / the paths")
    table = pd.DataFrame({
        "image_id": [p.name for p in paths],
        "path": [str(p) for p in paths],
        "patient_id": normalise_patient_ids(df[gcol]).to_numpy() if gcol else [p.stem for p in paths],
    })
    if gcol is None:
        problems.append(Problem("no_patient_column", str(csv_path),
                                "no patient column: each image is treated as its own patient, so "
                                "splits cannot keep a patient's images together"))
    for c in ("age", "sex", "view"):
        if c in df.columns:
            table[c] = df[c].to_numpy()
    if "age" in table.columns:
        table["age"] = parse_age(table["age"].astype(str), problems, str(csv_path))
    table["file_size"] = [p.stat().st_size if p.is_file() else 0 for p in paths]
    ds = Dataset(table, labels, tuple(names), name=f"CSV {csv_path}", problems=tuple(problems),
                 patient_ids_from="metadata" if gcol else "file_name")
    return ds.subset(exists)


@register_reader("csv", description="a CSV of paths and labels (.csv or .csv.gz)",
                 read=read_csv_dataset, priority=0)
def _csv_file(path: Path) -> str | None:
    suffix = next((s for s in (".csv", ".csv.gz") if path.name.lower().endswith(s)), None)
    return f"a {suffix} file" if suffix and path.is_file() else None
