"""Study 6, data efficiency (the paper's "limited samples" motivation, measured): learning
curves of the method and the baselines at shares of the training patients.

In each outer patient-wise fold, a share of the training fold's patients is drawn (whole
patients; ``draws`` independent draws per share below 1) and every model is trained on
those patients' images only; the test fold is untouched. A point's AUC is the pooled
out-of-fold macro AUC of a draw, averaged over draws; its CI pools the patient-bootstrap
resamples of every draw, so it holds both the test sampling and the draw of the training
patients. The 100% point is one draw: exactly the plain nested CV of each model.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from ..errors import MedxferError
from ..experiments import LINEUPS, collect_folds, fit_units, lineup
from ..metrics import bootstrap_metrics, macro_auc
from ..splits import patient_kfold
from .common import Ledger, Progress, StudyContext, finish, in_parallel, line_figure, write_table
from .registry import register_study

MODELS = LINEUPS["efficiency"]


def parse_fractions(spec: str) -> tuple[float, ...]:
    try:
        out = tuple(sorted({float(x) for x in spec.split(",") if x.strip()}))
    except ValueError as exc:
        raise MedxferError(f"--fractions must be comma-separated numbers in (0, 1], e.g. "
                           f"0.1,0.5,1.0; got '{spec}'") from exc
    if not out or any(not 0 < f <= 1 for f in out):
        raise MedxferError(f"--fractions must be numbers in (0, 1], e.g. 0.1,0.5,1.0; got '{spec}'")
    return out


def subsample_patients(tr: np.ndarray, groups: np.ndarray, fraction: float, rng) -> np.ndarray:
    """Rows of ``tr`` whose patients are in a random ``fraction`` of its patients (at
    least 2 patients)."""
    if fraction >= 1:
        return tr
    pats = np.unique(groups[tr])
    n = max(2, int(round(fraction * len(pats))))
    keep = rng.choice(pats, min(n, len(pats)), replace=False)
    return tr[np.isin(groups[tr], keep)]


@register_study("efficiency", title="6. Data efficiency (learning curves)", order=6)
def run_efficiency(ctx: StudyContext, models: dict | None = None) -> dict:
    s = ctx.settings
    fractions = parse_fractions(s.fractions)
    models = dict(models or lineup("efficiency"))
    X, Y, groups = ctx.X, ctx.Y, ctx.groups
    folder = ctx.folder("efficiency")
    folds = patient_kfold(groups, s.folds, Y=Y, seed=s.seed)
    plan = [(f, d) for f in fractions for d in range(1 if f >= 1 else s.draws)]
    ledger = Ledger(folder, ctx.fingerprint("folds") | {"models": list(models), "plan": plan})
    bar = Progress(ctx, "efficiency", len(plan) * len(folds) * len(models))
    cells = []
    for f, d in plan:
        rng = np.random.default_rng([s.seed, int(round(f * 1e6)), d])
        cells.append((f"f{f:g}-d{d}-", [(subsample_patients(tr, groups, f, rng), te) for tr, te in folds]))
    # every point's units from one queue of workers; each point then gathers its own
    bar.stage(f"{len(plan)} points x {len(folds)} folds x {len(models)} models")
    done = {}
    for (c, k, name), result in fit_units(models, X, Y, groups, cells, seed=s.seed, store=ledger,
                                          shared=ctx.units, jobs=s.jobs):
        done[c, k, name] = result
        bar.step(what=f"{plan[c][0]:g} draw {plan[c][1] + 1} {name}")
    per_draw = []
    for c, ((f, d), (_, sub)) in enumerate(zip(plan, cells)):
        r = collect_folds(models, Y, sub, ((k, name, done[c, k, name])
                                           for k in range(len(sub)) for name in models))
        n_train = float(np.mean([len(tr) for tr, _ in sub]))
        for name in models:
            per_draw.append({"model": name, "fraction": f, "draw": d, "train_images": n_train,
                             "oof": r["oof"][name]})
    # each (model, point, draw)'s bootstrap in the run's workers
    boots = in_parallel(ctx, [partial(bootstrap_metrics, Y, p["oof"], {"macro_auc": macro_auc},
                                      groups=groups, n_boot=s.n_boot, seed=s.seed + p["draw"], draws=True)
                              for p in per_draw])
    for p, b in zip(per_draw, boots):
        p |= {"macro_auc": b["macro_auc"]["value"], "boot": b["macro_auc"]["draws"]}
    rows = []
    for name in models:
        for f in fractions:
            pts = [p for p in per_draw if p["model"] == name and p["fraction"] == f]
            vals = [p["macro_auc"] for p in pts if p["macro_auc"] is not None]
            boot = np.concatenate([p["boot"] for p in pts]) if pts else np.array([])
            rows.append({"model": name, "fraction": f, "draws": len(pts),
                         "train_images": float(np.mean([p["train_images"] for p in pts])),
                         "macro_auc": float(np.mean(vals)) if vals else None,
                         "macro_auc_lo": float(np.quantile(boot, 0.025)) if len(boot) else None,
                         "macro_auc_hi": float(np.quantile(boot, 0.975)) if len(boot) else None,
                         "sd_over_draws": float(np.std(vals)) if len(vals) > 1 else None})
    table = pd.DataFrame(rows)
    write_table(folder, "efficiency", table, ci_of=("macro_auc",))
    write_table(folder, "draws", pd.DataFrame([{k: v for k, v in p.items() if k not in ("boot", "oof")}
                                               for p in per_draw]))
    line_figure(folder, "learning_curves", table[["model", "fraction", "train_images", "macro_auc",
                                             "macro_auc_lo", "macro_auc_hi"]],
                x="train_images", y="macro_auc", group="model", logx=True,
                xlabel="training images per fold (mean)", ylabel="pooled OOF macro AUC (95% CI)",
                title=f"Learning curves, {s.folds}-fold patient-wise CV, {s.draws} draws per point")
    full = {p["model"]: p["oof"] for p in per_draw if p["fraction"] >= 1}
    return finish(ctx, "efficiency", {"fractions": list(fractions), "rows": rows,
                                      "tables": ["efficiency.csv", "draws.csv"],
                                      "figures": ["learning_curves.png"]},
                  bar.close()) | {"full_oof": full}
