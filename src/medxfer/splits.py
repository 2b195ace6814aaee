"""Patient-wise splits. No patient is ever on both sides of a split.

Splitting by image leaks: follow-up images of one patient look alike, so a model that
saw one of them is tested on a near-copy. Every splitter here groups rows by patient and
every split is checked with :func:`check_no_patient_overlap` before it is returned.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError


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


def _iterative_patient_folds(groups: np.ndarray, Y: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """Fold number per row by iterative stratification (Sechidis et al., 2011) over patients.

    Patients are the units: each carries the positive counts of its images. The finding with
    the fewest unassigned positives goes first; each of its patients joins the fold that
    still wants most of that finding (ties: the fold that wants most images, then at random).
    Patients without positives fill the folds that want most images.
    """
    rng = np.random.default_rng(seed)
    uniq, inv = np.unique(groups, return_inverse=True)
    P = len(uniq)
    counts = np.zeros((P, Y.shape[1]))
    np.add.at(counts, inv, np.nan_to_num(Y, nan=0.0))
    sizes = np.bincount(inv, minlength=P).astype(float)
    want = np.tile(counts.sum(0) / n_splits, (n_splits, 1))
    want_n = np.full(n_splits, sizes.sum() / n_splits)
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


def patient_kfold(groups, n_splits: int = 5, *, Y=None, seed: int = 0):
    """K patient-wise folds; with labels ``Y``, stratified over findings by iterative
    stratification of patients, so each fold gets about 1/K of every finding's positives.

    Returns a list of (train_idx, test_idx) integer arrays.
    """
    groups = np.asarray(groups).astype(str)
    n_patients = len(np.unique(groups))
    if n_splits < 2 or n_splits > n_patients:
        raise DataError(f"n_splits must be in 2..{n_patients} (the number of patients), got {n_splits}")
    if Y is None:
        Y = np.zeros((len(groups), 0))
    Y = np.asarray(Y, dtype=float)
    if Y.ndim == 1:  # class codes of a single-label task: stratify by class
        Y = (Y[:, None] == np.unique(Y)[None, :]).astype(float)
    fold = _iterative_patient_folds(groups, Y, n_splits, seed)
    out = []
    for k in range(n_splits):
        tr, te = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        if len(te) == 0:
            raise DataError(f"fold {k} of {n_splits} received no patient; use fewer folds")
        check_no_patient_overlap(groups, tr, te)
        out.append((tr, te))
    return out


def patient_holdout(groups, test_size: float = 0.25, *, Y=None, seed: int = 0):
    """One patient-wise split with about ``test_size`` of the patients held out."""
    if not 0 < test_size < 1:
        raise DataError(f"test_size must be in (0, 1), got {test_size}")
    k = max(2, int(round(1 / test_size)))
    return patient_kfold(groups, k, Y=Y, seed=seed)[0]
