"""What the readers of public chest X-ray sets share: their tables, uncertain labels, views,
image look-up and the record of images a partial copy lacks.

Each public set has its own module (``chexpert``, ``mimic``, ``padchest``, ``vindr``,
``rsna``, ``shenzhen``, ``montgomery``, ``jsrt``); this one registers no format.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..images import IMAGE_SUFFIXES
from .contract import PARTIAL_COPY, UNCERTAIN_POLICIES, Dataset, Problem

log = logging.getLogger(__name__)

#: Public sets' view names -> PA, AP or LATERAL. Anything else is kept in capitals as given
#: (e.g. PadChest's COSTAL, MIMIC's "AP AXIAL"), blank is missing.
VIEW_NAMES = {
    "PA": "PA", "POSTEROANTERIOR": "PA",
    "AP": "AP", "ANTEROPOSTERIOR": "AP", "AP_HORIZONTAL": "AP", "AP SUPINE": "AP",
    "L": "LATERAL", "LL": "LATERAL", "RL": "LATERAL", "LAT": "LATERAL", "LATERAL": "LATERAL",
    "LEFT LATERAL": "LATERAL", "RIGHT LATERAL": "LATERAL",
}


def normalise_view(value) -> str | None:
    """'PA'/'AP'/'LATERAL' for the spellings in :data:`VIEW_NAMES`, None for blank."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip().upper()
    if text in ("", "NAN", "NONE"):
        return None
    return VIEW_NAMES.get(text, text)


def find_table(root: Path, names: Iterable[str]) -> Path | None:
    """The first of ``names`` (each also tried with .gz) that is a file in ``root``."""
    for name in names:
        for candidate in (name, name + ".gz"):
            if (root / candidate).is_file():
                return root / candidate
    return None


def read_release_table(path: Path, required: Iterable[str], *, what: str) -> pd.DataFrame:
    """A released CSV(.gz) as text cells (blank cells stay ''), after checking that it has
    the ``required`` columns; a DataError naming the file otherwise."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(f"cannot read {what} table '{path}': {exc}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{what} table '{path}' lacks the column(s) {', '.join(map(repr, missing))}; "
                        f"its columns are {', '.join(df.columns) or 'none'}. Use the file as the "
                        "release publishes it.")
    return df


def header_of(path: Path) -> list[str]:
    """The column names of a CSV(.gz) without reading its rows ([] when unreadable)."""
    try:
        return [str(c).strip() for c in pd.read_csv(path, nrows=0).columns]
    except Exception:
        return []


def check_uncertain_policy(uncertain: str, *, source: str) -> str:
    """``uncertain`` if it is one of :data:`UNCERTAIN_POLICIES`, else a DataError listing them."""
    if uncertain not in UNCERTAIN_POLICIES:
        choices = "; ".join(f"'{k}' ({v})" for k, v in UNCERTAIN_POLICIES.items())
        raise DataError(f"{source}: uncertain={uncertain!r} is not a policy for uncertain (-1) "
                        f"labels; use one of {choices}")
    return uncertain


def parse_observations(df: pd.DataFrame, columns: list[str], *, source) -> np.ndarray:
    """CheXpert-style cells ('1.0', '0.0', '-1.0', '') -> float32 (n, len(columns)) holding 1,
    0, -1 or NaN. Any other cell is a DataError naming the file, line and column."""
    out = np.full((len(df), len(columns)), np.nan, dtype=np.float32)
    for j, col in enumerate(columns):
        text = df[col].astype(str).str.strip()
        num = pd.to_numeric(text.where(text != "", None), errors="coerce")
        bad = (text != "") & ~num.isin([1.0, 0.0, -1.0])
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{source} line {i + 2}, column '{col}': label '{text.iloc[i]}' is not "
                            "1, 0, -1 (uncertain) or blank (not mentioned)")
        out[:, j] = num.to_numpy(dtype=np.float32, na_value=np.nan)
    return out


def apply_uncertain(raw: np.ndarray, uncertain: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, mask): the -1 cells of ``raw`` made NaN ("ignore"), 0 ("zeros") or 1
    ("ones"), and where they were."""
    mask = raw == -1
    labels = raw.copy()
    labels[mask] = {"ignore": np.nan, "zeros": 0.0, "ones": 1.0}[uncertain]
    return labels, mask


def keep_present(paths: list[Path | None], table_path: Path, root: Path,
                 problems: list[Problem], *, ids: list[str] | None = None) -> np.ndarray:
    """Boolean mask of the rows whose image exists. A partial copy of a release is normal:
    one INFO line and one ``partial_copy`` problem (a note: reports show it apart from the skipped inputs), not one per file. None present is an
    error naming the table and the folder."""
    present = np.array([p is not None and p.is_file() for p in paths], dtype=bool)
    if not present.any():
        first = next((str(p) for p in paths if p is not None), ids[0] if ids else "none")
        raise DataError(f"none of the {len(paths)} images listed in '{table_path}' are under "
                        f"'{root}' (first looked for: {first}); point at the folder the release "
                        "unpacks to")
    if not present.all():
        names = ids if ids is not None else [str(p) for p in paths]
        missing = [n for n, ok in zip(names, present) if not ok]
        log.info("%s holds %s of the %s images in %s (a partial copy of the release); reading those",
                 root, f"{int(present.sum()):,}", f"{len(paths):,}", table_path.name)
        problems.append(Problem(
            PARTIAL_COPY, str(table_path),
            f"{len(missing)} of {len(paths)} listed images are not under {root} "
            f"(e.g. {', '.join(missing[:5])}); only the {int(present.sum())} present are used"))
    return present


