"""How often a 95% bootstrap interval of average precision covers the truth, on simulated
data of this project's shape (a few hundred images, 3-10% positives, weak separation):
the percentile, basic, BCa and bias-corrected percentile intervals side by side, with the
bias of the sample AP itself.

    python benchmarks/ap_interval_coverage.py [--reps 300] [--out docs/results/ap_interval_coverage.json]

Scores are N(0, 1) for negatives and N(sep, 1) for positives; the truth is the AP of two
million draws. medxfer uses the bias-corrected percentile interval for average precision
(medxfer.metrics.BIAS_CORRECTED_INTERVAL).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from provenance import provenance
from scipy.stats import norm

from medxfer.metrics import fast_ap, interval_of

REGIMES = ((421, 0.05, 0.55), (421, 0.03, 0.8), (106, 0.1, 0.6))


def draw(n, rng, prev, sep):
    y = (rng.random(n) < prev).astype(float)
    return y, rng.normal(y * sep, 1.0)


def bca(y, p, draws, value, level=0.95):
    z0 = norm.ppf((draws < value).mean() + 0.5 * (draws == value).mean())
    jk = np.array([fast_ap(np.delete(y, i), np.delete(p, i)) for i in range(len(y))])
    d = jk.mean() - jk
    acc = (d ** 3).sum() / (6 * ((d ** 2).sum()) ** 1.5)
    zs = norm.ppf([(1 - level) / 2, (1 + level) / 2])
    return np.quantile(draws, norm.cdf(z0 + (z0 + zs) / (1 - acc * (z0 + zs))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--n-boot", type=int, default=300)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    prov = provenance(argv)  # at the start: the code that runs, not what is checked out later
    rng = np.random.default_rng(1)
    out = {"reps": a.reps, "n_boot": a.n_boot, "regimes": []}
    for n, prev, sep in REGIMES:
        yb, pb = draw(2_000_000, rng, prev, sep)
        truth = fast_ap(yb, pb)
        cover = {m: 0 for m in ("percentile", "basic", "bca", "bias_corrected")}
        width = dict.fromkeys(cover, 0.0)
        est, reps = [], 0
        for _ in range(a.reps):
            y, p = draw(n, rng, prev, sep)
            if y.sum() < 2:
                continue
            reps += 1
            value = fast_ap(y, p)
            est.append(value)
            idx = rng.integers(0, n, (a.n_boot, n))
            draws = np.array([fast_ap(y[i], p[i]) for i in idx if 0 < y[i].sum() < n])
            ivs = {m: interval_of(draws, value, method=m) for m in ("percentile", "basic", "bias_corrected")}
            ivs["bca"] = bca(y, p, draws, value)
            for m, (lo, hi) in ivs.items():
                cover[m] += lo <= truth <= hi
                width[m] += hi - lo
        row = {"n": n, "prevalence": prev, "separation": sep, "truth": truth,
               "mean_sample_ap": float(np.mean(est)), "reps": reps,
               "coverage": {m: c / reps for m, c in cover.items()},
               "mean_width": {m: w / reps for m, w in width.items()}}
        print(row, flush=True)
        out["regimes"].append(row)
    out["provenance"] = prov
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
