"""Metrics a clinical reviewer accepts: per finding and macro, with patient-level CIs.

Conventions
-----------
- ``y_true`` is (n, L) with 1, 0 or NaN (unknown); NaN entries are left out per finding.
- A metric that is undefined (AUC of a finding with no positives or no negatives in the
  evaluated rows) is ``None`` in JSON, never 0.5 or 0; macro averages skip undefined ones
  and report how many findings they cover.
- Accuracy is always shown beside prevalence and the accuracy of predicting all-negative,
  which on ChestX-ray14 is about 95% for most findings.
- Confidence intervals resample patients, not images (images of one patient are not
  independent), with the percentile bootstrap.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve, roc_auc_score

from .settings import (AGE_BANDS, CALIBRATION_METHODS, MIN_CI_POSITIVES, MIN_SUBGROUP_IMAGES,
                       THRESHOLD_METHODS)


def fast_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC of 0/1 labels by the rank-sum (Mann-Whitney) formula, ties averaged: the
    same number as sklearn's roc_auc_score, several times faster for the bootstrap."""
    r = rankdata(p)
    pos = y == 1
    n_pos = int(pos.sum())
    n_neg = len(y) - n_pos
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fast_ap(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision of 0/1 labels (sum over distinct thresholds of the recall step
    times the precision): the same number as sklearn's average_precision_score, several
    times faster for the bootstrap."""
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]  # end of each group of tied scores
    tp = np.cumsum(ys)[last]
    precision = tp / (last + 1)
    recall_step = np.diff(np.r_[0.0, tp]) / tp[-1]
    return float(np.sum(recall_step * precision))


def _known(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = ~np.isnan(y)
    return y[k].astype(int), p[k]


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """Metrics of one finding. y: (n,) 1/0/NaN; p: (n,) probabilities."""
    y, p = _known(y, p)
    n, pos = len(y), int(y.sum())
    both = 0 < pos < n
    pred = (p >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    return {
        "n": n, "positives": pos,
        "prevalence": pos / n if n else None,
        "auc": float(roc_auc_score(y, p)) if both else None,
        "average_precision": float(average_precision_score(y, p)) if pos > 0 else None,
        "threshold": float(threshold),
        "accuracy": (tp + tn) / n if n else None,
        "all_negative_accuracy": (n - pos) / n if n else None,
        "sensitivity": tp / pos if pos else None,
        "specificity": tn / (n - pos) if n - pos else None,
        "precision": tp / (tp + fp) if tp + fp else None,
        "f1": float(f1_score(y, pred, zero_division=0)) if pos else None,
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
    }


def _mean_defined(values) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else None


def macro_auc(Y: np.ndarray, P: np.ndarray) -> float | None:
    """Mean AUC over findings where it is defined; None when it is defined for none.

    The findings without an unknown label are ranked in one call (the bootstrap computes
    this a thousand times per interval); each AUC is fast_auc's number exactly (rank sums of
    average ranks are sums of halves, exact in float64), taken in the findings' order."""
    Y, P = np.asarray(Y), np.asarray(P)
    aucs = np.zeros(Y.shape[1])
    defined = np.zeros(Y.shape[1], dtype=bool)
    full = ~np.isnan(Y).any(axis=0)
    cols = np.flatnonzero(full)
    if len(cols):
        pos = Y[:, cols] == 1
        n_pos = pos.sum(0)
        n_neg = len(Y) - n_pos
        ok = (n_pos > 0) & (n_neg > 0)
        if ok.any():
            R = rankdata(P[:, cols[ok]], axis=0)
            aucs[cols[ok]] = (((R * pos[:, ok]).sum(0) - n_pos[ok] * (n_pos[ok] + 1) / 2)
                              / (n_pos[ok] * n_neg[ok]))
            defined[cols[ok]] = True
    for j in np.flatnonzero(~full):
        y, p = _known(Y[:, j], P[:, j])
        if 0 < y.sum() < len(y):
            aucs[j], defined[j] = fast_auc(y, p), True
    return float(np.mean(aucs[defined])) if defined.any() else None


