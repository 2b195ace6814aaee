"""Study 2, imbalance (the paper's Figure 2): training sets subsampled to a stated
positive:negative ratio per finding, test folds untouched; F1, AUC and recall of the
minority findings per level, without mitigation and with each imbalance option.

Levels (positives : negatives per finding): Balanced 1:1, Mild 1:5, Moderate 1:20,
Severe 1:100. In each outer training part, for each finding separately: when it has more
negatives than the ratio needs, negatives are drawn down to it; otherwise positives are
drawn down (never below 1). A finding whose data cannot reach the ratio (no positive, or
too few negatives for even one positive) is capped at what the data holds and reported
in levels.csv. Entries left out for a finding are masked (unknown labels, NaN), so each
finding trains on its own subsample while the bottleneck is shared.

The model is the fixed point of HeadSettings (no inner selection, so the level is the only
thing that changes) with each lbfgs-compatible imbalance option: none (no mitigation),
pos_weight, class_balanced, focal (balanced_sampler draws minibatches and needs AdamW; it is
left out). F1 is reported twice: at probability 0.5, which tracks the training prior, and at
per-finding thresholds chosen as `medxfer train` chooses them (F1-best on out-of-fold
predictions of the training part: 3 patient-wise inner folds on the subsampled training
labels), so a deployed model's F1 at each level shows; each row counts the finding-folds
whose threshold stayed at 0.5 for want of both classes. Recall of the "minority findings"
(prevalence in the whole dataset below the median) is at 0.5.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import partial

import numpy as np
import pandas as pd

from ..experiments import rows_key
from ..head import BottleneckClassifier
from ..metrics import choose_thresholds, macro_auc, macro_f1, macro_recall, threshold_fallbacks
from ..splits import patient_kfold
from .common import (Ledger, Progress, StudyContext, beside_thresholded, cached_units, finish,
                     flat_ci, in_parallel, line_figure, write_table)
from .registry import register_study

#: name -> negatives per positive
LEVELS = {"Balanced": 1, "Mild": 5, "Moderate": 20, "Severe": 100}
OPTIONS = ("none", "pos_weight", "class_balanced", "focal")
METRICS = ("macro_f1_at_0.5", "macro_f1_fold_thresholds", "macro_auc", "minority_recall_at_0.5")
#: Inner patient-wise folds on each training part for the thresholds.
THRESHOLD_FOLDS = 3


def subsample_to_ratio(Y: np.ndarray, ratio: float, rng: np.random.Generator):
    """Labels with entries masked (NaN) so each finding has positives:negatives = 1:ratio.

    Returns (masked Y, rows of a per-finding record: finding index, positives and
    negatives available and kept, achieved ratio, capped)."""
    out = np.full(Y.shape, np.nan, dtype=np.float32)
    record = []
    for j in range(Y.shape[1]):
        pos = np.flatnonzero(Y[:, j] == 1)
        neg = np.flatnonzero(Y[:, j] == 0)
        if len(pos) == 0 or len(neg) == 0:
            keep_p, keep_n, capped = pos, neg, True
        elif len(neg) >= ratio * len(pos):
            keep_p, keep_n, capped = pos, rng.choice(neg, int(round(ratio * len(pos))), replace=False), False
        else:
            n_pos = int(round(len(neg) / ratio))
            capped = n_pos < 1
            keep_p, keep_n = rng.choice(pos, max(1, n_pos), replace=False), neg
        out[keep_p, j] = 1.0
        out[keep_n, j] = 0.0
        record.append({"finding": j, "positives_available": len(pos), "negatives_available": len(neg),
                       "positives_kept": len(keep_p), "negatives_kept": len(keep_n),
                       "ratio_achieved": len(keep_n) / len(keep_p) if len(keep_p) else None,
                       "capped": bool(capped)})
    return out, record


@register_study("imbalance", title="2. Class imbalance, Balanced to Severe (Figure 2)", order=2)
def run_imbalance(ctx: StudyContext) -> dict:
    s = ctx.settings
    X, Y, groups, names = ctx.X, ctx.Y, ctx.groups, ctx.names
    folder = ctx.folder("imbalance")
    folds = patient_kfold(groups, s.folds, Y=Y, seed=s.seed)
    prevalence = np.nanmean(Y, axis=0)
    minority = [j for j in range(Y.shape[1]) if prevalence[j] < np.median(prevalence)]
    ledger = Ledger(folder, ctx.fingerprint("folds") | {"levels": LEVELS, "options": OPTIONS,
                                                       "thresholds": f"F1 on {THRESHOLD_FOLDS} inner folds"})
    bar = Progress(ctx, "imbalance", len(LEVELS) * len(OPTIONS) * len(folds))
    base = asdict(ctx.head) | {"random_state": s.seed, "validation_fraction": 0.0, "solver": "lbfgs",
                               "n_ensemble": 1, "refit": False}
    level_rows, rows, masked = [], [], {}
    for li, (level, ratio) in enumerate(LEVELS.items()):
        for k, (tr, te) in enumerate(folds):
            rng = np.random.default_rng([s.seed, li, k])
            Ym, rec = subsample_to_ratio(Y[tr], ratio, rng)
            masked[level, k] = Ym
            level_rows += [{"level": level, "ratio": f"1:{ratio}", "fold": k + 1,
                            "finding": names[r.pop("finding")], **r} for r in rec]

    def fit(tr, te, Ym, opt):
        keep = ~np.isnan(Ym).all(axis=1)
        Xk, Yk, gk = X[tr][keep], Ym[keep], groups[tr][keep]
        make = lambda: BottleneckClassifier(**(base | {"imbalance": opt}))  # noqa: E731
        est = make().fit(Xk, Yk, groups=gk)
        inner = np.full(Yk.shape, np.nan)
        for itr, ite in patient_kfold(gk, min(THRESHOLD_FOLDS, len(np.unique(gk))),
                                      Y=np.nan_to_num(Yk), seed=s.seed):
            inner[ite] = make().fit(Xk[itr], Yk[itr], groups=gk[itr]).predict_proba(Xk[ite])
        thr = choose_thresholds(Yk, inner)
        return est.predict_proba(X[te]), {"train_rows": int(keep.sum()),
                                          "thresholds": [float(t) for t in thr],
                                          "fallbacks": len(threshold_fallbacks(Yk))}

    plan = [(level, opt, k) for level in LEVELS for opt in OPTIONS for k in range(len(folds))]
    units = [(f"{level}-{opt}-fold{k + 1}-{rows_key(*folds[k])}",
              partial(fit, *folds[k], masked[level, k], opt)) for level, opt, k in plan]
    bar.stage(f"{len(LEVELS)} levels x {len(OPTIONS)} options x {len(folds)} folds")
    results = dict(zip(plan, cached_units(ctx, ledger, units, on_unit=lambda i: bar.step(
        what="{} {} fold {}".format(plan[i][0], plan[i][1], plan[i][2] + 1)))))
    L = Y.shape[1]
    metrics = {"macro_f1_at_0.5": lambda Yb, Pb: macro_f1(Yb[:, :L], Pb[:, :L]),
               "macro_f1_fold_thresholds": lambda Yb, Pb: macro_f1(Yb[:, L:], Pb[:, L:]),
               "macro_auc": lambda Yb, Pb: macro_auc(Yb[:, :L], Pb[:, :L]),
               "minority_recall_at_0.5": lambda Yb, Pb: macro_recall(Yb[:, :L], Pb[:, :L],
                                                                     columns=minority)}
    heads, calls = [], []
    for level, ratio in LEVELS.items():
        for opt in OPTIONS:
            P, T, fallbacks = np.full(Y.shape, np.nan), np.full(Y.shape, np.nan), 0
            for k, (tr, te) in enumerate(folds):
                pred, meta = results[level, opt, k]
                P[te], T[te] = pred, np.asarray(meta["thresholds"])[None, :]
                fallbacks += int(meta["fallbacks"])
            Y2, both = beside_thresholded(Y, P, T)  # both sides resampled together
            calls.append(partial(flat_ci, Y2, both, groups, metrics, s.n_boot, s.seed))
            heads.append(({"level": level, "ratio": f"1:{ratio}", "imbalance": opt},
                          {"fold_thresholds": f"F1-best on {THRESHOLD_FOLDS} inner folds of the training part"
                                              + (f" ({fallbacks} finding-folds at 0.5: no both classes)"
                                                 if fallbacks else "")}))
    rows = [a | ci | b for (a, b), ci in zip(heads, in_parallel(ctx, calls))]
    levels = pd.DataFrame(level_rows)
    write_table(folder, "levels", levels)
    capped = levels.groupby(["level", "finding"])["capped"].any().reset_index()
    capped = capped[capped["capped"]]
    table = pd.DataFrame(rows)
    write_table(folder, "imbalance", table, ci_of=METRICS)
    for metric, label in (("macro_f1_at_0.5", "macro F1 at 0.5"),
                          ("macro_f1_fold_thresholds", "macro F1 at training-part thresholds"),
                          ("macro_auc", "macro AUC"),
                          ("minority_recall_at_0.5", "recall of minority findings at 0.5")):
        line_figure(folder, f"imbalance_{metric}",
                    table[["level", "imbalance", metric, f"{metric}_lo", f"{metric}_hi"]],
                    x="level", y=metric, group="imbalance", ylabel=f"{label} (95% CI)",
                    title=f"{label} by training imbalance level, {s.folds}-fold patient-wise CV")
    return finish(ctx, "imbalance", {
        "levels": {k: f"1:{v}" for k, v in LEVELS.items()}, "options": list(OPTIONS),
        "minority_findings": [names[j] for j in minority], "rows": rows,
        "capped": [f"{r.level}: {r.finding}" for r in capped.itertuples()],
        "tables": ["imbalance.csv", "levels.csv"],
        "figures": [f"imbalance_{m}.png" for m in METRICS]},
        bar.close())