def index_by_stem(root: Path, *, suffixes=IMAGE_SUFFIXES) -> dict[str, Path]:
    """File stem -> path for every image below ``root`` (first found wins, sorted walk)."""
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            p = Path(fn)
            if p.suffix.lower() in suffixes and p.stem not in found:
                found[p.stem] = Path(dirpath) / fn
    return found


def file_sizes(paths: list[Path]) -> list[int]:
    return [p.stat().st_size for p in paths]


def images_named(root: Path, pattern: str, *, suffixes=IMAGE_SUFFIXES) -> dict[str, Path]:
    """Stem -> path for the images below ``root`` whose stem fully matches ``pattern``,
    leaving out mask folders (the TB sets ship lung masks under the images' own names)."""
    rx = re.compile(pattern)
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if "mask" not in d.lower())
        for fn in sorted(filenames):
            p = Path(fn)
            if p.suffix.lower() in suffixes and rx.fullmatch(p.stem) and p.stem not in found:
                found[p.stem] = Path(dirpath) / fn
    return found


def parse_clinical_reading(text: str) -> tuple[str | None, float | None, str]:
    """(sex M/F, age in years, the reading) from a TB set's clinical readings file.

    Shenzhen writes ``male 35yrs`` (sometimes ``35 yrs``, ``8month``) then the reading;
    Montgomery ``Patient's Sex: M`` and ``Patient's Age: 036Y`` then the reading.
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    head = " ".join(lines[:2])
    sex = None
    m = re.search(r"\b(female|male)\b", head, re.I) or re.search(r"Sex\s*:\s*([MF])\b", head, re.I)
    if m:
        sex = m.group(1)[0].upper() if len(m.group(1)) == 1 else ("F" if m.group(1).lower() == "female" else "M")
    age = None
    m = re.search(r"(\d+)\s*(yrs?|years?|y)\b", head, re.I) or re.search(r"Age\s*:\s*(\d+)", head, re.I)
    if m:
        age = float(m.group(1))
    else:
        m = re.search(r"(\d+)\s*months?\b", head, re.I)
        age = round(float(m.group(1)) / 12, 2) if m else None
    body = [ln for ln in lines if not re.search(r"\b(fe)?male\b|Sex\s*:|Age\s*:", ln, re.I)]
    return sex, age, " ".join(body)


def read_tb_set(root: Path, *, prefix: str, set_name: str, format: str) -> Dataset:
    """A tuberculosis set of the US National Library of Medicine (Shenzhen, Montgomery):
    ``<prefix>_NNNN_<0|1>.png`` (1 = tuberculosis) with ``ClinicalReadings/<same stem>.txt``."""
    root = Path(root)
    files = images_named(root, rf"{prefix}_\d+_[01]")
    if not files:
        raise DataError(f"no {prefix}_NNNN_0/1 images under '{root}' (the {set_name} set names its "
                        f"images like {prefix}_0001_0.png)")
    readings = {p.stem: p for p in root.rglob(f"{prefix}_*.txt")}
    problems: list[Problem] = []
    rows = []
    for stem, path in sorted(files.items()):
        sex = age = None
        reading = ""
        txt = readings.get(stem)
        if txt is None:
            problems.append(Problem("no_clinical_reading", str(path),
                                    f"no {stem}.txt among the clinical readings; sex and age unknown"))
        else:
            sex, age, reading = parse_clinical_reading(txt.read_text(errors="replace"))
            if age is None:
                problems.append(Problem("bad_age", str(txt), "no age found in the clinical reading"))
        rows.append((path.name, str(path), stem.rsplit("_", 1)[0], sex, age, reading,
                     float(stem[-1]), path.stat().st_size))
    table = pd.DataFrame(rows, columns=["image_id", "path", "patient_id", "sex", "age", "reading",
                                        "_y", "file_size"])
    table["view"] = "PA"  # both sets are posteroanterior radiographs
    y = table.pop("_y").to_numpy(np.float32)[:, None]
    return Dataset(table, y, ("Tuberculosis",), name=f"{set_name} TB set at {root}",
                   problems=tuple(problems), format=format, patient_ids_from="file_name")


def first_image_named(root: Path, pattern: str, *, suffixes=IMAGE_SUFFIXES,
                      max_depth: int = 3) -> Path | None:
    """The first image (sorted walk, at most ``max_depth`` folders down, mask folders left
    out) whose stem fully matches ``pattern``, relative to ``root``; None if there is none.
    Cheap enough for format detection, which asks every folder it is shown."""
    rx = re.compile(pattern)
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        dirnames[:] = [] if len(rel.parts) >= max_depth else \
            sorted(d for d in dirnames if "mask" not in d.lower())
        for fn in sorted(filenames):
            p = Path(fn)
            if p.suffix.lower() in suffixes and rx.fullmatch(p.stem):
                return rel / fn
    return None
