"""Feature-extraction throughput: the full pipeline beside its two parts alone.

    python benchmarks/extract_throughput.py [--data ../shared/data/nih14-sample]
        [--backbone efficientnet_lite0] [--batch-size 32] [--workers 1]

Measures, on the same machine in one run:
  decode  : decode + resize of the real 1024x1024 PNGs, one core, images/s
  forward : the backbone on pre-made tensors (same batch size and torch threads), images/s,
            with and without channels-last memory format
  pipeline: `extract_features` end to end (DataLoader decode workers + forward), images/s
and the bound  (forward core-time + decode core-time) / C  per image that no pipeline on C
cores can beat, with the pipeline's share of it. Prints a JSON line and a Markdown table.
Skips politely when the data folder is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from provenance import cpu_name

from medxfer.backbones import create_backbone
from medxfer.data import read_dataset
from medxfer.features import extract_features
from medxfer.images import load_image


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/nih14-sample"))
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--engines", nargs="+", default=["torch", "onnxruntime"],
                    help="forward engines of the pipeline, measured side by side")
    a = ap.parse_args(argv)
    if not Path(a.data).is_dir():
        print(f"skipped: data folder {a.data} not present")
        return 0
    ds = read_dataset(a.data)
    if a.limit:
        ds = ds.subset(np.arange(min(a.limit, len(ds))))
    n = len(ds)
    cores = os.cpu_count() or 1
    bb = create_backbone(a.backbone, input_size=a.input_size)
    pp = bb.preprocessing
    paths = ds.table["path"].tolist()

    # 1. decode + resize on one core (this process, no torch involved)
    t = time.perf_counter()
    for p in paths:
        pp.resize(load_image(p))
    decode_s = (time.perf_counter() - t) / n

    # 2. forward alone on pre-made tensors, same batch size and threads as the pipeline
    x = torch.randn(a.batch_size, 3, pp.size, pp.size)
    res = {}
    for label, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        model = bb.to(memory_format=fmt)
        xb = x.contiguous(memory_format=fmt)
        with torch.inference_mode():
            model(xb)  # warm-up
            reps = max(2, n // a.batch_size)
            t = time.perf_counter()
            for _ in range(reps):
                model(xb)
        res[label] = (time.perf_counter() - t) / (reps * a.batch_size)
    forward_s = res["channels_last"]
    threads = torch.get_num_threads()
    bound_s = (forward_s * threads + decode_s) / cores

    # 3. the pipeline
    pipe = {}
    engines = {}
    for eng in a.engines:
        if eng == "onnxruntime":
            from medxfer.engine import backbone_onnx

            backbone_onnx(bb)  # the one-time export is not part of the throughput
        for w in a.workers:
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                extract_features(ds, bb, Path(tmp) / "f", batch_size=a.batch_size, num_workers=w,
                                 progress=False, engine=eng)
                sec = (time.perf_counter() - t) / n
            engines.setdefault(eng, {})[w] = 1 / sec
            if eng == "torch":
                pipe[w] = sec
    best_w = min(pipe, key=pipe.get) if pipe else a.workers[0]
    out = {
        "machine": f"{cpu_name()}, {cores} cores", "torch": torch.__version__, "threads": threads,
        "backbone": a.backbone, "input_size": pp.size, "batch_size": a.batch_size, "images": n,
        "decode_resize_img_per_s_one_core": 1 / decode_s,
        "forward_img_per_s": 1 / forward_s,
        "forward_img_per_s_contiguous": 1 / res["contiguous"],
        "channels_last_speedup": res["contiguous"] / res["channels_last"],
        "bound_img_per_s": 1 / bound_s,
        "pipeline_img_per_s": {str(w): 1 / s for w, s in pipe.items()},
        "best_workers": best_w,
        "share_of_bound": bound_s / pipe[best_w] if pipe else None,
        "pipeline_img_per_s_by_engine": {e: {str(w): v for w, v in d.items()} for e, d in engines.items()},
    }
    print(json.dumps(out))
    print(f"\n| {out['machine']} | img/s |\n|---|---|")
    print(f"| decode + resize, 1 core | {out['decode_resize_img_per_s_one_core']:.1f} |")
    print(f"| forward, {threads} threads, channels-last | {out['forward_img_per_s']:.1f} |")
    print(f"| forward, contiguous | {out['forward_img_per_s_contiguous']:.1f} |")
    print(f"| bound (fwd core-time + decode core-time) / {cores} | {out['bound_img_per_s']:.1f} |")
    for e, d in engines.items():
        for w, v in d.items():
            print(f"| pipeline, engine {e}, {w} decode worker(s) | {v:.1f} |")
    if pipe:
        print(f"\npipeline reaches {out['share_of_bound']:.2f} of the torch bound")
    return 0


if __name__ == "__main__":
    sys.exit(main())
