"""Study 3, sensitivity: lambda1, lambda2, the width k, alpha and the learning rate over
wide log-scale ranges, one at a time around the chosen point, and a lambda1 x lambda2 grid.

All settings are trained at once per outer fold by the one-pass grid trainer
(:func:`medxfer.head.fit_grid`: AdamW minibatches, early stopping on a patient-wise
validation part of the training fold; the learning rate only means something there).
The chosen point is HeadSettings' (k=8, lambda1=lambda2=0, alpha=0.03, lr=1e-3). Each
setting's pooled out-of-fold macro AUC over the outer folds has a patient-bootstrap CI.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from ..experiments import rows_key
from ..head import fit_grid
from ..head.grid import GRID_IMBALANCE
from ..metrics import macro_auc
from ..splits import patient_kfold
from .common import (Ledger, Progress, StudyContext, finish, heatmap_figure, line_figure, with_ci,
                     write_table)
from ..settings import SENSITIVITY_CODE_GRID, SENSITIVITY_SWEEPS
from .registry import register_study

SWEEPS, CODE_GRID = SENSITIVITY_SWEEPS, SENSITIVITY_CODE_GRID  # the study's grids (settings)
PARAMS = ("bottleneck_dim", "l1", "l2", "alpha", "lr")


def sensitivity_grid(center: dict) -> list[dict]:
    """Unique settings: the sweeps around ``center`` and the l1 x l2 grid."""
    out = []
    for p, values in SWEEPS.items():
        out += [center | {p: v} for v in values]
    out += [center | {"l1": a, "l2": b} for a in CODE_GRID for b in CODE_GRID]
    seen, unique = set(), []
    for g in out:
        key = tuple(g[p] for p in PARAMS)
        if key not in seen:
            seen.add(key)
            unique.append(g)
    return unique


@register_study("sensitivity", title="3. Hyper-parameter sensitivity", order=3)
def run_sensitivity(ctx: StudyContext) -> dict:
    s = ctx.settings
    X, Y, groups = ctx.X, ctx.Y, ctx.groups
    folder = ctx.folder("sensitivity")
    center = {p: asdict(ctx.head)[p] for p in PARAMS}
    if center["bottleneck_dim"] is None:
        center["bottleneck_dim"] = 8  # the sweep is of the bottleneck model
    grid = sensitivity_grid(center)
    folds = patient_kfold(groups, s.folds, Y=Y, seed=s.seed)
    ledger = Ledger(folder, ctx.fingerprint("folds") | {"grid": grid})
    bar = Progress(ctx, "sensitivity", len(folds))
    bar.stage(f"{len(grid)} settings x {len(folds)} folds, one pass per fold")
    oof = np.full((len(grid),) + Y.shape, np.nan)
    for k, (tr, te) in enumerate(folds):
        def fit(tr=tr, te=te):
            base = {q: v for q, v in asdict(ctx.head).items()
                    if q in ("imbalance", "focal_gamma", "cb_beta", "weight_decay")}
            if base["imbalance"] not in GRID_IMBALANCE:  # a sampler needs its own minibatches
                base["imbalance"] = "pos_weight"
            ests = fit_grid(X[tr], Y[tr], [base | g for g in grid], groups=groups[tr],
                            random_state=s.seed)
            return np.stack([e.predict_proba(X[te]) for e in ests]), {}
        oof[:, te] = ledger.cached(f"fold{k + 1}-{rows_key(tr, te)}", fit)[0]
        bar.step(what=f"fold {k + 1}")
    rows = []
    for g, P in zip(grid, oof):
        rows.append({p: g[p] for p in PARAMS} | with_ci(Y, P, groups, ctx, {"macro_auc": macro_auc}))
    table = pd.DataFrame(rows)
    write_table(folder, "sensitivity", table, ci_of=("macro_auc",))
    lines = []
    for p, values in SWEEPS.items():
        others = [q for q in PARAMS if q != p]
        sel = table[(table[others] == pd.Series({q: center[q] for q in others})).all(axis=1)]
        sel = sel[sel[p].isin(values)].sort_values(p)
        lines += [{"parameter": p, "value": f"{v:g}", "macro_auc": a, "macro_auc_lo": lo,
                   "macro_auc_hi": hi} for v, a, lo, hi in
                  zip(sel[p], sel["macro_auc"], sel["macro_auc_lo"], sel["macro_auc_hi"])]
    lines = pd.DataFrame(lines)
    center_auc = table[(table[list(PARAMS)] == pd.Series(center)).all(axis=1)]["macro_auc"]
    line_figure(folder, "sensitivity_sweeps", lines, x="value", y="macro_auc", group=None,
                panels="parameter", ylabel="macro AUC (95% CI)",
                reference=float(center_auc.iloc[0]) if len(center_auc) else None,
                title="One at a time around the chosen point (dashed: the chosen point)")
    code = table[(table["bottleneck_dim"] == center["bottleneck_dim"]) & (table["alpha"] == center["alpha"])
                 & (table["lr"] == center["lr"]) & table["l1"].isin(CODE_GRID) & table["l2"].isin(CODE_GRID)]
    heatmap_figure(folder, "sensitivity_l1_l2", code[["l1", "l2", "macro_auc", "macro_auc_lo", "macro_auc_hi"]],
                   x="l1", y="l2", value="macro_auc",
                   title="Pooled OOF macro AUC over lambda1 x lambda2")
    spread = {p: [float(lines[lines.parameter == p]["macro_auc"].min()),
                  float(lines[lines.parameter == p]["macro_auc"].max())] for p in SWEEPS}
    return finish(ctx, "sensitivity", {
        "center": center, "settings": len(grid), "range_of_macro_auc": spread, "rows": rows,
        "tables": ["sensitivity.csv"],
        "figures": ["sensitivity_sweeps.png", "sensitivity_l1_l2.png"]}, bar.close())
