"""What training, the baseline, cv and the studies cost at ChestX-ray14's full size, run by hand:

    python benchmarks/full_scale.py [--sizes 28000,56000,112120] [--d 4952]
                                    [--entries train,logistic_regression,cv,compare,...]
                                    [--limit 1800] [--out docs/full_scale.json]

Features: synthetic, the release's shape (n x 4,952 float16, 14 findings at ChestX-ray14
prevalences, about 4 images per patient, view/sex/age columns; the generator of
benchmarks/head_training.py, filled block by block so that no float32 copy of the matrix
exists). Each entry runs in a process of its own, through its Python entry point at the
default settings, so that its peak resident memory (VmHWM) is its own:

    train                medxfer.pipeline.train_from_features (`medxfer train`)
    logistic_regression  medxfer.baselines.TunedLogisticRegression().fit (the tuned baseline)
    cv                   medxfer.experiments.cross_validate (`medxfer cv`)
    compare, imbalance, sensitivity, shift, efficiency
                         medxfer.studies.STUDIES[name] (`medxfer study NAME`)

(the disturbance study re-extracts corrupted images, so it needs images: not synthetic.)
An entry that runs past ``--limit`` seconds is stopped and recorded as such, with the limit:
a bound measured, not a number guessed. ``train`` also records a profile (the functions with
the most cumulative time) and the passes over the features its selection made.

Results are merged into ``--out`` (and its table into docs/results/full_scale.md, which
README and docs/full_scale.md quote) as each entry ends (a rerun skips what is there unless
``--redo``), with provenance taken when the run starts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from head_training import PREVALENCE  # noqa: E402
from provenance import provenance  # noqa: E402

STUDY_ENTRIES = ("compare", "imbalance", "sensitivity", "shift", "efficiency")
ENTRIES = ("train", "logistic_regression", "cv") + STUDY_ENTRIES


def synthetic_feature_set(n: int, d: int, seed: int = 0):
    """A FeatureSet of n x d float16 synthetic features, filled 8,192 rows at a time."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((d, 14)).astype(np.float32) / np.sqrt(d)
    prev = np.array(PREVALENCE)
    X = np.empty((n, d), np.float16)
    Y = np.empty((n, 14), np.float32)
    for i in range(0, n, 8192):
        block = rng.standard_normal((min(8192, n - i), d), dtype=np.float32)
        X[i:i + len(block)] = block
        logit = block.astype(np.float16).astype(np.float32) @ W * 1.5 + np.log(prev / (1 - prev))
        Y[i:i + len(block)] = rng.random(logit.shape) < 1 / (1 + np.exp(-logit))
    return as_feature_set(X, Y, np.arange(n) // 4, rng)


def as_feature_set(X, Y, groups, rng):
    """A FeatureSet around synthetic features: image ids, patients ``groups`` and random
    view/sex/age columns (for the shift study) drawn from ``rng``."""
    import pandas as pd

    from medxfer.data import Dataset
    from medxfer.data.contract import CHESTXRAY14_FINDINGS
    from medxfer.features import FeatureSet

    n, d = X.shape
    table = pd.DataFrame({"image_id": [f"{i:08d}.png" for i in range(n)], "path": "",
                          "patient_id": groups.astype(str),
                          "view": np.where(rng.random(n) < 0.6, "PA", "AP"),
                          "sex": np.where(rng.random(n) < 0.55, "M", "F"),
                          "age": rng.integers(1, 95, n)})
    ds = Dataset(table, Y, CHESTXRAY14_FINDINGS, name=f"synthetic-{n}")
    manifest = {"dataset_fingerprint": ds.fingerprint(),
                "backbone": {"name": "synthetic", "feature_dim": d}}
    return FeatureSet(X, ds, manifest)


def _memory_gb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1e6  # kB
    return float("nan")


def _profile_top(prof, k: int = 12) -> list[dict]:
    import pstats

    st = pstats.Stats(prof)
    rows = []
    for (file, line, fn), (cc, nc, tt, ct, callers) in st.stats.items():
        rows.append({"function": f"{Path(file).name}:{line}({fn})", "cumulative_s": round(ct, 1),
                     "own_s": round(tt, 1), "calls": nc})
    rows.sort(key=lambda r: -r["cumulative_s"])
    return rows[:k]


def run_entry(entry: str, n: int, d: int) -> dict:
    """One entry at one size, in this process (the child)."""
    import tempfile

    fs = synthetic_feature_set(n, d)
    out = {"features_gb": round(fs.features.nbytes / 1e9, 3),
           "rss_before_gb": round(_memory_gb("VmRSS"), 3),
           "peak_before_gb": round(_memory_gb("VmHWM"), 3)}
    t0 = time.time()
    if entry == "train":
        import cProfile

        from medxfer import pipeline

        prof = cProfile.Profile()
        prof.enable()
        model = pipeline.train_from_features(fs)
        prof.disable()
        out["profile"] = _profile_top(prof)
        out["selected_by"] = model.metrics.get("selected_by")
        out["chosen"] = model.config.get("chosen")
        out["selection"] = model.metrics.get("selection")
    elif entry == "logistic_regression":
        from medxfer.baselines import TunedLogisticRegression

        lr = TunedLogisticRegression(random_state=0).fit(fs.features, fs.Y,
                                                         groups=fs.dataset.patient_ids)
        out["chosen_C"] = np.asarray(lr.C_).tolist() if hasattr(lr, "C_") else None
    elif entry == "cv":
        from medxfer.experiments import cross_validate

        r = cross_validate(fs)
        out["pooled_macro_auc"] = {k: v["pooled"].get("macro_auc") for k, v in r["models"].items()}
    else:
        from medxfer.settings import StudySettings
        from medxfer.studies import STUDIES, StudyContext

        with tempfile.TemporaryDirectory() as tmp:
            STUDIES[entry](StudyContext(fs, tmp, StudySettings()))
    out["seconds"] = round(time.time() - t0, 1)
    out["peak_rss_gb"] = round(_memory_gb("VmHWM"), 3)
    return out


def kernels(d: int, chunk: int = 4096, repeats: int = 30) -> dict:
    """What one pass of the head's training is made of, per chunk of ``chunk`` rows: the
    float16 -> float32 cast with the centering (one op), and the forward (z @ W.T) and
    backward (grad_out.T @ z) products at the widths a selection pass multiplies by (8, 14,
    32: one setting's; 150: the 9 default settings side by side), in GFLOP/s."""
    import torch

    x = torch.randn(chunk, d).half()
    mean, z = torch.randn(d), torch.randn(chunk, d)
    t = time.perf_counter()
    for _ in range(repeats):
        torch.sub(x, mean)
    out = {"chunk_rows": chunk, "threads": torch.get_num_threads(),
           "cast_and_center_ms_per_chunk": round((time.perf_counter() - t) / repeats * 1e3, 2),
           "gflops": {}}
    for k in (8, 14, 32, 64, 150):
        w, o = torch.randn(k, d), torch.empty(chunk, k)
        g, go = torch.zeros(k, d), torch.randn(chunk, k)
        t = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(z, w.T, out=o)
        fwd = (time.perf_counter() - t) / repeats
        t = time.perf_counter()
        for _ in range(repeats):
            g.addmm_(go.T, z)
        bwd = (time.perf_counter() - t) / repeats
        flop = 2 * chunk * d * k
        out["gflops"][str(k)] = {"forward": round(flop / fwd / 1e9, 1), "backward": round(flop / bwd / 1e9, 1)}
    return out


def table(res: dict) -> str:
    """Markdown: one row per entry, one column per size, "seconds s, peak GB" in each cell."""
    results = res.get("results", {})
    sizes = sorted({r["n"] for r in results.values()})
    lines = ["| entry | " + " | ".join(f"n = {n:,}" for n in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for entry in ENTRIES:
        cells = []
        for n in sizes:
            r = results.get(f"{entry}@{n}")
            if r is None:
                cells.append("not run")
            elif r["status"] == "ok":
                cells.append(f"{r['seconds']:.0f} s, {r['peak_rss_gb']:.2f} GB")
            else:
                cells.append(f"{r['status']} ({r['seconds']} s)")
        if any(c != "not run" for c in cells):
            lines.append(f"| {entry} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="28000,56000,112120")
    ap.add_argument("--d", type=int, default=4952)
    ap.add_argument("--entries", default=",".join(ENTRIES))
    ap.add_argument("--limit", type=float, default=1800.0,
                    help="seconds an entry may run before it is stopped and recorded so")
    ap.add_argument("--out", default="docs/full_scale.json")
    ap.add_argument("--redo", action="store_true", help="rerun entries already in --out")
    ap.add_argument("--table", default=None,
                    help="also write the Markdown table here (default: docs/results/full_scale.md)")
    ap.add_argument("--kernels", action="store_true",
                    help="only measure the pass's kernels (cast, products by width) into --out")
    ap.add_argument("--table-only", action="store_true",
                    help="only rewrite the Markdown table from --out")
    ap.add_argument("--child", nargs=2, metavar=("ENTRY", "N"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(run_entry(a.child[0], int(a.child[1]), a.d)))
        return 0
    entries = [e for e in a.entries.split(",") if e]
    unknown = sorted(set(entries) - set(ENTRIES))
    if unknown:
        ap.error(f"unknown entries {unknown}; known: {', '.join(ENTRIES)}")
    out = Path(a.out)
    res = json.loads(out.read_text()) if out.exists() else {}
    if a.table_only:
        Path(a.table or "docs/results/full_scale.md").write_text(table(res))
        return 0
    if a.kernels:
        res["kernels"] = kernels(a.d) | {"provenance": provenance()}
        print(json.dumps(res["kernels"], indent=2))
        out.write_text(json.dumps(res, indent=2, default=str) + "\n")
        return 0
    res.setdefault("results", {})
    res["d"], res["cores"], res["limit_s"] = a.d, os.cpu_count(), a.limit
    res.setdefault("runs", []).append(provenance())
    res["provenance"] = res["runs"][-1]
    for n in (int(s) for s in a.sizes.split(",")):
        for entry in entries:
            key = f"{entry}@{n}"
            if key in res["results"] and not a.redo:
                continue
            print(f"{key} ...", flush=True)
            t0 = time.time()
            try:
                p = subprocess.run([sys.executable, __file__, "--d", str(a.d), "--child", entry, str(n)],
                                   capture_output=True, text=True, timeout=a.limit)
                if p.returncode == 0:
                    r = json.loads(p.stdout.strip().splitlines()[-1]) | {"status": "ok"}
                else:
                    r = {"status": "error", "seconds": round(time.time() - t0, 1),
                         "error": p.stderr.strip().splitlines()[-1:] or ["?"]}
            except subprocess.TimeoutExpired:
                r = {"status": "stopped at the limit", "seconds": f">{a.limit:.0f}"}
            r |= {"entry": entry, "n": n, "commit": res["provenance"].get("commit")}
            res["results"][key] = r
            print(f"{key}: {r['status']}, {r.get('seconds')} s, peak {r.get('peak_rss_gb')} GB",
                  flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(res, indent=2, default=str) + "\n")
            Path(a.table or "docs/results/full_scale.md").write_text(table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
