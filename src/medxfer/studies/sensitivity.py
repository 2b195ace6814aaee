"""Study 3, sensitivity: lambda1, lambda2, the width k, alpha and the learning rate over
wide log-scale ranges, one at a time around the chosen point, and a lambda1 x lambda2 grid.

Two trainers, each its own curve in every table and figure:

* ``lbfgs``: what `medxfer train` fits (full-batch L-BFGS on every training row, no early
  stopping; :class:`medxfer.head.BottleneckClassifier` with ``solver="lbfgs"``), every
  setting except the learning rate, which L-BFGS does not have. The settings of a fold share
  each pass over its rows (:func:`medxfer.head.joint.fit_lbfgs_shared`; each its own L-BFGS). This is the curve that says
  how sensitive the shipped model is.
* ``adamw_es``: the one-pass grid trainer of `medxfer tune` (:func:`medxfer.head.fit_grid`:
  AdamW minibatches with its weight decay, early stopping on a patient-wise validation part
  of the training fold), every setting, the learning rate included. Its "alpha = 0" is still
  regularized by early stopping and weight decay, so it is a second curve, not the model.

The chosen point is HeadSettings' (k=8, lambda1=lambda2=0, alpha=0.03, lr=1e-3). Each
setting's pooled out-of-fold macro AUC over the outer folds has a patient-bootstrap CI.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import partial

import numpy as np
import pandas as pd

from ..experiments import rows_key
from ..head import fit_grid, predict_proba_nets
from ..head.grid import GRID_IMBALANCE
from ..head.joint import fit_lbfgs_shared
from ..metrics import macro_auc
from ..splits import patient_kfold
from .common import (Ledger, Progress, StudyContext, cached_units, finish, flat_ci, heatmap_figure,
                     in_parallel, line_figure, write_table)
from ..settings import SENSITIVITY_CODE_GRID, SENSITIVITY_SWEEPS
from .registry import register_study

SWEEPS, CODE_GRID = SENSITIVITY_SWEEPS, SENSITIVITY_CODE_GRID  # the study's grids (settings)
PARAMS = ("bottleneck_dim", "l1", "l2", "alpha", "lr")
TRAINERS = {"lbfgs": "L-BFGS, full batch (what medxfer train fits)",
            "adamw_es": "AdamW + early stopping (the grid trainer of medxfer tune)"}


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
    lbfgs_grid = [g for g in grid if g["lr"] == center["lr"]]  # L-BFGS has no learning rate
    folds = patient_kfold(groups, s.folds, Y=Y, seed=s.seed)
    ledger = Ledger(folder, ctx.fingerprint("folds") | {"grid": grid, "trainers": list(TRAINERS)})
    bar = Progress(ctx, "sensitivity", 2 * len(folds))
    bar.stage(f"{len(lbfgs_grid)} L-BFGS settings and {len(grid)} AdamW settings x {len(folds)} folds")
    oof = {"lbfgs": np.full((len(lbfgs_grid),) + Y.shape, np.nan),
           "adamw_es": np.full((len(grid),) + Y.shape, np.nan)}
    head = asdict(ctx.head)

    def fit_lbfgs(tr, te):
        base = head | {"solver": "lbfgs", "validation_fraction": 0.0, "n_ensemble": 1,
                       "refit": False, "random_state": s.seed}
        if base["imbalance"] == "balanced_sampler":  # a sampler needs minibatches
            base["imbalance"] = "pos_weight"
        # every setting its own L-BFGS, all sharing each pass over the fold's rows
        nets, _, _ = fit_lbfgs_shared(X[tr], Y[tr], [base | g for g in lbfgs_grid], seed=s.seed)
        return np.stack([predict_proba_nets([net], X[te], "multilabel") for net in nets]), {}

    def fit_adamw(tr, te):
        base = {q: v for q, v in head.items()
                if q in ("imbalance", "focal_gamma", "cb_beta", "weight_decay")}
        if base["imbalance"] not in GRID_IMBALANCE:  # a sampler needs its own minibatches
            base["imbalance"] = "pos_weight"
        ests = fit_grid(X[tr], Y[tr], [base | g for g in grid], groups=groups[tr],
                        random_state=s.seed)
        return np.stack([e.predict_proba(X[te]) for e in ests]), {}

    plan = [(k, trainer) for k in range(len(folds)) for trainer in ("lbfgs", "adamw_es")]
    units = [(f"{'lbfgs-' if t == 'lbfgs' else ''}fold{k + 1}-{rows_key(*folds[k])}",
              partial(fit_lbfgs if t == "lbfgs" else fit_adamw, *folds[k])) for k, t in plan]
    done = cached_units(ctx, ledger, units, on_unit=lambda i: bar.step(
        what=f"fold {plan[i][0] + 1} {'L-BFGS' if plan[i][1] == 'lbfgs' else 'AdamW'}"))
    for (k, trainer), (P, _) in zip(plan, done):
        oof[trainer][:, folds[k][1]] = P
    heads, calls = [], []
    for trainer, settings_ in (("lbfgs", lbfgs_grid), ("adamw_es", grid)):
        for g, P in zip(settings_, oof[trainer]):
            heads.append({"trainer": trainer} | {p: (None if trainer == "lbfgs" and p == "lr" else g[p])
                                                 for p in PARAMS})
            calls.append(partial(flat_ci, Y, P, groups, {"macro_auc": macro_auc}, s.n_boot, s.seed))
    rows = [h | ci for h, ci in zip(heads, in_parallel(ctx, calls))]  # one bootstrap per setting
    table = pd.DataFrame(rows)
    write_table(folder, "sensitivity", table, ci_of=("macro_auc",))
    at_center = lambda t, q: (t[q] == center[q]) | ((q == "lr") & t[q].isna())  # noqa: E731
    lines = []
    for p, values in SWEEPS.items():
        others = [q for q in PARAMS if q != p]
        for trainer in TRAINERS:
            sel = table[table["trainer"] == trainer]
            sel = sel[np.logical_and.reduce([at_center(sel, q) for q in others])]
            sel = sel[sel[p].isin(values)].sort_values(p)
            lines += [{"parameter": p, "trainer": trainer, "value": f"{v:g}", "macro_auc": a,
                       "macro_auc_lo": lo, "macro_auc_hi": hi} for v, a, lo, hi in
                      zip(sel[p], sel["macro_auc"], sel["macro_auc_lo"], sel["macro_auc_hi"])]
    lines = pd.DataFrame(lines)
    centre_rows = table[(table["trainer"] == "lbfgs")
                        & np.logical_and.reduce([at_center(table, q) for q in PARAMS])]
    line_figure(folder, "sensitivity_sweeps", lines, x="value", y="macro_auc", group="trainer",
                panels="parameter", ylabel="macro AUC (95% CI)",
                reference=float(centre_rows["macro_auc"].iloc[0]) if len(centre_rows) else None,
                title="One at a time around the chosen point, two trainers "
                      "(dashed: the chosen point under L-BFGS)")
    figures = ["sensitivity_sweeps.png"]
    for trainer in TRAINERS:
        t = table[table["trainer"] == trainer]
        code = t[(t["bottleneck_dim"] == center["bottleneck_dim"]) & (t["alpha"] == center["alpha"])
                 & at_center(t, "lr") & t["l1"].isin(CODE_GRID) & t["l2"].isin(CODE_GRID)]
        name = "sensitivity_l1_l2" + ("" if trainer == "lbfgs" else f"_{trainer}")
        heatmap_figure(folder, name, code[["l1", "l2", "macro_auc", "macro_auc_lo", "macro_auc_hi"]],
                       x="l1", y="l2", value="macro_auc",
                       title=f"Pooled OOF macro AUC over lambda1 x lambda2, {TRAINERS[trainer]}")
        figures.append(f"{name}.png")
    spread = {trainer: {p: [float(v.min()), float(v.max())] for p in SWEEPS
                        if len(v := lines[(lines.parameter == p) & (lines.trainer == trainer)]["macro_auc"])}
              for trainer in TRAINERS}
    return finish(ctx, "sensitivity", {
        "center": center, "trainers": TRAINERS, "settings": {"lbfgs": len(lbfgs_grid), "adamw_es": len(grid)},
        "range_of_macro_auc": spread, "rows": rows, "tables": ["sensitivity.csv"],
        "figures": figures}, bar.close())
