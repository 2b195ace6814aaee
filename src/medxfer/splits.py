"""Patient-wise splits. No patient is ever on both sides of a split.

Splitting by image leaks: follow-up images of one patient look alike, so a model that
saw one of them is tested on a near-copy. Every splitter here groups rows by patient and
every split is checked with :func:`check_no_patient_overlap` before it is returned.
That includes the given splits: :func:`official_split` (ChestX-ray14's train_val/test
lists) and :func:`split_from_file` (a CSV of image_id, split).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .errors import DataError

if TYPE_CHECKING:
    from .data import Dataset


def check_no_patient_overlap(groups, *parts) -> None:
    """Raise DataError naming patients that occur in more than one part."""
    groups = np.asarray(groups).astype(str)
    seen: dict[str, int] = {}
    shared: set[str] = set()
    for k, idx in enumerate(parts):
        for g in np.unique(groups[np.asarray(idx, dtype=int)]):
            if g in seen and seen[g] != k:
                shared.add(g)
            seen.setdefault(g, k)
    if shared:
        some = ", ".join(sorted(shared)[:5])
        raise DataError(f"{len(shared)} patient(s) appear in more than one part of a split "
                        f"(e.g. {some}); results would leak across the split.")


def _iterative_patient_folds(groups: np.ndarray, Y: np.ndarray, n_splits: int, seed: int,
                             shares=None) -> np.ndarray:
    """Fold number per row by iterative stratification (Sechidis et al., 2011) over patients.

    Patients are the units: each carries the positive counts of its images. The finding with
    the fewest unassigned positives goes first; each of its patients joins the fold that
    still wants most of that finding (ties: the fold that wants most images, then at random).
    Patients without positives fill the folds that want most images. ``shares`` (one per
    fold, summing to 1) sets unequal fold sizes; by default every fold gets 1/n_splits.
    """
    rng = np.random.default_rng(seed)
    uniq, inv = np.unique(groups, return_inverse=True)
    P = len(uniq)
    counts = np.zeros((P, Y.shape[1]))
    np.add.at(counts, inv, np.nan_to_num(Y, nan=0.0))
    sizes = np.bincount(inv, minlength=P).astype(float)
    if shares is None:
        want = np.tile(counts.sum(0) / n_splits, (n_splits, 1))
        want_n = np.full(n_splits, sizes.sum() / n_splits)
    else:
        shares = np.asarray(shares, dtype=float)
        want = np.outer(shares, counts.sum(0))
        want_n = shares * sizes.sum()
    fold_of = np.full(P, -1)
    left = counts > 0
    order = rng.permutation(P)
    while (fold_of < 0).any():
        open_ = fold_of < 0
        remaining = (counts * open_[:, None]).sum(0)
        live = np.flatnonzero(remaining > 0)
        if live.size == 0:
            pats = order[open_[order]]
        else:
            j = live[np.argmin(remaining[live])]
            pats = [p for p in order if open_[p] and left[p, j]]
        for p in pats:
            if live.size:
                score = np.stack([want[:, j], want_n, rng.random(n_splits)], 1)
            else:
                score = np.stack([want_n, rng.random(n_splits), rng.random(n_splits)], 1)
            f = np.lexsort(score.T[::-1])[-1]
            fold_of[p] = f
            want[f] -= counts[p]
            want_n[f] -= sizes[p]
    return fold_of[inv]


def _indicator_labels(groups: np.ndarray, Y) -> np.ndarray:
    """Labels as a 2-D float array: none -> no columns, class codes -> one column per class."""
    if Y is None:
        Y = np.zeros((len(groups), 0))
    Y = np.asarray(Y, dtype=float)
    if Y.ndim == 1:  # class codes of a single-label task: stratify by class
        Y = (Y[:, None] == np.unique(Y)[None, :]).astype(float)
    return Y


def patient_kfold(groups, n_splits: int = 5, *, Y=None, seed: int = 0):
    """K patient-wise folds; with labels ``Y``, stratified over findings by iterative
    stratification of patients, so each fold gets about 1/K of every finding's positives.

    Returns a list of (train_idx, test_idx) integer arrays.
    """
    groups = np.asarray(groups).astype(str)
    n_patients = len(np.unique(groups))
    if n_splits < 2 or n_splits > n_patients:
        raise DataError(f"cannot make {n_splits} patient-wise folds of {n_patients} patient(s): "
                        f"the number of folds must be 2..{n_patients}")
    fold = _iterative_patient_folds(groups, _indicator_labels(groups, Y), n_splits, seed)
    out = []
    for k in range(n_splits):
        tr, te = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        if len(te) == 0:
            raise DataError(f"fold {k} of {n_splits} received no patient; use fewer folds")
        check_no_patient_overlap(groups, tr, te)
        out.append((tr, te))
    return out


def patient_holdout(groups, test_size: float = 0.25, *, Y=None, seed: int = 0):
    """One patient-wise split with about ``test_size`` of the patients (and images) held out,
    stratified over findings like :func:`patient_kfold`.

    When ``1 / test_size`` is a whole number k (0.5, 0.25, 0.2, 0.1, ...) the test part is the
    first of ``patient_kfold(groups, k)``; otherwise the patients are stratified into two parts
    of sizes ``test_size`` and ``1 - test_size``.

    Returns (train_idx, test_idx) integer arrays.
    """
    if not 0 < test_size < 1:
        raise DataError(f"test_size must be in (0, 1), got {test_size}")
    k = round(1 / test_size)
    if k >= 2 and abs(1 / test_size - k) < 1e-9:
        return patient_kfold(groups, k, Y=Y, seed=seed)[0]
    groups = np.asarray(groups).astype(str)
    n_patients = len(np.unique(groups))
    if n_patients < 2:
        raise DataError(f"a holdout split needs at least 2 patients, got {n_patients}")
    fold = _iterative_patient_folds(groups, _indicator_labels(groups, Y), 2, seed,
                                    shares=(test_size, 1 - test_size))
    tr, te = np.flatnonzero(fold == 1), np.flatnonzero(fold == 0)
    if len(te) == 0 or len(tr) == 0:
        raise DataError(f"test_size {test_size} of {n_patients} patients leaves one side of the "
                        "split empty; use a test_size nearer 0.5 or more patients")
    check_no_patient_overlap(groups, tr, te)
    return tr, te


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
    check_no_patient_overlap(ds.patient_ids, *parts.values())
    return parts
