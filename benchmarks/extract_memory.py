"""Peak memory of feature extraction versus the number of images (streaming check).

    python benchmarks/extract_memory.py [--counts 2000 20000] [--input-size 64] [--workers 1]

Writes synthetic 1024x1024 8-bit PNG radiograph stand-ins (smooth gradients, ellipses and
noise, so they decode like real files) into a temporary CSV dataset, extracts features in a
child process for each count, and samples the resident memory of that process and its
decode workers (summed) every 0.1 s. Target: the peak for the largest count within 10% of
the peak for the smallest. A small --input-size keeps the run short; memory that grows with
the image count would grow at any input size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(folder: Path, n: int, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:1024, 0:1024].astype(np.float32) / 1024
    base = 80 + 60 * np.sin(3 * xx) * np.cos(2 * yy)
    rows = ["path,patient_id,Mass"]
    templates = []
    for k in range(16):  # a few distinct images, each saved many times under new names
        img = base.copy()
        cx, cy, r = rng.random(3) * [1, 1, 0.2] + [0, 0, 0.05]
        img += 60 * (((xx - cx) ** 2 + (yy - cy) ** 2) < r ** 2)
        img += rng.normal(0, 4, img.shape)
        path = folder / f"t{k}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, compress_level=1)
        templates.append(path.read_bytes())
    for i in range(n):
        name = f"img{i:06d}.png"
        (folder / name).write_bytes(templates[i % len(templates)])
        rows.append(f"{name},p{i},{i % 2}")
    (folder / "data.csv").write_text("\n".join(rows) + "\n")
    return folder / "data.csv"


def tree_rss_kb(pid: int) -> int:
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for t in Path(f"/proc/{p}/task").iterdir():
                kids = (t / "children").read_text().split()
                stack.extend(int(k) for k in kids)
        except (OSError, ValueError):
            pass
    return total


def run(csv: Path, out: Path, input_size: int, workers: int) -> tuple[float, float]:
    code = ("import sys; from medxfer.data import read_dataset; from medxfer.backbones import "
            "create_backbone; from medxfer.features import extract_features; "
            f"extract_features(read_dataset(sys.argv[1]), create_backbone('efficientnet_lite0', "
            f"input_size={input_size}), sys.argv[2], num_workers={workers}, progress=False)")
    t = time.time()
    proc = subprocess.Popen([sys.executable, "-c", code, str(csv), str(out)])
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss_kb(proc.pid))
            time.sleep(0.1)
    th = threading.Thread(target=sample)
    th.start()
    proc.wait()
    stop.set()
    th.join()
    if proc.returncode:
        raise SystemExit(f"extraction failed with code {proc.returncode}")
    return peak / 1024, time.time() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--tmp", default=None, help="scratch folder (default: system temp)")
    a = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        csv = make_images(Path(tmp) / "imgs", max(a.counts))
        lines = csv.read_text().splitlines()
        for n in sorted(a.counts):
            sub = Path(tmp) / f"data_{n}.csv"
            sub.write_text("\n".join(lines[: n + 1]) + "\n")
            sub_csv = Path(tmp) / "imgs" / sub.name
            sub_csv.write_text(sub.read_text())
            peak, secs = run(sub_csv, Path(tmp) / f"f{n}", a.input_size, a.workers)
            results[n] = {"peak_rss_mib": round(peak, 1), "seconds": round(secs, 1)}
            print(f"{n:6d} images: peak RSS {peak:.0f} MiB (process + workers), {secs:.0f} s", flush=True)
    lo, hi = results[min(results)], results[max(results)]
    ratio = hi["peak_rss_mib"] / lo["peak_rss_mib"]
    print(json.dumps({"results": results, "ratio_largest_to_smallest": round(ratio, 3),
                      "input_size": a.input_size, "workers": a.workers, "cores": os.cpu_count()}))
    print(f"peak grows x{ratio:.3f} from {min(results)} to {max(results)} images (target <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
