"""Fair sharing of the cores: the demo's training step alone and beside a second copy.

    python benchmarks/core_sharing.py [--active] [--out docs/core_sharing.json]

Extracts the bundled sample's features once (the demo's default backbone), then times
`medxfer train` on them (the demo's training step: the inner-CV choice among the default
grid) alone, then two copies started together. Two copies on 2 cores share them, so each
should take about twice its time alone; the target is at most 3x. ``--active`` repeats both with OMP_WAIT_POLICY=ACTIVE (OpenMP threads spin
while idle, the behaviour before medxfer asked for the passive policy) to show the cause.
Writes the seconds, the slowdown and the machine to JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medxfer import __version__
from medxfer.cores import usable_cores
from medxfer.data import bundled_sample


def _train(features: Path, out: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "medxfer", "-q", "train", str(features),
                             "--out", str(out)], env=env, stdout=subprocess.DEVNULL)


def _timed(procs: list[subprocess.Popen], t0: float) -> list[float]:
    out = []
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"medxfer train exited with {p.returncode}")
        out.append(round(time.time() - t0, 1))
    return out


def measure(features: Path, tmp: Path, env: dict) -> dict:
    tmp.mkdir()
    t0 = time.time()
    alone = _timed([_train(features, tmp / "alone", env)], t0)[0]
    t0 = time.time()
    pair = _timed([_train(features, tmp / f"pair{i}", env) for i in range(2)], t0)
    return {"alone_s": alone, "beside_a_second_copy_s": pair,
            "slowdown": round(max(pair) / alone, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--active", action="store_true",
                    help="also measure with OMP_WAIT_POLICY=ACTIVE (spinning threads)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs/core_sharing.json"))
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="medxfer-cores-") as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "medxfer", "-q", "extract", str(bundled_sample()),
                        "--out", str(tmp / "features")], check=True, stdout=subprocess.DEVNULL)
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        result = {"benchmark": "benchmarks/core_sharing.py", "medxfer": __version__,
                  "step": "medxfer train on the bundled sample's features (421 images, "
                          "default backbone and grid)",
                  "machine": f"{platform.processor() or platform.machine()}, "
                             f"{usable_cores()} usable cores, {os.cpu_count()} CPUs",
                  "date": time.strftime("%Y-%m-%d"),
                  "passive (the default)": measure(tmp / "features", tmp / "passive", env)}
        if a.active:
            result["OMP_WAIT_POLICY=ACTIVE"] = measure(tmp / "features", tmp / "active",
                                                       env | {"OMP_WAIT_POLICY": "ACTIVE"})
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = result["passive (the default)"]["slowdown"] <= 3
    print("target (at most 3x beside a second copy): " + ("met" if ok else "NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
