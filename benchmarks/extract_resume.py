"""Time lost to a kill during feature extraction (target: at most one shard).

    python benchmarks/extract_resume.py [--data ../shared/data/nih14-sample] [--shard-size 64]

Runs `medxfer extract` once uninterrupted, then again killed with SIGKILL at a random moment
after the first shards are written, then resumed; time lost = killed + resumed - full. Also
checks that the resumed features equal the uninterrupted ones bit for bit.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from medxfer.features import FeatureSet


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/nih14-sample"))
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--kill-after-shards", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if not Path(a.data).is_dir():
        print(f"skipped: data folder {a.data} not present")
        return 0
    base = [sys.executable, "-m", "medxfer", "-q", "extract", a.data, "--shard-size", str(a.shard_size)]
    with tempfile.TemporaryDirectory() as tmp:
        full, killed = Path(tmp) / "full", Path(tmp) / "killed"
        t = time.time()
        subprocess.run(base + ["--out", str(full)], check=True)
        t_full = time.time() - t
        n_shards = len(list((full / "shards").glob("*.json")))
        per_shard = t_full / n_shards
        t = time.time()
        proc = subprocess.Popen(base + ["--out", str(killed)])
        while len(list((killed / "shards").glob("*.json"))) < a.kill_after_shards and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(np.random.default_rng(a.seed).uniform(0, per_shard))  # mid-shard
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        t_killed = time.time() - t
        done = len(list((killed / "shards").glob("*.json")))
        t = time.time()
        subprocess.run(base + ["--out", str(killed)], check=True)
        t_resume = time.time() - t
        same = np.array_equal(FeatureSet.load(full).features, FeatureSet.load(killed).features)
        t = time.time()  # a rerun on a complete folder: the fixed cost of starting a process
        subprocess.run(base + ["--out", str(full)], check=True)
        t_start = time.time() - t
    lost = t_killed + t_resume - t_full
    lost_work = lost - t_start
    out = {"shards": n_shards, "seconds_per_shard": round(per_shard, 2), "full_s": round(t_full, 1),
           "killed_s": round(t_killed, 1), "shards_done_at_kill": done, "resume_s": round(t_resume, 1),
           "lost_s": round(lost, 1), "startup_s": round(t_start, 1),
           "lost_work_s": round(lost_work, 1), "lost_work_in_shards": round(lost_work / per_shard, 2),
           "identical": same}
    print(json.dumps(out))
    print(f"time lost {lost:.1f} s, of which {t_start:.1f} s starting the second process; work lost "
          f"{lost_work:.1f} s = {lost_work / per_shard:.2f} shard(s) (target <= 1); resumed features "
          f"identical: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
