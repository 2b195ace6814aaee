"""`medxfer study all` on the real sample, timed, and its results committed for the docs:

    python benchmarks/study_all.py [--data ../shared/data/nih14-sample] [--out study-run]
    python benchmarks/study_all.py --from-run study-run --time-log time.log --commit SHA

The first form runs ``medxfer study all DATA --out OUT`` (default extraction, default
settings) in a child process and measures its wall time and peak resident memory (the
largest of the process tree, from getrusage). The second collects a run made by hand under
GNU time (``/usr/bin/time -v medxfer study all ... 2> time.log``): its wall time and peak
memory are read from that log, and ``--commit`` names the code it ran.

Either way each study's tables (.md, .csv) and result.json are copied to
docs/results/studies/<study>/, its figures to docs/img/studies/, and
docs/results/studies/study_all.json records the wall time, the peak memory, each study's
own seconds (from its result.json) and the provenance; docs/studies.md and README quote
them through ledger markers. Skips politely when the sample is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from provenance import provenance  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ("compare", "imbalance", "sensitivity", "disturbance", "shift", "efficiency")


def parse_time_log(text: str) -> dict:
    """Wall seconds and peak RSS (GB) from GNU time -v output."""
    wall = re.search(r"Elapsed \(wall clock\) time.*?: (?:(\d+):)?(\d+):([\d.]+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if not wall or not rss:
        raise SystemExit("the time log holds no GNU time -v summary (run the study under "
                         "/usr/bin/time -v)")
    h, m, s = wall.groups()
    return {"wall_seconds": round(int(h or 0) * 3600 + int(m) * 60 + float(s), 1),
            "peak_rss_gb": round(int(rss.group(1)) / 1e6, 2)}


def collect(run: Path, measured: dict, prov: dict, docs: Path = ROOT / "docs") -> dict:
    """Copy each finished study's tables, result.json and figures into ``docs``; write
    results/studies/study_all.json."""
    out = {"provenance": prov, **measured, "studies": {}}
    for name in STUDIES:
        src = run / name
        if not (src / "result.json").is_file():
            out["studies"][name] = None  # not finished in this run
            continue
        result = json.loads((src / "result.json").read_text())
        dest = docs / "results" / "studies" / name
        dest.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.suffix in (".md", ".csv", ".json") and f.is_file():
                shutil.copy2(f, dest / f.name)
            elif f.suffix == ".png":
                (docs / "img" / "studies").mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, docs / "img" / "studies" / f.name)
        out["studies"][name] = {"seconds": result.get("seconds"),
                                "images_used": result.get("images_used")}
    done = [v["seconds"] for v in out["studies"].values() if v]
    out["sum_of_study_seconds"] = round(sum(done), 1)
    path = docs / "results" / "studies" / "study_all.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nih14-sample"))
    ap.add_argument("--out", default="study-run")
    ap.add_argument("--from-run", help="collect this finished run folder instead of running")
    ap.add_argument("--time-log", help="with --from-run: GNU time -v output of the run")
    ap.add_argument("--commit", help="with --from-run: the commit the run's code was")
    args = ap.parse_args(argv)
    prov = provenance()
    if args.from_run:
        if not args.time_log or not args.commit:
            ap.error("--from-run needs --time-log (GNU time -v output) and --commit")
        measured = parse_time_log(Path(args.time_log).read_text(errors="replace"))
        prov = prov | {"run_commit": args.commit, "collected_from": str(args.from_run)}
        run = Path(args.from_run)
    else:
        if not Path(args.data).is_dir():
            print(f"skipped: {args.data} is absent (the real sample lives in ../shared)")
            return 0
        t = time.time()
        code = subprocess.call([sys.executable, "-m", "medxfer", "study", "all", args.data,
                                "--out", args.out])
        if code:
            print(f"medxfer study all exited with {code}", file=sys.stderr)
            return code
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
        measured = {"wall_seconds": round(time.time() - t, 1), "peak_rss_gb": round(peak, 2)}
        run = Path(args.out)
    out = collect(run, measured, prov)
    print(json.dumps({k: v for k, v in out.items() if k != "provenance"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
