"""Per-image CPU latency of an exported model: PyTorch (the same graph, eager) against
onnxruntime (CPU provider), batch 1 and batch 16, run by hand:

    python benchmarks/export_latency.py MODEL [--threads 2] [--repeats 20]

MODEL is a model folder (from `medxfer train`); the ONNX file is written to a temporary
folder. Inputs are bundled sample images, decoded and resized as medxfer does (decoding is
not timed: it is the same for both engines).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medxfer.engine import onnx_session
from medxfer.export import WholeModel, export_onnx, sample_inputs
from medxfer.model_io import TrainedModel
from medxfer.data import bundled_sample


def _time(fn, repeats):
    fn()  # warm-up
    t = []
    for _ in range(repeats):
        s = time.perf_counter()
        fn()
        t.append(time.perf_counter() - s)
    return float(np.median(t))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = TrainedModel.load(a.model)
    gray = sample_inputs(model, sorted((bundled_sample() / "images").glob("*.png"))[:16])
    whole = WholeModel(model).eval()
    res = {"backbone": model.backbone["name"], "input_size": int(gray.shape[-1]), "threads": a.threads,
           "members": len(model.estimator.members_)}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "m.onnx")
        res["onnx_mb"] = round(path.stat().st_size / 1e6, 1)
        sess = onnx_session(path, threads=a.threads)
        for b in (1, 16):
            x = gray[:b]
            with torch.inference_mode():
                tt = _time(lambda: whole(torch.from_numpy(x)), a.repeats)
            to = _time(lambda: sess.run(None, {"gray": x}), a.repeats)
            res[f"batch{b}_ms_per_image"] = {"pytorch": round(1000 * tt / b, 1),
                                             "onnxruntime": round(1000 * to / b, 1)}
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
