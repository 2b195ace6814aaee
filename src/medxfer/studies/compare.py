"""Study 1, compare (the paper's Table 1): the baselines and the method side by side on the
same patient-wise folds, every model choosing its own settings inside each training part
(nested CV), pooled out-of-fold metrics with patient-bootstrap CIs, and the paired
bootstrap difference of each method row to the best baseline.

Rows:
    logistic_regression         tuned L2 logistic regression per finding (baseline)
    linear_head                 the network without bottleneck, alpha by inner CV (baseline)
    bottleneck_no_code_penalty  bottleneck k in {8, 32}, alpha by inner CV, lambda1 = lambda2
                                = 0 (baseline: the structure without the paper's regularizer)
    paper_method                the full method: bottleneck with the code penalty
                                lambda1 = lambda2 in {1e-4, 1e-3}, k and alpha by inner CV
    medxfer_train               what `medxfer train` deploys (chooses among bottleneck,
                                linear head and their blend; Platt-calibrated)

Macro F1 is at per-finding F1-best thresholds chosen on each fold model's out-of-fold
predictions of its own training patients (what `medxfer train` deploys), never on the
test fold. Accuracy is not reported: with 90% negatives per finding it rewards predicting
"no finding".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..experiments import fold_predictions, lineup, thresholds_rule
from ..metrics import paired_bootstrap_auc
from ..settings import BOTTLENECK_GRID, LINEAR_GRID, PAPER_GRID
from ..splits import patient_kfold
from .common import Ledger, Progress, StudyContext, finish, headline_ci, line_figure, write_table
from .registry import register_study

BASELINES = ("logistic_regression", "linear_head", "bottleneck_no_code_penalty")


def compare_models() -> dict:
    """name -> factory(seed), baselines first (medxfer.experiments.LINEUPS["compare"])."""
    return lineup("compare")


@register_study("compare", title="1. Method against baselines (Table 1)", order=1)
def run_compare(ctx: StudyContext, models: dict | None = None) -> dict:
    """Run the comparison on ``ctx.features`` and every ``ctx.extra_features`` backbone;
    writes compare/compare.csv|md, compare/paired.csv|md and compare/compare.png|csv."""
    s = ctx.settings
    models = dict(models or compare_models())
    sets = {ctx.backbone_label: ctx.features} | dict(ctx.extra_features)
    folder = ctx.folder("compare")
    ledger = Ledger(folder, ctx.fingerprint("folds") | {"models": list(models), "grids": [BOTTLENECK_GRID, LINEAR_GRID, PAPER_GRID],
                                                 "sets": {k: v.manifest.get("backbone") for k, v in sets.items()}})
    bar = Progress(ctx, "compare", len(sets) * s.folds * len(models))
    rows, paired = [], []
    for label, fs in sets.items():
        X, Y, groups = fs.X, fs.Y, fs.dataset.patient_ids
        folds = patient_kfold(groups, s.folds, Y=Y, seed=s.seed)
        bar.stage(f"{label}: {len(models)} models x {s.folds} folds")
        r = fold_predictions(models, X, Y, groups, folds, seed=s.seed, store=ledger, tag=f"{label}-", jobs=s.jobs,
                             shared=ctx.units if fs is ctx.features else None,
                             on_unit=lambda name, k: bar.step(what=f"{label} {name} fold {k}"))
        for name in models:
            per = [v for v in r["per_fold"][name] if v is not None]
            rows.append({"backbone": label, "model": name,
                         "role": "baseline" if name in BASELINES else "method",
                         **headline_ci(Y, r["oof"][name], r["thresholds"][name], groups, ctx),
                         "f1_thresholds": thresholds_rule(r, name),
                         "per_fold_mean": float(np.mean(per)) if per else None,
                         "per_fold_sd": float(np.std(per)) if per else None,
                         "seconds": round(r["seconds"][name], 1)})
        base = [x for x in rows if x["backbone"] == label and x["role"] == "baseline"
                and x["macro_auc"] is not None]
        if base:
            best = max(base, key=lambda x: x["macro_auc"])["model"]
            for name in models:
                if name in BASELINES:
                    continue
                d = paired_bootstrap_auc(Y, r["oof"][best], r["oof"][name], groups=groups,
                                         n_boot=s.n_boot, seed=s.seed)
                ci = d["ci95"] or [None, None]
                paired.append({"backbone": label, "model": name, "best_baseline": best,
                               "difference": d["difference"], "difference_lo": ci[0],
                               "difference_hi": ci[1], "p_not_better": d["p_b_not_better"]})
    table = pd.DataFrame(rows)
    write_table(folder, "compare", table, ci_of=("macro_auc", "macro_ap", "macro_f1"))
    write_table(folder, "paired", pd.DataFrame(paired, columns=[
        "backbone", "model", "best_baseline", "difference", "difference_lo", "difference_hi",
        "p_not_better"]), ci_of=("difference",))
    line_figure(folder, "compare_auc", table[["backbone", "model", "macro_auc", "macro_auc_lo", "macro_auc_hi"]],
                x="model", y="macro_auc", group="backbone",
                title=f"Pooled out-of-fold macro AUC, {s.folds}-fold patient-wise CV "
                      f"({len(ctx.features)} images)", ylabel="macro AUC (95% CI)")
    return finish(ctx, "compare", {"n_images": len(ctx.features), "folds": s.folds,
                                   "rows": rows, "paired": paired,
                                   "tables": ["compare.csv", "paired.csv"],
                                   "figures": ["compare_auc.png"]}, bar.close())
