"""Cell and row parsing shared by the table readers: labels, ages, repeated rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError, unknown_name_message
from .contract import CHESTXRAY14_FINDINGS, NO_FINDING, Problem


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


def parse_age(values: pd.Series, problems: list[Problem], source: str) -> pd.Series:
    """Ages as numbers; a non-numeric age becomes NaN and a ``bad_age`` problem in ``problems``."""
    # The 2017 table writes ages such as "058Y"; the v2020 one plain integers.
    cleaned = values.str.replace(r"^(\d+)\s*[Yy]$", r"\1", regex=True)
    age = pd.to_numeric(cleaned, errors="coerce")
    for image_id, raw in zip(values.index[age.isna() & (values != "")], values[age.isna() & (values != "")]):
        problems.append(Problem("bad_age", f"{source} row {image_id + 2}",
                                f"age '{raw}' is not a number; kept as missing"))
    return age


def drop_duplicate_rows(meta: pd.DataFrame, key: str, label_cols: list[str], source,
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


def normalise_patient_ids(values) -> pd.Series:
    """Patient ids as text, written one way: surrounding blanks removed and an id made only
    of digits written without leading zeros ("00075" and "75" are the same patient; "0000"
    is "0"). Any other id is kept as it is ("p007" stays "p007").

    ChestX-ray14 writes patient 75 as ``75`` in its table and ``00000075`` in its file
    names; CSVs exported from spreadsheets drop or keep such zeros at random. Reading the
    digits as text (not as numbers) keeps ids longer than 64 bits, such as PadChest's, exact.
    """
    text = pd.Series(values, dtype=object).astype(str).str.strip()
    digits = text.str.fullmatch(r"\d+")
    return text.where(~digits, text.str.lstrip("0").replace("", "0"))
