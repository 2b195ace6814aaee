"""Grad-CAM against the official ChestX-ray14 bounding boxes.

    python benchmarks/cam_boxes.py [--data ../shared/data/nih14-sample]

Trains the default model on the sample's images that have no box (features from
EfficientNet-Lite0), then for every official box on the remaining images computes the
Grad-CAM map of the box's finding and checks whether the map's peak falls inside the box.
Prints the hit rate beside two references: the image centre as the "peak", and the share of
the image the boxes cover (the hit rate of a uniformly random peak).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from medxfer.backbones import create_backbone
from medxfer.cam import grad_cam, peak
from medxfer.data import read_dataset
from medxfer.features import extract_features
from medxfer.images import load_image
from medxfer.pipeline import train_from_features


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/nih14-sample"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if not Path(a.data).is_dir():
        print(f"skipped: data folder {a.data} not present")
        return 0
    ds = read_dataset(a.data)
    boxes = ds.boxes
    if boxes is None or boxes.empty:
        print("skipped: no bounding boxes on these images")
        return 0
    boxed = ds.table["image_id"].isin(set(boxes["image_id"])).to_numpy()
    bb = create_backbone("efficientnet_lite0")
    with tempfile.TemporaryDirectory() as tmp:
        fs = extract_features(ds.subset(~boxed), bb, Path(tmp) / "f", progress=False)
        model = train_from_features(fs, head={"random_state": a.seed})
    rows = []
    for b in boxes.itertuples(index=False):
        path = ds.table.loc[ds.table["image_id"] == b.image_id, "path"].iloc[0]
        img = load_image(path)
        sy, sx = img.shape[0] / 1024.0, img.shape[1] / 1024.0  # boxes are in 1024-px coordinates
        cam = grad_cam(model, img, [b.finding], backbone=bb)[b.finding]
        r, c = peak(cam)
        inside = lambda rr, cc: b.x * sx <= cc <= (b.x + b.w) * sx and b.y * sy <= rr <= (b.y + b.h) * sy  # noqa: E731
        rows.append({"image": b.image_id, "finding": b.finding, "hit": bool(inside(r, c)),
                     "centre_hit": bool(inside(img.shape[0] / 2, img.shape[1] / 2)),
                     "box_area_share": float(b.w * b.h / 1024 ** 2)})
    n = len(rows)
    out = {"boxes": n, "train_images": int((~boxed).sum()),
           "cam_peak_hit_rate": sum(r["hit"] for r in rows) / n,
           "centre_hit_rate": sum(r["centre_hit"] for r in rows) / n,
           "random_peak_expected_hit_rate": float(np.mean([r["box_area_share"] for r in rows])),
           "per_box": rows}
    print(json.dumps(out, indent=1))
    print(f"Grad-CAM peak inside the box: {sum(r['hit'] for r in rows)}/{n}; image centre: "
          f"{sum(r['centre_hit'] for r in rows)}/{n}; random peak expected "
          f"{out['random_peak_expected_hit_rate']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
