"""What one (model, fold) unit of the compare and efficiency studies costs on the real
sample, at shares of the training patients, run by hand:

    python benchmarks/study_units.py FEATURES [--fractions 1.0,0.25,0.05]
                                     [--models logistic_regression,linear_head,medxfer_train]
                                     [--out docs/results/study_units.json]

FEATURES: a features folder of ../shared/data/nih14-sample at the default extraction
(`medxfer extract ../shared/data/nih14-sample --out FEATURES`). Each unit is fitted on the
first outer fold's training rows (a share of its patients, as the efficiency study draws
them), with one thread and then with the row-space reduction switched off
(medxfer.head.rowspace.ROW_SPACE), so the file says what the reduction buys at each size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from provenance import provenance  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("features")
    ap.add_argument("--fractions", default="1.0,0.25,0.05")
    ap.add_argument("--models", default="logistic_regression,linear_head,medxfer_train")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs" / "results"
                                         / "study_units.json"))
    args = ap.parse_args(argv)
    if not Path(args.features).is_dir():
        print(f"skipped: no features folder at {args.features}")
        return 0
    prov = provenance()
    import numpy as np

    from medxfer.cores import use_threads
    from medxfer.experiments import MODELS
    from medxfer.features import FeatureSet
    from medxfer.head import rowspace
    from medxfer.settings import DEFAULT_SEED
    from medxfer.splits import patient_kfold
    from medxfer.studies.efficiency import subsample_patients

    use_threads(1)  # as a worker of a 2-core run gets
    fs = FeatureSet.load(args.features)
    X, Y, g = fs.X, fs.Y, fs.dataset.patient_ids
    tr, _ = patient_kfold(g, 5, Y=Y, seed=DEFAULT_SEED)[0]
    rows = []
    for f in [float(x) for x in args.fractions.split(",")]:
        sub = subsample_patients(tr, g, f, np.random.default_rng(0))
        for name in args.models.split(","):
            row = {"model": name, "fraction": f, "train_images": int(len(sub)), "d": int(X.shape[1])}
            for on in (True, False):
                rowspace.ROW_SPACE = on
                t = time.time()
                MODELS[name](DEFAULT_SEED).fit(X[sub], Y[sub], groups=g[sub])
                row["seconds_row_space" if on else "seconds_features"] = round(time.time() - t, 1)
            rowspace.ROW_SPACE = True
            rows.append(row)
            print(row, flush=True)
    Path(args.out).write_text(json.dumps({"provenance": prov, "threads": 1, "units": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
