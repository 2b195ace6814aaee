"""One finding vocabulary across sources: each public set's names mapped onto the 14
ChestX-ray14 findings where they mean the same thing, the others kept under their own names.

The mappings are data, one CSV per source in ``vocabularies/`` with the columns
``source_name,chestxray14_name,note``: a blank ``chestxray14_name`` keeps the name, and
``note`` says why (e.g. CheXpert's "Lung Opacity" is broader than "Infiltration", so it is
kept). :func:`harmonise` applies one through :meth:`Dataset.relabel`, so several source
names mapped onto one finding merge (positive if any is).
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from io import StringIO
from pathlib import Path

import numpy as np
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


def shared_findings(ds: Dataset, model_names) -> dict:
    """Which findings an evaluation can score: those the model predicts and the data labels
    (at least one known label), in the model's order; and those on either side alone.
    The data's names are first mapped to ChestX-ray14's where its format has a vocabulary
    (medxfer.data.harmonise: CheXpert's "Pleural Effusion" is "Effusion"). DataError, naming
    both sides, when nothing is shared."""
    names = harmonised_label_index(ds, model_names)
    labelled = {n for n, j in names.items() if (~np.isnan(ds.labels[:, j])).any()}
    scored = [n for n in model_names if n in labelled]
    read_as = {ds.label_names[j]: n for n, j in names.items() if ds.label_names[j] != n}
    out = {"scored": scored, "not_in_data": [n for n in model_names if n not in labelled],
           "not_in_model": sorted(n for n in names if n not in set(model_names)),
           "read_as": read_as}
    if not scored:
        raise DataError(f"the data and the model share no finding: the model predicts "
                        f"{', '.join(model_names)}; the data labels "
                        f"{', '.join(sorted(labelled)) or 'nothing'}. Evaluate with labels for at "
                        "least one of the model's findings (a CSV column named after it)")
    return out


def _name_key(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name).strip().lower())


@lru_cache(maxsize=1)
def _readings() -> dict[str, frozenset]:
    """{name key: the ChestX-ray14 names ('' = kept as it is) the bundled tables give it},
    read once: evaluate asks for it several times."""
    known: dict[str, set] = {}
    for source, table in VOCABULARIES.items():
        if table:
            df = vocabulary_table(source)
            for a, b in zip(df["source_name"], df["chestxray14_name"]):
                # a blank target ("keep the name") counts: CheXpert keeps "Lung Opacity"
                # while RSNA reads it as Pneumonia, so a plain CSV's "Lung Opacity" is left
                # as it is
                known.setdefault(_name_key(a), set()).add(b)
    return {k: frozenset(v) for k, v in known.items()}


def harmonised_label_index(ds: Dataset, targets=()) -> dict[str, int]:
    """{finding name in ChestX-ray14's vocabulary where one applies: column of ds.labels}.

    A format with a vocabulary (CheXpert, PadChest...) uses its table. Any other (a CSV)
    matches its names to ``targets`` (the model's findings) ignoring case, spaces,
    underscores and hyphens ("pleural thickening" is Pleural_Thickening), then to the
    ChestX-ray14 finding that every vocabulary table listing a name agrees it means
    ("Pleural Effusion" is Effusion; "Lung Opacity", kept by one table and read as
    Pneumonia by another, stays as it is)."""
    if VOCABULARIES.get(ds.format or ""):
        mapping = common_vocabulary(ds)
    else:
        loose = {_name_key(t): t for t in targets}
        known = _readings()
        mapping = {}
        for n in ds.label_names:
            if n in targets:
                continue
            k = _name_key(n)
            if k in loose:
                mapping[n] = loose[k]
            elif len(known.get(k, ())) == 1 and next(iter(known[k])):
                mapping[n] = next(iter(known[k]))
    out: dict[str, int] = {}
    for j, n in enumerate(ds.label_names):
        out.setdefault(mapping.get(n, n), j)
    return out
