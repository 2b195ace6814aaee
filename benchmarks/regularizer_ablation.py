"""Does the paper's regularizer act? Patient-wise 5-fold CV of the bottleneck over a grid of
lambda1 (L1 on the codes), lambda2 (L2 on the codes) and alpha (L2 on W and V), alpha = 0
included, full-batch L-BFGS; each row reports the pooled out-of-fold macro AUC, the size of
each loss term at the solution (mean over folds, training rows) and the share of near-zero
code entries.

    python benchmarks/regularizer_ablation.py FEATURES [--k 8] [--out docs/results/regularizer_ablation.json]

Each row with a code penalty also gets its paired patient-bootstrap difference against the
row without one at the same alpha (same folds, same images): "does the code penalty help
at this weight penalty?" is answered by that interval. Not nested: it shows how the terms
behave, it does not choose defaults. Exits 2 when FEATURES is missing.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import json
import warnings
from pathlib import Path

import numpy as np
from provenance import provenance

from medxfer.features import FeatureSet
from medxfer.head import BottleneckClassifier
from medxfer.metrics import macro_auc, paired_bootstrap_auc
from medxfer.splits import patient_kfold


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("features")
    ap.add_argument("--k", type=int, default=8, help="bottleneck width (default 8)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    prov = provenance(argv)  # at the start: the code that runs, not what is checked out later
    if not Path(a.features, "manifest.json").is_file():
        print(f"no features in {a.features}: run `medxfer extract ../shared/data/nih14-sample "
              "--out FEATURES` first", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")
    fs = FeatureSet.load(a.features)
    X, Y, g = fs.X, fs.Y, fs.dataset.patient_ids
    folds = patient_kfold(g, 5, Y=Y, seed=0)
    rows, preds = [], {}
    lines = ["| lambda1 | lambda2 | alpha | OOF macro AUC | vs no code penalty at this alpha, paired (95% CI) "
             "| CE | lambda1 term | lambda2 term | weight term | near-zero codes |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines))
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
        preds[(l1, l2, alpha)] = oof
        row = {"l1": l1, "l2": l2, "alpha": alpha, "oof_macro_auc": auc} | t
        if l1 or l2:
            d = paired_bootstrap_auc(Y, preds[(0.0, 0.0, alpha)], oof, groups=g, n_boot=1000)
            row["vs_no_code_penalty"] = {"difference": d["difference"], "ci95": d["ci95"]}
        rows.append(row)
        v = row.get("vs_no_code_penalty")
        vs = "—" if v is None else f"{v['difference']:+.3f} ({v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f})"
        lines.append(f"| {l1:g} | {l2:g} | {alpha:g} | {auc:.3f} | {vs} | {t['ce']:.3f} | {t['code_l1']:.3f} | "
                     f"{t['code_l2']:.3f} | {t['weight_penalty']:.3f} | {t['code_near_zero_fraction']:.2f} |")
        print(lines[-1], flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"k": a.k, "features": a.features, "rows": rows,
                                           "provenance": prov}, indent=1) + "\n")
        Path(a.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
