"""ChestX-ray14 (NIH) as released: the metadata table, the images, the bounding boxes."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ..errors import DataError
from .contract import CHESTXRAY14_FINDINGS, PARTIAL_COPY, Dataset, Problem
from .folders import index_images
from .parsing import drop_duplicate_rows, normalise_patient_ids, parse_age, parse_finding_labels
from .registry import register_reader

log = logging.getLogger(__name__)

#: File names of the official metadata table, in the order they are looked for.
CHESTXRAY14_TABLE_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017_v2020.csv.gz",
                           "Data_Entry_2017.csv", "Data_Entry_2017.csv.gz")
_EXPECTED_HEAD = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID",
                  "Patient Age", "Patient Gender", "View Position"]


def find_chestxray14_table(root: Path) -> Path | None:
    for name in CHESTXRAY14_TABLE_NAMES:
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


def read_chestxray14(root: str | Path, *, table: str | Path | None = None,
                     findings: tuple[str, ...] = CHESTXRAY14_FINDINGS) -> Dataset:
    """Read a ChestX-ray14 folder laid out like the NIH release.

    Parameters
    ----------
    root : folder holding the metadata table and the images, flat or in the release's
        ``images_0NN/images/`` subfolders (any depth works).
    table : metadata table path; by default the one found in ``root``.

    Patient ids are the table's ``Patient ID``, digits without leading zeros (see
    :func:`normalise_patient_ids`). Images listed in the table but absent on disk are not an error (many users hold part
    of the release): one INFO line is logged and one ``partial_copy`` problem (a note: reports show it apart from the skipped inputs) recorded.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"ChestX-ray14 folder '{root}' does not exist or is not a folder")
    table_path = Path(table) if table else find_chestxray14_table(root)
    if table_path is None or not table_path.is_file():
        raise DataError(f"no metadata table in '{root}': expected one of "
                        f"{', '.join(CHESTXRAY14_TABLE_NAMES)}")
    meta = read_chestxray14_table(table_path)
    problems: list[Problem] = []

    meta = drop_duplicate_rows(meta, "image_id", ["finding_labels"], table_path, problems)

    files = index_images(root)
    if not files:
        raise DataError(f"no image files found under '{root}'")
    on_disk = meta["image_id"].isin(files.keys()).to_numpy()
    missing = meta.loc[~on_disk, "image_id"].tolist()
    if missing and on_disk.any():
        present = int(on_disk.sum())
        log.info("%s holds %s of the %s images in %s (a partial copy of the release); reading those",
                 root, f"{present:,}", f"{len(meta):,}", table_path.name)
        # One record, not one per file: a partial copy of the release misses ~10^5 files.
        problems.append(Problem(
            PARTIAL_COPY, str(table_path),
            f"{len(missing)} of {len(meta)} listed images are not under {root} "
            f"(e.g. {', '.join(missing[:5])}); only the {present} present are used"))
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
        "patient_id": normalise_patient_ids(meta["patient_id"]).to_numpy(),
        "age": parse_age(meta["age"], problems, str(table_path)),
        "sex": meta["sex"],
        "view": meta["view"],
        "follow_up": pd.to_numeric(meta["follow_up"], errors="coerce"),
        "file_size": [p.stat().st_size for p in paths],
    })
    boxes = read_chestxray14_boxes(root)
    if boxes is not None:
        boxes = boxes[boxes["image_id"].isin(set(out["image_id"]))].reset_index(drop=True)
    return Dataset(out, labels, tuple(findings), name=f"ChestX-ray14 at {root}",
                   problems=tuple(problems), boxes=boxes, patient_ids_from="metadata")


# Asked before the folder formats: the release's folders may also hold DICOM files or
# class-like subfolders (images_001/, images_002/).
@register_reader("chestxray14", description=f"a ChestX-ray14 folder (one of "
                 f"{', '.join(CHESTXRAY14_TABLE_NAMES)} beside the images)",
                 read=read_chestxray14, priority=30)
def _chestxray14_folder(path: Path) -> str | None:
    table = find_chestxray14_table(path) if path.is_dir() else None
    return None if table is None else f"holds the metadata table {table.name}"


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