def evaluate_predictions(Y: np.ndarray, P: np.ndarray, label_names, thresholds=None, *,
                         groups=None, n_boot: int = 1000, seed: int = 0) -> dict:
    # Every finding's metrics, the macro/micro summaries and bootstrap CIs.
    """All metrics for a set of predictions.

    Parameters
    ----------
    Y : (n, L) labels, 1/0/NaN.  P : (n, L) probabilities.
    thresholds : (L,) decision thresholds chosen on validation data (default 0.5).
    groups : (n,) patient ids for the bootstrap; each row its own patient when None.

    Returns
    -------
    dict with "per_finding" {name: metrics}, "macro" (means over defined findings),
    "micro_auc", "macro_auc", "macro_auc_ci95" [lo, hi] and per-finding "auc_ci95".
    """
    Y = np.asarray(Y, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64)
    L = Y.shape[1]
    thr = np.full(L, 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    per = {name: binary_metrics(Y[:, j], P[:, j], thr[j]) for j, name in enumerate(label_names)}
    keys = ("auc", "average_precision", "accuracy", "sensitivity", "specificity", "f1",
            "prevalence", "all_negative_accuracy")
    macro = {k: _mean_defined(m[k] for m in per.values()) for k in keys}
    macro["findings_with_auc"] = sum(m["auc"] is not None for m in per.values())
    known = ~np.isnan(Y)
    yk = Y[known]
    micro = float(roc_auc_score(yk, P[known])) if 0 < yk.sum() < yk.size else None
    # Micro averages pool every (image, finding) decision, each at its finding's threshold.
    tp, fp, tn, fn = (sum(m[k] for m in per.values()) for k in ("tp", "fp", "tn", "fn"))
    micro_all = {
        "auc": micro,
        "average_precision": float(average_precision_score(yk, P[known])) if yk.sum() > 0 else None,
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fn else None,
        "accuracy": (tp + tn) / (tp + fp + tn + fn) if tp + fp + tn + fn else None,
    }
    ci = bootstrap_auc_ci(Y, P, groups=groups, n_boot=n_boot, seed=seed)
    cal = calibration_per_finding(Y, P, groups=groups, n_boot=n_boot, seed=seed)
    for j, name in enumerate(label_names):
        pos, neg = per[name]["positives"], per[name]["n"] - per[name]["positives"]
        few = (f"too few positives ({pos}; an interval needs {MIN_CI_POSITIVES})" if pos < MIN_CI_POSITIVES
               else f"too few negatives ({neg}; an interval needs {MIN_CI_POSITIVES})"
               if neg < MIN_CI_POSITIVES else None)
        per[name]["auc_ci95"] = None if few else ci["per_finding"][j]
        per[name]["auc_ci95_withheld"] = few
        per[name] |= cal["per_finding"][j]
    macro["brier"] = _mean_defined(m["brier"] for m in per.values())
    macro["ece"] = _mean_defined(m["ece"] for m in per.values())
    macro["ece_mean_per_finding"] = macro["ece"]  # the name says which ECE it is
    macro_ci, macro_why = ci["macro"], None
    if all(m["auc_ci95_withheld"] for m in per.values() if m["auc"] is not None):
        macro_ci, macro_why = None, (f"every finding with an AUC has fewer than "
                                     f"{MIN_CI_POSITIVES} positives or negatives")
    return {"n_images": int(len(Y)),
            "n_patients": int(len(np.unique(groups))) if groups is not None else int(len(Y)),
            "macro_auc": macro["auc"], "macro_auc_ci95": macro_ci,
            "macro_auc_ci95_withheld": macro_why, "micro_auc": micro,
            "macro": macro, "micro": micro_all, "per_finding": per, "bootstrap": {"n_boot": n_boot, "unit": "patient" if groups is not None else "image (no patient IDs given)",
                                                              "seed": seed}}


def subgroup_columns(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """The subgroups a reviewer asks for, from the columns a table has: view (as written:
    PA, AP...), sex (M/F) and age band (:data:`medxfer.settings.AGE_BANDS`). Returns
    {column: (n,) array of group names, None where the row's value is unknown}."""
    out = {}
    for col in ("view", "sex"):
        if col in table.columns:
            v = table[col].astype("string").str.strip().str.upper()
            v = v.where(v.notna() & (v != "") & (v != "NAN") & (v != "UNKNOWN"))
            if v.notna().any():
                out[col] = np.asarray(v.astype(object).where(v.notna(), None))
    if "age" in table.columns:
        age = pd.to_numeric(table["age"], errors="coerce").to_numpy(dtype=float)
        edges = (0, *AGE_BANDS)
        names = [f"{lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:])] + [f"{edges[-1]}+"]
        band = np.full(len(age), None, dtype=object)
        ok = np.isfinite(age) & (age >= 0) & (age < 130)
        band[ok] = np.asarray(names, dtype=object)[np.searchsorted(AGE_BANDS, age[ok], side="right")]
        if ok.any():
            out["age_band"] = band
    return out


def subgroup_metrics(Y, P, table, *, groups=None, n_boot: int = 200, seed: int = 0) -> dict:
    """Macro AUC with its patient-bootstrap CI in each subgroup of :func:`subgroup_columns`.

    In a subgroup, the macro AUC averages the findings with at least
    :data:`~medxfer.settings.MIN_CI_POSITIVES` positive and negative images there (their
    number is given, since subgroups can differ in which findings count); a subgroup of
    fewer than :data:`~medxfer.settings.MIN_SUBGROUP_IMAGES` images, or with no such
    finding, gets its counts and the reason instead of an AUC.

    Returns {column: {group: {"n_images", "n_patients", "macro_auc", "macro_auc_ci95",
    "findings_with_auc", "withheld"}}}; empty when the table has none of the columns.
    """
    Y = np.asarray(Y, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64)
    groups = np.arange(len(Y)) if groups is None else np.asarray(groups)
    out: dict = {}
    for col, values in subgroup_columns(table).items():
        res = {}
        for name in sorted({v for v in values if v is not None}, key=str):
            rows = np.flatnonzero(values == name)
            Yg, Pg = Y[rows], P[rows]
            pos, neg = (Yg == 1).sum(0), (Yg == 0).sum(0)
            use = np.flatnonzero((pos >= MIN_CI_POSITIVES) & (neg >= MIN_CI_POSITIVES))
            entry = {"n_images": int(len(rows)), "n_patients": int(len(np.unique(groups[rows]))),
                     "macro_auc": None, "macro_auc_ci95": None, "findings_with_auc": int(len(use)),
                     "withheld": None}
            if len(rows) < MIN_SUBGROUP_IMAGES:
                entry["withheld"] = f"fewer than {MIN_SUBGROUP_IMAGES} images"
            elif not len(use):
                entry["withheld"] = (f"no finding with {MIN_CI_POSITIVES} positive and "
                                     f"{MIN_CI_POSITIVES} negative images")
            else:
                entry["macro_auc"] = macro_auc(Yg[:, use], Pg[:, use])
                entry["macro_auc_ci95"] = bootstrap_auc_ci(Yg[:, use], Pg[:, use], groups=groups[rows],
                                                           n_boot=n_boot, seed=seed)["macro"]
            res[str(name)] = entry
        out[col] = res
    return out


def _patient_resamples(groups: np.ndarray, n_boot: int, seed: int):
    """Row indices of ``n_boot`` resamples of whole patients with replacement (each
    patient's rows in increasing order). Linear in the number of rows: the rows are
    grouped by one stable sort, not by one scan per patient."""
    rng = np.random.default_rng(seed)
    uniq, inv = np.unique(groups, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    counts = np.bincount(inv, minlength=len(uniq))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for _ in range(n_boot):
        pick = rng.integers(0, len(uniq), len(uniq))
        lens = counts[pick]
        offsets = np.repeat(starts[pick] - (np.cumsum(lens) - lens), lens)
        yield order[offsets + np.arange(lens.sum())]


def bootstrap_auc_ci(Y, P, *, groups=None, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Percentile CIs of per-finding and macro AUC, resampling patients with replacement.

    Returns {"macro": [lo, hi] or None, "per_finding": [[lo, hi] or None, ...]}.
    A resample in which a finding lacks a class gives no AUC for it and is skipped for
    that finding; the macro AUC of a resample is the mean over its defined findings.
    """
    Y = np.asarray(Y, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64)
    groups = np.arange(len(Y)) if groups is None else np.asarray(groups)
    L = Y.shape[1]
    per: list[list[float]] = [[] for _ in range(L)]
    macro: list[float] = []
    for rows in _patient_resamples(groups, n_boot, seed):
        aucs = []
        for j in range(L):
            y, p = _known(Y[rows, j], P[rows, j])
            if 0 < y.sum() < len(y):
                a = fast_auc(y, p)
                per[j].append(a)
                aucs.append(a)
        if aucs:
            macro.append(float(np.mean(aucs)))
    a = (1 - level) / 2

    def interval(v):
        # Fewer than half the resamples defined: the interval would mislead.
        if not v or len(v) < n_boot / 2:
            return None
        return [float(np.quantile(v, a)), float(np.quantile(v, 1 - a))]

    return {"macro": interval(macro), "per_finding": [interval(v) for v in per]}


#: Metrics whose bootstrap distribution sits above the point value: average precision on
#: few positives is biased upward (the sample AP overestimates the population's), and
#: patient resamples, which duplicate positives, raise it again, so the percentile interval
#: puts the point at its low edge and covers the truth too rarely. These get the
#: bias-corrected percentile interval: the percentile interval moved down by twice the
#: bootstrap's estimate of the bias (mean of the resamples minus the point), once for the
#: estimator's bias and once for the resampling's. On simulated data of this project's shape
#: it covers the truth at about its nominal 95% where the percentile, basic and BCa intervals
#: fall short (benchmarks/ap_interval_coverage.py, docs/results/ap_interval_coverage.json);
#: tests/test_metrics.py checks its coverage.
BIAS_CORRECTED_INTERVAL = ("macro_ap", "average_precision", "ap")
INTERVAL_METHODS = ("percentile", "basic", "bias_corrected")


def interval_of(draws, value, *, level: float = 0.95, method: str = "percentile",
                bounds=(0.0, 1.0)) -> list[float]:
    """The bootstrap interval of ``draws`` about the point ``value``: "percentile" [q(a),
    q(1-a)], "basic" [2 value - q(1-a), 2 value - q(a)] or "bias_corrected" [q(a) - 2b,
    q(1-a) - 2b] with b = mean(draws) - value; clipped to ``bounds``."""
    if method not in INTERVAL_METHODS:
        raise ValueError(f"interval method must be one of {INTERVAL_METHODS}, got '{method}'")
    a = (1 - level) / 2
    lo, hi = float(np.quantile(draws, a)), float(np.quantile(draws, 1 - a))
    if method == "basic":
        lo, hi = 2 * value - hi, 2 * value - lo
    elif method == "bias_corrected":
        b = float(np.mean(draws)) - value
        lo, hi = lo - 2 * b, hi - 2 * b
    if bounds is not None:
        lo, hi = max(bounds[0], lo), min(bounds[1], hi)
    return [lo, hi]


def bootstrap_metrics(Y, P, metrics: dict, *, groups=None, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95, draws: bool = False,
                      bias_corrected=BIAS_CORRECTED_INTERVAL) -> dict:
    """Point values and patient-bootstrap CIs of any metrics of (Y, P).

    ``metrics`` maps a name to fn(Y, P) -> float or None; every metric is computed on the
    same resamples. Returns {name: {"value": float or None, "ci95": [lo, hi] or None,
    "interval": "percentile" or "bias_corrected"}} (and "draws", the resampled values, with
    ``draws=True``); a CI needs at least half the resamples to define the metric. Metrics
    named in ``bias_corrected`` (average precision by default, see BIAS_CORRECTED_INTERVAL)
    get the bias-corrected percentile interval, the others the percentile interval; both
    are clipped to [0, 1].
    """
    Y = np.asarray(Y, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64)
    groups = np.arange(len(Y)) if groups is None else np.asarray(groups)
    resampled: dict[str, list[float]] = {k: [] for k in metrics}
    for rows in _patient_resamples(groups, n_boot, seed):
        for k, fn in metrics.items():
            v = fn(Y[rows], P[rows])
            if v is not None and np.isfinite(v):
                resampled[k].append(float(v))
    out = {}
    for k, fn in metrics.items():
        v, d = fn(Y, P), resampled[k]
        ok = len(d) >= max(1, n_boot / 2) and v is not None
        method = "bias_corrected" if k in bias_corrected else "percentile"
        out[k] = {"value": None if v is None else float(v),
                  "ci95": interval_of(d, float(v), level=level, method=method) if ok else None,
                  "interval": method}
        if draws:
            out[k]["draws"] = d
    return out


def macro_f1(Y: np.ndarray, P: np.ndarray, thresholds=0.5) -> float | None:
    """Mean F1 over findings with a positive, each at its threshold (0.5 by default)."""
    Y, P = np.asarray(Y), np.asarray(P)
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (Y.shape[1],))
    f1 = np.zeros(Y.shape[1])
    defined = np.zeros(Y.shape[1], dtype=bool)
    full = ~np.isnan(Y).any(axis=0)
    cols = np.flatnonzero(full)
    if len(cols):  # the findings without an unknown label at once (the same numbers)
        pred = P[:, cols] >= thr[cols]
        pos = Y[:, cols].astype(int) == 1
        n_pos = pos.sum(0)
        ok = n_pos > 0
        tp = (pred & pos).sum(0)
        f1[cols[ok]] = 2 * tp[ok] / (pred.sum(0)[ok] + n_pos[ok])
        defined[cols[ok]] = True
    for j in np.flatnonzero(~full):
        y, p = _known(Y[:, j], P[:, j])
        if y.sum() > 0:
            pred = p >= thr[j]
            tp = int((pred & (y == 1)).sum())
            f1[j], defined[j] = 2 * tp / (pred.sum() + y.sum()), True
    return float(np.mean(f1[defined])) if defined.any() else None


def macro_recall(Y: np.ndarray, P: np.ndarray, thresholds=0.5, columns=None) -> float | None:
    """Mean sensitivity over findings (or ``columns``) with a positive, at the thresholds."""
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (Y.shape[1],))
    out = []
    for j in (range(Y.shape[1]) if columns is None else columns):
        y, p = _known(Y[:, j], P[:, j])
        if y.sum() > 0:
            out.append(float(((p >= thr[j]) & (y == 1)).sum() / y.sum()))
    return float(np.mean(out)) if out else None


def _ece_brier(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> tuple[float, float]:
    which = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    gap = np.abs(np.bincount(which, weights=y - p, minlength=n_bins))
    return float(gap.sum() / len(y)), float(np.mean((p - y) ** 2))


def calibration_per_finding(Y, P, *, groups=None, n_boot: int = 1000, seed: int = 0,
                            level: float = 0.95, n_bins: int = 10) -> dict:
    """Per-finding expected calibration error (10 equal-width bins) and Brier score, with
    patient-bootstrap percentile CIs. Pooling ECE over findings where most entries are
    negatives hides a miscalibrated rare finding; this does not.

    Returns {"per_finding": [{"ece", "ece_ci95", "brier", "brier_ci95"}, ...]}.
    """
    Y = np.asarray(Y, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64)
    groups = np.arange(len(Y)) if groups is None else np.asarray(groups)
    L = Y.shape[1]
    point = []
    for j in range(L):
        y, p = _known(Y[:, j], P[:, j])
        point.append(_ece_brier(y, p, n_bins) if len(y) else (None, None))
    boot = [[] for _ in range(L)]
    for rows in _patient_resamples(groups, n_boot, seed):
        for j in range(L):
            y, p = _known(Y[rows, j], P[rows, j])
            if len(y):
                boot[j].append(_ece_brier(y, p, n_bins))
    a = (1 - level) / 2
    out = []
    for j in range(L):
        b = np.asarray(boot[j]).reshape(-1, 2)
        ok = len(b) >= max(1, n_boot / 2)
        out.append({"ece": point[j][0], "brier": point[j][1],
                    "ece_ci95": [float(np.quantile(b[:, 0], a)), float(np.quantile(b[:, 0], 1 - a))] if ok else None,
                    "brier_ci95": [float(np.quantile(b[:, 1], a)), float(np.quantile(b[:, 1], 1 - a))] if ok else None})
    return {"per_finding": out}


def paired_bootstrap_auc(Y, P_a, P_b, *, groups=None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Is model B better than model A on the same images? Macro-AUC difference B - A with
    its 95% CI and the share of patient resamples where B does not beat A."""
    Y = np.asarray(Y, dtype=np.float64)
    groups = np.arange(len(Y)) if groups is None else np.asarray(groups)
    diffs = []
    for rows in _patient_resamples(groups, n_boot, seed):
        a, b = macro_auc(Y[rows], P_a[rows]), macro_auc(Y[rows], P_b[rows])
        if a is not None and b is not None:
            diffs.append(b - a)
    point_a, point_b = macro_auc(Y, P_a), macro_auc(Y, P_b)
    diffs = np.asarray(diffs)
    return {"macro_auc_a": point_a, "macro_auc_b": point_b,
            "difference": None if point_a is None or point_b is None else point_b - point_a,
            "ci95": [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))] if len(diffs) else None,
            "p_b_not_better": float((diffs <= 0).mean()) if len(diffs) else None,
            "n_boot": int(len(diffs))}


def choose_thresholds(Y: np.ndarray, P: np.ndarray, *, method: str = "f1",
                      target_sensitivity: float = 0.9) -> np.ndarray:
    """Per-finding decision thresholds from validation data (never from the test set).

    method: "f1" maximizes F1; "youden" maximizes sensitivity + specificity - 1;
    "sensitivity" takes the highest threshold reaching ``target_sensitivity``.
    A finding without both classes in validation keeps 0.5.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"threshold method must be one of {THRESHOLD_METHODS}, got '{method}'")
    out = np.full(Y.shape[1], 0.5)
    for j in range(Y.shape[1]):
        y, p = _known(Y[:, j], P[:, j])
        if not 0 < y.sum() < len(y):
            continue
        cands = np.unique(p)
        sens = np.array([(p[y == 1] >= t).mean() for t in cands])
        spec = np.array([(p[y == 0] < t).mean() for t in cands])
        if method == "f1":
            prec, rec, thr = precision_recall_curve(y, p)
            f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
            out[j] = float(thr[int(np.argmax(f1))])
        elif method == "youden":
            out[j] = float(cands[int(np.argmax(sens + spec - 1))])
        else:
            ok = cands[sens >= target_sensitivity]
            out[j] = float(ok.max()) if ok.size else float(cands.min())
    return out


def calibration_bins(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> dict:
    """Equal-width reliability bins over known entries (pooled when 2-D).

    Returns {"ece": float or None, "bins": [{"lo", "hi", "count", "mean_p", "frac_pos"}]}.
    ECE is the count-weighted mean |frac_pos - mean_p| over non-empty bins.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    y, p = _known(y, p)
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        m = which == b
        c = int(m.sum())
        row = {"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": c,
               "mean_p": float(p[m].mean()) if c else None,
               "frac_pos": float(y[m].mean()) if c else None}
        if c:
            ece += c * abs(row["frac_pos"] - row["mean_p"])
        bins.append(row)
    e = float(ece / len(y)) if len(y) else None
    return {"ece": e, "ece_pooled": e, "bins": bins}




def fit_calibration(Y: np.ndarray, P: np.ndarray, method: str = "platt") -> dict:
    """Fit a monotone recalibration of probabilities on validation data.

    "platt": per finding, p' = sigmoid(a * logit(p) + b) by unpenalized logistic regression
    (a default C=1 penalty flattens the slope towards 0 on small validation sets), with a > 0 enforced so the ranking (and AUC) never changes; "temperature": one T for all findings, p' = sigmoid(logit(p) / T), by grid
    search on the log-loss. Findings without both classes keep a = 1, b = 0.
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration must be one of {CALIBRATION_METHODS}, got '{method}'")
    L = Y.shape[1]
    if method == "none":
        return {"method": "none"}
    z = _logit(P)
    if method == "temperature":
        k = ~np.isnan(Y)
        best_t, best_loss = 1.0, np.inf
        for t in np.exp(np.linspace(np.log(0.05), np.log(20), 200)):
            q = np.clip(1 / (1 + np.exp(-z[k] / t)), 1e-7, 1 - 1e-7)
            loss = -np.mean(Y[k] * np.log(q) + (1 - Y[k]) * np.log(1 - q))
            if loss < best_loss:
                best_t, best_loss = float(t), loss
        return {"method": "temperature", "temperature": best_t}
    from sklearn.linear_model import LogisticRegression

    a, b = np.ones(L), np.zeros(L)
    identity, shift_only = threshold_fallbacks(Y), []  # no both classes: kept as they are
    for j in range(L):
        y, zj = _known(Y[:, j], z[:, j])
        if j not in identity:
            lr = LogisticRegression(C=np.inf, max_iter=1000).fit(zj[:, None], y)
            a[j], b[j] = float(lr.coef_[0, 0]), float(lr.intercept_[0])
            if not (0 < a[j] < 1e3 and np.isfinite(b[j])):  # reversed, flat or separable
                # A non-positive slope would reorder (or flatten) the test predictions on the
                # word of a small validation set: keep the ranking, shift only the level.
                a[j] = 1.0
                shift_only.append(j)
                grid = np.linspace(-10, 10, 401)
                q = np.clip(1 / (1 + np.exp(-(zj[None, :] + grid[:, None]))), 1e-7, 1 - 1e-7)
                loss = -(y * np.log(q) + (1 - y) * np.log(1 - q)).mean(1)
                b[j] = float(grid[int(np.argmin(loss))])
    # Which findings the fit could not calibrate as asked (column indices): kept as they
    # were (no both classes) or shifted only (a slope that was reversed, flat or infinite).
    return {"method": "platt", "a": a.tolist(), "b": b.tolist(),
            "fallbacks": {"identity_no_both_classes": identity, "shift_only": shift_only}}


def threshold_fallbacks(Y: np.ndarray) -> list[int]:
    """Findings (column indices) for which :func:`choose_thresholds` keeps 0.5 and
    :func:`fit_calibration` keeps the identity: no both classes among the known labels."""
    Y = np.asarray(Y, dtype=np.float64)
    return [j for j in range(Y.shape[1]) if not 0 < (y := Y[~np.isnan(Y[:, j]), j]).sum() < len(y)]


def apply_calibration(P: np.ndarray, cal: dict | None) -> np.ndarray:
    """Apply what :func:`fit_calibration` returned; identity for None or "none"."""
    if not cal or cal.get("method", "none") == "none":
        return P
    z = _logit(P)
    if cal["method"] == "temperature":
        return 1 / (1 + np.exp(-z / cal["temperature"]))
    return 1 / (1 + np.exp(-(z * np.asarray(cal["a"]) + np.asarray(cal["b"]))))


def _logit(P: np.ndarray) -> np.ndarray:
    P = np.clip(np.asarray(P, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(P / (1 - P))
