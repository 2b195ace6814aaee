"""Patient-wise cross-validation of the paper's model beside its baselines, on one set of
folds, with pooled out-of-fold predictions and per-fold spread.

Models compared (all on the same cached features and folds):
    logistic_regression   one L2 logistic regression per finding, C by inner patient-wise CV
    linear_head           the network without bottleneck (linear probe)
    bottleneck_no_reg     bottleneck, lambda1 = lambda2 = 0
    bottleneck            the full method with medxfer's defaults
    bottleneck_ensemble5  the full method averaged over 5 validation splits, alpha = 0.1
    bottleneck_tuned      (with tune=True) the full method with k, lambda1, lambda2 chosen by
                          inner patient-wise CV on each outer training part only (nested CV)
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from .baselines import TunedLogisticRegression
from .features import FeatureSet
from .head import BottleneckClassifier
from .metrics import evaluate_predictions, macro_auc, paired_bootstrap_auc
from .settings import HeadSettings, defaults
from .splits import check_no_patient_overlap, patient_kfold

log = logging.getLogger(__name__)

#: The inner grid of the nested selection: k x (lambda1 = lambda2).
TUNING_GRID = [dict(bottleneck_dim=k, l1=lam, l2=lam) for k in (64, 256) for lam in (0.0, 1e-4, 1e-3)]


def _bottleneck(**over):
    return lambda seed: BottleneckClassifier(**(defaults(HeadSettings) | over | {"random_state": seed}))


def default_models() -> dict:
    return {
        "logistic_regression": lambda seed: TunedLogisticRegression(random_state=seed),
        "linear_head": _bottleneck(bottleneck_dim=None),
        "bottleneck_no_reg": _bottleneck(l1=0.0, l2=0.0),
        "bottleneck": _bottleneck(),
        "bottleneck_ensemble5": _bottleneck(n_ensemble=5, alpha=0.1),
    }


class InnerCVBottleneck:
    """The full method with k, lambda1 = lambda2 chosen by inner patient-wise CV on the
    training rows it is given, then refit on all of them (one arm of nested CV)."""

    def __init__(self, grid=None, *, inner_folds: int = 3, random_state: int = 0):
        self.grid = list(grid or TUNING_GRID)
        self.inner_folds = inner_folds
        self.random_state = random_state

    def fit(self, X, Y, *, groups):
        folds = patient_kfold(groups, self.inner_folds, Y=Y, seed=self.random_state + 1)
        scores = []
        for params in self.grid:
            s = [_bottleneck(**params)(self.random_state).fit(X[tr], Y[tr], groups=groups[tr])
                 .score(X[te], Y[te]) for tr, te in folds]
            scores.append(float(np.nanmean(s)))
        self.chosen_ = self.grid[int(np.nanargmax(scores))]
        self.model_ = _bottleneck(**self.chosen_)(self.random_state).fit(X, Y, groups=groups)
        return self

    def predict_proba(self, X):
        return self.model_.predict_proba(X)


def cross_validate(fs: FeatureSet, *, n_splits: int = 5, seed: int = 0, tune: bool = False,
                   models: dict | None = None, n_boot: int = 1000, progress=None) -> dict:
    """Out-of-fold predictions and metrics for each model on the same patient-wise folds.

    Returns {"folds": n, "models": {name: {"pooled": metrics of pooled OOF predictions,
    "per_fold_macro_auc": [...], "mean", "sd", "seconds"}}, "paired_vs_logistic_regression":
    {name: paired bootstrap of the macro-AUC difference}, "oof": {name: (n, L) array}}.
    """
    X, Y, groups = fs.X, fs.Y, fs.dataset.patient_ids
    names = list(fs.dataset.label_names)
    folds = patient_kfold(groups, n_splits, Y=Y, seed=seed)
    models = dict(models or default_models())
    if tune:
        models["bottleneck_tuned"] = lambda seed: InnerCVBottleneck(random_state=seed)
    oof = {m: np.full(Y.shape, np.nan) for m in models}
    per_fold = {m: [] for m in models}
    seconds = {m: 0.0 for m in models}
    chosen = []
    for k, (tr, te) in enumerate(folds):
        check_no_patient_overlap(groups, tr, te)
        for name, make in models.items():
            t = time.time()
            est = make(seed).fit(X[tr], Y[tr], groups=groups[tr])
            if hasattr(est, "chosen_"):
                chosen.append(est.chosen_)
            oof[name][te] = est.predict_proba(X[te])
            seconds[name] += time.time() - t
            per_fold[name].append(macro_auc(Y[te], oof[name][te]))
        line = f"fold {k + 1}/{n_splits}: " + ", ".join(f"{n} {per_fold[n][-1]:.3f}" for n in models)
        log.info(line)
        if progress is not None:
            progress(k + 1, n_splits, line)
    out = {"folds": n_splits, "seed": seed, "n_images": int(len(Y)),
           "n_patients": int(len(np.unique(groups))), "models": {}, "paired_vs_logistic_regression": {}}
    for name in models:
        pooled = evaluate_predictions(Y, oof[name], names, groups=groups, n_boot=n_boot, seed=seed)
        vals = [v for v in per_fold[name] if v is not None]
        out["models"][name] = {"pooled_macro_auc": pooled["macro_auc"],
                               "pooled_macro_auc_ci95": pooled["macro_auc_ci95"],
                               "per_fold_macro_auc": per_fold[name],
                               "mean": float(np.mean(vals)), "sd": float(np.std(vals)),
                               "seconds": round(seconds[name], 1), "pooled": pooled}
        if name != "logistic_regression" and "logistic_regression" in models:
            out["paired_vs_logistic_regression"][name] = paired_bootstrap_auc(
                Y, oof["logistic_regression"], oof[name], groups=groups, n_boot=n_boot, seed=seed)
    if chosen:
        out["tuned_choices"] = chosen
    out["oof"] = oof
    return out


def write_cv(result: dict, out: str | Path, *, title: str) -> Path:
    """cv.json (everything but the predictions), cv.md (the table) and
    oof_predictions.npz (each model's pooled out-of-fold probabilities) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "oof_predictions.npz", **result["oof"])
    (out / "cv.json").write_text(json.dumps({k: v for k, v in result.items() if k != "oof"},
                                            indent=2, default=str))
    (out / "cv.md").write_text(f"# {title}\n\n{cv_table(result)}\n")
    return out


def cv_table(result: dict) -> str:
    """Markdown table of a :func:`cross_validate` result."""
    lines = ["| model | pooled OOF macro AUC (95% CI) | per-fold mean ± SD | vs logistic regression (95% CI) |",
             "|---|---|---|---|"]
    for name, m in result["models"].items():
        ci = m["pooled_macro_auc_ci95"]
        d = result["paired_vs_logistic_regression"].get(name)
        diff = "—" if d is None else f"{d['difference']:+.3f} ({d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f})"
        lines.append(f"| {name} | {m['pooled_macro_auc']:.3f} ({ci[0]:.3f}-{ci[1]:.3f}) | "
                     f"{m['mean']:.3f} ± {m['sd']:.3f} | {diff} |")
    return "\n".join(lines)
