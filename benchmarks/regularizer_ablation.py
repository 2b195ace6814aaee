"""Does the paper's regularizer act? Patient-wise 5-fold CV of the bottleneck over a grid of
lambda1 (L1 on the codes), lambda2 (L2 on the codes) and alpha (L2 on W and V), alpha = 0
included, full-batch L-BFGS; each row reports the pooled out-of-fold macro AUC, the size of
each loss term at the solution (mean over folds, training rows) and the share of near-zero
code entries.

    python benchmarks/regularizer_ablation.py FEATURES [--k 8] [--out FILE]

Not nested: it shows how the terms behave, it does not choose defaults.
"""

from __future__ import annotations

import argparse
import itertools
import json
import warnings
from pathlib import Path

import numpy as np

from medxfer.features import FeatureSet
from medxfer.head import BottleneckClassifier
from medxfer.metrics import macro_auc
from medxfer.splits import patient_kfold


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("features")
    ap.add_argument("--k", type=int, default=8, help="bottleneck width (default 8)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if not Path(a.features, "manifest.json").is_file():
        print(f"no features in {a.features}: run `medxfer extract` first")
        return 0
    warnings.simplefilter("ignore")
    fs = FeatureSet.load(a.features)
    X, Y, g = fs.X, fs.Y, fs.dataset.patient_ids
    folds = patient_kfold(g, 5, Y=Y, seed=0)
    rows = []
    print("| lambda1 | lambda2 | alpha | OOF macro AUC | CE | lambda1 term | lambda2 term | weight term | near-zero codes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for l1, l2, alpha in itertools.product((0.0, 1e-3, 1e-2), (0.0, 1e-3, 1e-2), (0.0, 0.01, 0.1)):
        oof = np.full(Y.shape, np.nan)
        terms = []
        for tr, te in folds:
            m = BottleneckClassifier(a.k, l1=l1, l2=l2, alpha=alpha, solver="lbfgs",
                                     validation_fraction=0.0).fit(X[tr], Y[tr], groups=g[tr])
            oof[te] = m.predict_proba(X[te])
            terms.append(m.loss_terms_)
        t = {k: float(np.mean([x[k] for x in terms])) for k in terms[0]}
        auc = macro_auc(Y, oof)
        rows.append({"l1": l1, "l2": l2, "alpha": alpha, "oof_macro_auc": auc} | t)
        print(f"| {l1:g} | {l2:g} | {alpha:g} | {auc:.4f} | {t['ce']:.4f} | {t['code_l1']:.4f} | "
              f"{t['code_l2']:.4f} | {t['weight_penalty']:.4f} | {t['code_near_zero_fraction']:.2f} |",
              flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
