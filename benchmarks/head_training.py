"""Head training at ChestX-ray14 scale on cached features (synthetic numbers, real shape).

    python benchmarks/head_training.py [--n 112120] [--d 1280] [--grid 50] [--epochs 8]

Features: n x d float16 with 14 findings at ChestX-ray14 prevalences, drawn from a random
linear model (only the shape and sparsity matter for speed). Measures seconds per epoch of
one BottleneckClassifier (batch 64 and 512), the time of one epoch that recomputes the
backbone instead (n / the extraction throughput measured in docs/benchmarks.md, or
--extract-img-per-s), and a grid of settings trained in one pass by medxfer.head.fit_grid.
Target: a 50-setting grid in under 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

import numpy as np

from medxfer.head import fit_grid
from medxfer.head import BottleneckClassifier

PREVALENCE = [.103, .025, .119, .177, .052, .056, .013, .047, .042, .021, .022, .015, .030, .002]


def synthetic(n, d, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32).astype(np.float16)
    W = rng.standard_normal((d, 14)).astype(np.float32) / np.sqrt(d)
    prev = np.array(PREVALENCE)
    logit = X.astype(np.float32) @ W * 1.5 + np.log(prev / (1 - prev))
    Y = (rng.random((n, 14)) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    groups = np.arange(n) // 4  # ~4 images per patient, as in the release
    return X, Y, groups


def grid_of(size):
    full = [dict(bottleneck_dim=k, l1=lam, l2=lam, lr=lr, imbalance=imb)
            for k, lam, lr, imb in itertools.product((64, 128, 256), (0.0, 1e-4, 1e-3, 1e-2),
                                                    (1e-3, 3e-4), ("pos_weight", "focal"))]
    full += [dict(bottleneck_dim=256, l1=1e-4, l2=1e-4, imbalance="class_balanced"),
             dict(bottleneck_dim=256, l1=1e-4, l2=1e-4, alpha=1e-2, imbalance="pos_weight")]
    return full[:size]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=112120)
    ap.add_argument("--d", type=int, default=1280)
    ap.add_argument("--grid", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--extract-img-per-s", type=float, default=34.0)
    a = ap.parse_args(argv)
    X, Y, groups = synthetic(a.n, a.d)
    out = {"n": a.n, "d": a.d, "cores": os.cpu_count()}
    for bs in (64, 512):
        t = time.time()
        m = BottleneckClassifier(256, solver="adamw", batch_size=bs, max_epochs=2,
                                 patience=100).fit(X, Y, groups=groups)
        out[f"single_s_per_epoch_batch{bs}"] = round((time.time() - t) / 2, 2)
        print(f"one setting, batch {bs}: {out[f'single_s_per_epoch_batch{bs}']} s/epoch "
              f"(val macro AUC {m.best_score_:.3f})", flush=True)
    out["backbone_epoch_s"] = round(a.n / a.extract_img_per_s, 0)
    out["ratio_backbone_epoch_to_head_epoch"] = round(out["backbone_epoch_s"] / out["single_s_per_epoch_batch64"], 0)
    grid = grid_of(a.grid)
    t = time.time()
    ests = fit_grid(X, Y, grid, groups=groups, batch_size=512, max_epochs=a.epochs,
                    patience=a.patience, progress=lambda msg: print(msg, flush=True))
    out["grid_settings"] = len(grid)
    out["grid_seconds"] = round(time.time() - t, 1)
    out["grid_epochs_run"] = max(len(e.history_) for e in ests)
    best = max(range(len(ests)), key=lambda i: ests[i].best_score_)
    out["grid_best"] = {"setting": grid[best], "val_macro_auc": ests[best].best_score_}
    print(json.dumps(out, default=str))
    print(f"{len(grid)} settings in {out['grid_seconds']:.0f} s (target < 600 s); one head epoch "
          f"{out['single_s_per_epoch_batch64']} s vs about {out['backbone_epoch_s']:.0f} s for an "
          f"epoch that recomputes the backbone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
