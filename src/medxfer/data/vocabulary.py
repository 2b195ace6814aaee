"""One finding vocabulary across sources: each public set's names mapped onto the 14
ChestX-ray14 findings where they mean the same thing, the others kept under their own names.

The mappings are data, one CSV per source in ``vocabularies/`` with the columns
``source_name,chestxray14_name,note``: a blank ``chestxray14_name`` keeps the name, and
``note`` says why (e.g. CheXpert's "Lung Opacity" is broader than "Infiltration", so it is
kept). :func:`harmonise` applies one through :meth:`Dataset.relabel`, so several source
names mapped onto one finding merge (positive if any is).
"""

from __future__ import annotations

from importlib import resources
from io import StringIO
from pathlib import Path

import pandas as pd

from ..errors import DataError, unknown_name_message
from .contract import CHESTXRAY14_FINDINGS, Dataset

#: Reader name -> its mapping table in vocabularies/ (None: its names need no mapping).
VOCABULARIES: dict[str, str | None] = {
    "chestxray14": None, "chexpert": "chexpert.csv", "mimic_cxr": "chexpert.csv",
    "padchest": "padchest.csv", "vindr_cxr": "vindr.csv", "rsna_pneumonia": "rsna.csv",
    "shenzhen_tb": None, "montgomery_tb": None, "jsrt": None,
}
_COLUMNS = ["source_name", "chestxray14_name", "note"]


def vocabulary_table(source: str | None = None, *, table: str | Path | None = None) -> pd.DataFrame:
    """The mapping table of a source (a name in :data:`VOCABULARIES`) or of your own CSV
    file ``table``, checked: every ``chestxray14_name`` is one of
    :data:`~medxfer.data.CHESTXRAY14_FINDINGS` or blank, every ``source_name`` listed once.

    Returns
    -------
    DataFrame with columns source_name, chestxray14_name ('' = keep), note.
    """
    if table is None:
        if source not in VOCABULARIES:
            raise DataError(unknown_name_message("vocabulary source", str(source), VOCABULARIES))
        name = VOCABULARIES[source]
        if name is None:
            return pd.DataFrame(columns=_COLUMNS)
        where = f"medxfer's vocabulary {name}"
        text = (resources.files(__package__) / "vocabularies" / name).read_text()
        df = pd.read_csv(StringIO(text), dtype=str, keep_default_na=False)
    else:
        where = f"vocabulary table '{table}'"
        try:
            df = pd.read_csv(table, dtype=str, keep_default_na=False)
        except Exception as exc:
            raise DataError(f"cannot read {where}: {exc}") from exc
    missing = [c for c in _COLUMNS[:2] if c not in df.columns]
    if missing:
        raise DataError(f"{where} lacks the column(s) {', '.join(missing)}; it needs "
                        f"{','.join(_COLUMNS)} (note may be blank)")
    if "note" not in df.columns:
        df["note"] = ""
    df = df[_COLUMNS].apply(lambda c: c.str.strip())
    for i, target in enumerate(df["chestxray14_name"]):
        if target and target not in CHESTXRAY14_FINDINGS:
            raise DataError(f"{where} line {i + 2}: "
                            + unknown_name_message("ChestX-ray14 finding", target, CHESTXRAY14_FINDINGS)
                            + " Leave chestxray14_name blank to keep the source's name.")
    dup = df["source_name"].duplicated()
    if dup.any():
        raise DataError(f"{where}: '{df['source_name'][dup].iloc[0]}' is listed twice")
    return df.reset_index(drop=True)


def common_vocabulary(dataset: Dataset, source: str | None = None, *,
                      table: str | Path | None = None) -> dict[str, str]:
    """The renaming :func:`harmonise` would apply: source name -> ChestX-ray14 name, for the
    dataset's findings that the table maps (the others keep their names). ``source``
    defaults to ``dataset.format`` (set by :func:`read_dataset`)."""
    source = source or dataset.format
    if table is None and source is None:
        raise DataError("this dataset does not say its format (it was not opened with "
                        "read_dataset): pass source=, one of " + ", ".join(VOCABULARIES))
    df = vocabulary_table(source, table=table)
    return {s: t for s, t in zip(df["source_name"], df["chestxray14_name"])
            if t and s in dataset.label_names and s != t}


def harmonise(dataset: Dataset, source: str | None = None, *,
              table: str | Path | None = None) -> Dataset:
    """A new dataset whose findings use ChestX-ray14's names where the source's mean the
    same (:func:`common_vocabulary`); names mapped onto one finding merge, positive if any
    is, and their uncertain marks merge too. Findings without a counterpart keep their own
    names, so nothing is dropped."""
    mapping = common_vocabulary(dataset, source, table=table)
    return dataset.relabel(mapping) if mapping else dataset
