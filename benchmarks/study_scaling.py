"""How the cost of each study grows with the number of images (synthetic features, the
release's shape), run by hand:

    python benchmarks/study_scaling.py [--sizes 500,1000,2000] [--d 256] [--n-boot 100]
                                       [--studies compare,imbalance,sensitivity,shift,efficiency]
                                       [--out docs/study_scaling.json]

Features: n x d with 14 findings at ChestX-ray14 prevalences (benchmarks/head_training.py's
generator), about 4 images per patient, view/sex/age columns for the shift study. Each study
runs through its Python API with 3 folds, one draw per learning-curve point at 50% and
100%, and ``--n-boot`` resamples (the defaults multiply the work by a constant: 5/3 folds,
the points and draws of the curve, 1000/n_boot); the
disturbance study is left out (its cost is one training plus the re-extraction of at most
``--disturbance-images`` held-out images per corruption and severity: bounded, not growing
with the data). Reports seconds per study and size, and the growth exponent b of
t ~ n^b between the two largest sizes (b <= 1: no worse than linear).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from full_scale import as_feature_set  # noqa: E402
from head_training import synthetic  # noqa: E402

from medxfer.features import FeatureSet  # noqa: E402
from medxfer.settings import StudySettings  # noqa: E402
from medxfer.studies import STUDIES, StudyContext  # noqa: E402


def feature_set(n: int, d: int, seed: int = 0) -> FeatureSet:
    X, Y, groups = synthetic(n, d, seed)
    return as_feature_set(X, Y, groups, np.random.default_rng(seed))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="500,1000,2000")
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--n-boot", type=int, default=100)
    ap.add_argument("--studies", default="compare,imbalance,sensitivity,shift,efficiency")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",")]
    studies = [s for s in a.studies.split(",") if s]
    res = {"d": a.d, "n_boot": a.n_boot, "cpus": os.cpu_count(), "seconds": {}}
    for n in sizes:
        fs = feature_set(n, a.d)
        for name in studies:
            with tempfile.TemporaryDirectory() as tmp:
                ctx = StudyContext(fs, tmp, StudySettings(n_boot=a.n_boot, folds=3, draws=1,
                                                          fractions="0.5,1.0"))
                t = time.time()
                STUDIES[name](ctx)
                sec = time.time() - t
            res["seconds"].setdefault(name, {})[n] = round(sec, 1)
            print(f"n={n:6d} {name:<12} {sec:8.1f} s", flush=True)
    if len(sizes) >= 2:
        n1, n2 = sizes[-2], sizes[-1]
        res["growth_exponent"] = {name: round(float(np.log(t[n2] / t[n1]) / np.log(n2 / n1)), 2)
                                  for name, t in res["seconds"].items()}
        print("growth exponent b (t ~ n^b) between", n1, "and", n2, res["growth_exponent"])
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
