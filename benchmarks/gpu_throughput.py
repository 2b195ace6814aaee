"""Extraction and fine-tuning throughput on a GPU, beside onnxruntime on the same machine's CPUs.

    python benchmarks/gpu_throughput.py [--data ../shared/data/nih14-sample] [--copies 32]
        [--backbone efficientnet_lite2] [--pooling multistage] [--out result.json]

The real sample's full-resolution PNGs are linked ``--copies`` times under new image and
patient ids (same pixels, so a larger set without more data) and then, in one run:
  decode   : decode + resize on one core, img/s (the wall a GPU pipeline meets)
  forward  : the backbone alone on pre-made tensors on the GPU (fp32), img/s
  extract  : `extract_features` end to end, torch engine on the GPU, decode workers = cores-1;
             the same with onnxruntime on the CPUs; and the GPU run again from a warm image cache
  torchrun : `torchrun --nproc-per-node=2 -m medxfer extract` on the GPU(s) against the
             one-process cache (max abs difference and whether it is bit-identical: batches never
             span shards, so each shard is computed in the same batch shapes by either run)
  finetune : `finetune` (unfreeze 2 blocks, batch 64) from the warm image cache, training img/s
  equality : GPU features against CPU torch features of the same images
Skips politely without a GPU or without the data folder. The files are read from the page
cache after the first pass: a real 112,120-image run also reads 45 GB from disk.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medxfer.settings import DEFAULT_FINETUNE_BACKBONE, DEFAULT_POOLING


def _copies(src: Path, dst: Path, copies: int) -> Path:
    """A ChestX-ray14 folder holding every sample image ``copies`` times (hard links, new
    ids: copy c of 00000013_005.png is 9c000013_005.png style ids, patient ids shifted)."""
    table = pd.read_csv(src / "Data_Entry_2017_v2020.csv.gz")
    have = {p.name for p in (src / "images").glob("*.png")}
    table = table[table["Image Index"].isin(have)]
    (dst / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for c in range(copies):
        t = table.copy()
        t["Patient ID"] = t["Patient ID"] + (c + 1) * 1_000_000
        t["Image Index"] = [f"{c:03d}{n}" for n in t["Image Index"]]
        for old, new in zip(table["Image Index"], t["Image Index"]):
            target = dst / "images" / new
            if not target.exists():
                try:
                    os.link(src / "images" / old, target)
                except OSError:
                    target.write_bytes((src / "images" / old).read_bytes())
        rows.append(t)
    pd.concat(rows).to_csv(dst / "Data_Entry_2017_v2020.csv", index=False)
    return dst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/nih14-sample"))
    ap.add_argument("--copies", type=int, default=32)
    ap.add_argument("--backbone", default=DEFAULT_FINETUNE_BACKBONE)
    ap.add_argument("--pooling", default=DEFAULT_POOLING)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--finetune-steps", type=int, default=60, help="0: no fine-tuning part")
    ap.add_argument("--no-torchrun", action="store_true", help="leave out the torchrun part")
    ap.add_argument("--out", default=None, help="also write the result JSON here")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--dry-run", action="store_true",
                    help="everything on the CPU, to check the script where there is no GPU")
    a = ap.parse_args(argv)
    gpu_name = "cpu" if a.dry_run else "cuda"
    if not (a.dry_run or torch.cuda.is_available()):
        print("skipped: torch sees no GPU")
        return 0
    if not Path(a.data).is_dir():
        print(f"skipped: data folder {a.data} not present")
        return 0
    from medxfer.backbones import create_backbone
    from medxfer.data import read_dataset
    from medxfer.features import extract_features
    from medxfer.finetune import finetune
    from medxfer.images import load_image
    from medxfer.settings import FinetuneSettings

    work = Path(a.work or tempfile.mkdtemp(prefix="medxfer-gpu-"))
    root = _copies(Path(a.data), work / "data", a.copies)
    ds = read_dataset(root)
    n, cores = len(ds), os.cpu_count() or 1
    res = {"gpu": "none (dry run)" if a.dry_run else torch.cuda.get_device_name(0), "cores": cores, "torch": torch.__version__,
           "backbone": f"{a.backbone} {a.pooling}", "images": n, "batch_size": a.batch_size}
    print(json.dumps(res), flush=True)
    bb = create_backbone(a.backbone, pooling=a.pooling)
    pp = bb.preprocessing
    paths = ds.table["path"].tolist()

    t = time.perf_counter()
    for p in paths[:64]:
        pp.resize(load_image(p))
    res["decode_resize_img_per_s_one_core"] = 64 / (time.perf_counter() - t)

    dev = torch.device(gpu_name)
    model = bb.to(dev, memory_format=torch.channels_last)
    x = torch.randn(a.batch_size, 3, pp.size, pp.size, device=dev).contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    reps = 50 if dev.type == "cuda" else 2
    for tf32 in (False, True):  # extraction runs with TF32 off (features as on the CPU)
        torch.backends.cudnn.allow_tf32 = tf32
        with torch.inference_mode():
            for _ in range(5):
                model(x)
            sync()
            t = time.perf_counter()
            for _ in range(reps):
                model(x)
            sync()
        res["forward_img_per_s_gpu_" + ("tf32" if tf32 else "fp32")] = reps * a.batch_size / (time.perf_counter() - t)
    bb.to("cpu")
    print(json.dumps(res), flush=True)

    def timed(label, **kw):
        t = time.perf_counter()
        fs = extract_features(ds, bb, work / label, batch_size=a.batch_size, progress=False, **kw)
        res[f"extract_img_per_s_{label}"] = n / (time.perf_counter() - t)
        print(json.dumps({label: res[f"extract_img_per_s_{label}"]}), flush=True)
        return fs

    gpu = timed("gpu_torch", engine="torch", device=gpu_name)
    timed("gpu_torch_cached", engine="torch", device=gpu_name, image_cache=work / "imgcache")
    timed("gpu_torch_cache_warm", engine="torch", device=gpu_name, image_cache=work / "imgcache")
    from medxfer.engine import backbone_onnx

    backbone_onnx(bb)  # the one-time export is not part of the throughput
    timed("cpu_onnxruntime", engine="onnxruntime", device="cpu")

    m_eq = min(256, n)
    sub = ds.subset(np.arange(m_eq))
    cpu = extract_features(sub, bb, work / "cpu_torch_256", batch_size=a.batch_size, progress=False,
                           engine="torch", device="cpu")
    res["gpu_vs_cpu_torch_max_abs_diff"] = float(np.abs(gpu.X[:m_eq].astype(np.float32) - cpu.X.astype(np.float32)).max())
    res["feature_abs_max"] = float(np.abs(cpu.X).max())

    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    t = time.perf_counter()
    r = subprocess.CompletedProcess([], 0, "", "") if a.no_torchrun else subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "-m", "medxfer",
                        "-q", "extract", str(root), "--backbone", a.backbone, "--pooling", a.pooling, "--engine", "torch",
                        "--device", gpu_name, "--batch-size", str(a.batch_size), "--workers", str(max(1, cores // 2 - 1)),
                        "--out", str(work / "torchrun2")], env=env, capture_output=True, text=True)
    res["torchrun2_rc"] = r.returncode
    if a.no_torchrun:
        pass
    elif r.returncode == 0:
        from medxfer.features import FeatureSet

        res["extract_img_per_s_torchrun2_one_gpu"] = n / (time.perf_counter() - t)
        two = FeatureSet.load(work / "torchrun2")
        res["torchrun2_vs_one_process_max_abs_diff"] = float(np.abs(two.X.astype(np.float32) - gpu.X.astype(np.float32)).max())
        res["torchrun2_vs_one_process_identical"] = bool(np.array_equal(two.X, gpu.X))
    else:
        res["torchrun2_error"] = r.stderr[-2000:]
    print(json.dumps(res), flush=True)

    if not a.finetune_steps:
        print(json.dumps(res))
        if a.out:
            Path(a.out).write_text(json.dumps(res, indent=2))
        return 0
    st = FinetuneSettings(backbone=a.backbone, device=gpu_name, batch_size=a.batch_size, epochs=1,
                          max_steps=a.finetune_steps, image_cache=str(work / "imgcache"))
    t = time.perf_counter()
    m = finetune(ds, settings=st, progress=False)
    res["finetune_total_s"] = time.perf_counter() - t
    res["finetune_train_img_per_s"] = m.metrics.get("train_images_per_s")
    res["finetune_steps"] = m.metrics.get("steps")
    print(json.dumps(res))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
