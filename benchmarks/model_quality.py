"""Nested patient-wise CV of the paper's model against the tuned logistic regression.

Outer: patient-wise K-fold (iterative stratification). Every model gets only the outer
training part and does its own inner selection on it (the logistic regression its C, the
bottleneck its penalties and width via BottleneckCV); pooled out-of-fold predictions are
scored with patient-bootstrap CIs and paired differences to the logistic regression.

    python benchmarks/model_quality.py FEATURES[,FEATURES...] [--out DIR] [--models a,b]

Several comma-separated features folders of the same images are concatenated (e.g.
EfficientNet-Lite0 + Lite2 + MobileNetV2). Features come from `medxfer extract` on
../shared/data/nih14-sample (skipped politely when absent).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from medxfer.baselines import TunedLogisticRegression
from medxfer.experiments import (
    concat_features,
    cross_validate,
    cv_table,
    default_models,
)

MODELS = default_models(tune=True)
#: For time on wide features: the logistic regression's grid without C > 1e-2, which it
#: never chose on these features (see docs/benchmarks.md); --full-lr-grid restores it.
FAST_CS = tuple(float(c) for c in np.logspace(-6, -2, 9))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("features", help="features folder(s), comma-separated to concatenate")
    ap.add_argument("--models", default=",".join(m for m in MODELS if m != "bottleneck_cv_wide"), help="comma-separated subset of " + ",".join(MODELS))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out", default=None, help="write the result JSON here")
    ap.add_argument("--full-lr-grid", action="store_true",
                    help="the logistic regression's default C grid (1e-6..1) instead of 1e-6..1e-2")
    a = ap.parse_args(argv)
    folders = a.features.split(",")
    if not all(Path(f, "manifest.json").is_file() for f in folders):
        print(f"features folder(s) {folders} not found: extract them first (see the docstring)")
        return 0
    warnings.simplefilter("ignore")
    fs = concat_features(folders)
    models = {m: MODELS[m] for m in a.models.split(",")}
    if not a.full_lr_grid and "logistic_regression" in models:
        models["logistic_regression"] = lambda seed: TunedLogisticRegression(FAST_CS, random_state=seed)
    t0 = time.time()
    res = cross_validate(fs, n_splits=a.folds, models=models, n_boot=a.n_boot,
                         progress=lambda k, n, line: print(line, file=sys.stderr, flush=True))
    res.pop("oof")
    res["features"] = folders
    res["feature_dim"] = int(fs.X.shape[1])
    res["seconds"] = round(time.time() - t0, 1)
    print(f"{' + '.join(Path(f).name for f in folders)} (d={fs.X.shape[1]}, {res['n_images']} images)")
    print(cv_table(res))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
