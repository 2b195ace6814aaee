"""Nested patient-wise CV of the paper's model against the tuned logistic regression.

Outer: patient-wise K-fold (iterative stratification, ``--seed``). Every model gets only
the outer training part and does its own inner selection on it (the logistic regression
its C on its full grid 1e-6..1, the bottleneck its penalties and width via BottleneckCV);
pooled out-of-fold predictions are scored with patient-bootstrap CIs, and every pair of
models gets its paired patient-bootstrap difference (the yardstick for "A beats B"; the
fold SD is not). Per fold, what each selecting model deployed is recorded.

    python benchmarks/model_quality.py FEATURES[,FEATURES...] --out docs/results/model_quality_seed0.json
    python benchmarks/model_quality.py FEATURES --seed 1 --out docs/results/model_quality_seed1.json
    python benchmarks/model_quality.py FEATURES --against OTHER --models logistic_regression,medxfer_train \\
        --out docs/results/features_default_vs_lite2.json

``--against OTHER`` runs the same models on a second features folder of the same images on
the same folds and reports OTHER - FEATURES per model (a paired feature-set comparison).
Several comma-separated features folders are concatenated. Features come from
`medxfer extract` on ../shared/data/nih14-sample; the script exits 2 when they are missing.
Writes the JSON (with its provenance) and a Markdown table beside it (.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from provenance import provenance

from medxfer.baselines import TunedLogisticRegression
from medxfer.experiments import (
    compare_feature_sets,
    concat_features,
    cross_validate,
    default_models,
    paired_differences,
)

MODELS = default_models(tune=True)
DEFAULT = ("logistic_regression", "linear_head", "bottleneck_cv", "medxfer_train",
           "bottleneck_cv_code_penalty")
#: What each row of the table is, in words (README's model table is generated from this).
LABELS = {
    "logistic_regression": "tuned logistic regression (C chosen by inner CV, 1e-6..1)",
    "linear_head": "linear head only (alpha chosen by inner CV)",
    "bottleneck_cv": "`medxfer train`'s selection without Platt (raw averaged fold models)",
    "medxfer_train": "**`medxfer train` default** (selection + Platt on out-of-fold predictions)",
    "bottleneck_cv_code_penalty": "selection over a grid with the paper's code penalty (lambda1 = lambda2 = 1e-3) added",
    "bottleneck_adamw_es": "the previous default (AdamW, early stopping on one split)",
    "bottleneck_cv_wide": "selection over the wide grid",
}


def deployed(choice: list[dict]) -> str:
    """What a selecting model deployed in one fold, in words."""
    kinds = []
    for c in choice:
        k = c.get("bottleneck_dim")
        pen = (c.get("l1") or 0) or (c.get("l2") or 0)
        kinds.append(("linear head" if not k else f"k={k}")
                     + f" alpha {c['alpha']:g}" + (" with code penalty" if pen else ""))
    return kinds[0] if len(kinds) == 1 else "blend of " + " and ".join(kinds)


def table(res: dict) -> str:
    lines = ["| model | pooled OOF macro AUC (95% CI) | per-fold mean ± SD | vs logistic regression, paired (95% CI) |",
             "|---|---|---|---|"]
    for name, m in res["models"].items():
        lo, hi = m["pooled_macro_auc_ci95"]
        d = res["paired"].get(f"{name} - logistic_regression")
        diff = "—" if d is None else f"{d['difference']:+.3f} ({d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f})"
        lines.append(f"| {LABELS.get(name, name)} | {m['pooled_macro_auc']:.3f} ({lo:.3f}-{hi:.3f}) "
                     f"| {m['mean']:.3f} ± {m['sd']:.3f} | {diff} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("features", help="features folder(s), comma-separated to concatenate")
    ap.add_argument("--models", default=",".join(DEFAULT), help="comma-separated subset of " + ",".join(MODELS))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="outer folds and models (0 chose the defaults)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--against", default=None, help="second features folder: paired comparison")
    ap.add_argument("--out", default=None, help="write the result JSON here (and .md beside it)")
    a = ap.parse_args(argv)
    prov = provenance(argv)  # at the start: the code that runs, not what is checked out later
    folders = a.features.split(",")
    missing = [f for f in folders + ([a.against] if a.against else []) if not Path(f, "manifest.json").is_file()]
    if missing:
        print(f"features folder(s) {missing} not found: extract them first, e.g. `medxfer extract "
              "../shared/data/nih14-sample --out FEATURES`", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")
    fs = concat_features(folders)
    models = {m: MODELS[m] for m in a.models.split(",")}
    if "logistic_regression" in models:  # the full grid README advertises, not a cut one
        models["logistic_regression"] = lambda seed: TunedLogisticRegression(random_state=seed)
    t0 = time.time()
    say = lambda k, n, line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if a.against:
        fs_b = concat_features([a.against])
        res = compare_feature_sets(fs, fs_b, models=models, n_splits=a.folds, seed=a.seed,
                                   n_boot=a.n_boot, progress=say)
        res["features_b"], res["feature_dim_b"] = [a.against], int(fs_b.X.shape[1])
        text = ["| model | A: " + Path(folders[0]).name + " | B: " + Path(a.against).name
                + " | B - A, paired (95% CI) |", "|---|---|---|---|"]
        for m, d in res["paired"].items():
            text.append(f"| {LABELS.get(m, m)} | {d['macro_auc_a']:.3f} | {d['macro_auc_b']:.3f} | "
                        f"{d['difference']:+.3f} ({d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}) |")
        text = "\n".join(text) + "\n"
    else:
        res = cross_validate(fs, n_splits=a.folds, seed=a.seed, models=models, n_boot=a.n_boot,
                             progress=say)
        res["paired"] = paired_differences(res, fs.Y, fs.dataset.patient_ids, n_boot=a.n_boot)
        res.pop("oof")
        res["deployed_per_fold"] = {}
        for c in res.get("tuned_choices", []):
            res["deployed_per_fold"].setdefault(c["model"], []).append(deployed(c["chosen"]))
        text = table(res)
    res["features"] = folders
    res["feature_dim"] = int(fs.X.shape[1])
    res["seconds"] = round(time.time() - t0, 1)
    res["provenance"] = prov
    print(text)
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1, default=str) + "\n")
        out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
