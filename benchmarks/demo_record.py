"""`medxfer demo` on the bundled sample, recorded: what README's demo section quotes.

    python benchmarks/demo_record.py [--out docs/results/demo.json] [--work medxfer-demo]

Runs the demo exactly as `make demo` does (medxfer.pipeline.run_demo, seed 0) and writes its
report's metrics.json, the model's chosen setting and calibration summary, the seconds inside
the run, and the provenance (command, commit, date, machine).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from provenance import provenance

from medxfer.pipeline import run_demo


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="medxfer-demo", help="the demo's output folder")
    ap.add_argument("--out", default=None, help="result JSON")
    a = ap.parse_args(argv)
    prov = provenance(argv)
    t0 = time.time()
    run_demo(a.work, progress=False)
    seconds = time.time() - t0
    work = Path(a.work)
    metrics = json.loads((work / "report" / "metrics.json").read_text())
    model = json.loads((work / "model" / "model.json").read_text())
    out = {"seconds": round(seconds, 1), "metrics": metrics,
           "model": {k: model.get(k) for k in ("selection_metrics", "metrics") if k in model},
           "provenance": prov}
    text = json.dumps(out, indent=1, default=str) + "\n"
    print(f"demo: {seconds:.0f} s; macro AUC {metrics['metrics'].get('macro_auc')}")
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
