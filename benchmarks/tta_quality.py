"""Test-time augmentation of frozen features, under the nested protocol of model_quality.py.

    python benchmarks/tta_quality.py [DATA] [--backbone NAME] [--out result.json]

Views that suit radiographs (no left-right flip: the heart is on the left): the image as is,
a 5% central zoom, and rotations of +4 and -4 degrees, each applied after the resize, like the
disturbance study's corruptions. The features of the views are averaged per image (the same
views for training and test images). Nested patient-wise 5-fold CV (outer seed 0) of the tuned
logistic regression and of what `medxfer train` deploys, on the plain and on the averaged
features; paired differences on the same folds. Skips politely when DATA is absent.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/nih14-sample"


@dataclass(frozen=True)
class View:
    """A deterministic view of the resized gray image (the `corruption` hook of extraction)."""

    zoom: float = 1.0
    degrees: float = 0.0

    def __call__(self, gray: np.ndarray, key: str = "") -> np.ndarray:
        import torch
        from torchvision.transforms.v2 import functional as F

        t = torch.from_numpy(np.ascontiguousarray(gray))[None]
        s = gray.shape[-1]
        if self.zoom != 1.0:
            c = int(round(s / self.zoom))
            t = F.resize(F.center_crop(t, [c, c]), [s, s], antialias=True)
        if self.degrees:
            t = F.rotate(t, self.degrees, interpolation=F.InterpolationMode.BILINEAR, fill=0.0)
        return t[0].clamp(0, 1).numpy()

    def as_dict(self) -> dict | None:
        if self.zoom == 1.0 and not self.degrees:
            return None
        return {"name": "tta_view", "zoom": self.zoom, "degrees": self.degrees}


VIEWS = (View(), View(zoom=1 / 0.95), View(degrees=4.0), View(degrees=-4.0))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", default=str(DEFAULT_DATA))
    ap.add_argument("--backbone", default=None, help="default: the default extraction")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if not Path(a.data).is_dir():
        print(f"skipped: data folder {a.data} not present")
        return 0
    warnings.simplefilter("ignore")
    from medxfer.backbones import create_backbone
    from medxfer.baselines import TunedLogisticRegression
    from medxfer.data import read_dataset
    from medxfer.experiments import CalibratedBottleneckCV, cross_validate
    from medxfer.features import extract_features
    from medxfer.metrics import paired_bootstrap_auc
    from medxfer.settings import DEFAULT_BACKBONE, DEFAULT_POOLING

    work = Path(a.work or tempfile.mkdtemp(prefix="medxfer-tta-"))
    ds = read_dataset(a.data)
    bb = create_backbone(a.backbone or DEFAULT_BACKBONE, pooling=DEFAULT_POOLING)
    sets = []
    for i, v in enumerate(VIEWS):
        fs = extract_features(ds, bb, work / f"view{i}", corruption=v, image_cache=work / "images",
                              progress=False)
        if len(fs) != len(ds):
            raise SystemExit("some images did not decode; the folds need every row")
        sets.append(fs)
    fast = tuple(float(c) for c in np.logspace(-6, -2, 9))
    models = {"logistic_regression": lambda seed: TunedLogisticRegression(fast, random_state=seed),
              "medxfer_train": lambda seed: CalibratedBottleneckCV(random_state=seed)}
    inputs = {"plain": sets[0],
              "tta4": replace(sets[0], features=np.mean([f.X for f in sets], axis=0))}
    oof, res = {}, {"data": str(a.data), "backbone": bb.config.name, "views": [v.as_dict() for v in VIEWS],
                    "pooled": {}, "paired_tta_minus_plain": {}}
    for fname, fs in inputs.items():  # the same patient-wise outer folds (seed 0) for both
        cv = cross_validate(fs, n_splits=5, models=models, n_boot=1000)
        for m in models:
            oof[(fname, m)] = cv["oof"][m]
            r = cv["models"][m]
            res["pooled"][f"{fname} {m}"] = [r["pooled_macro_auc"], r["pooled_macro_auc_ci95"]]
            print(f"{fname} {m}: pooled {r['pooled_macro_auc']:.4f}", flush=True)
    Y, groups = sets[0].Y, sets[0].dataset.patient_ids
    for m in models:
        d = paired_bootstrap_auc(Y, oof[("plain", m)], oof[("tta4", m)], groups=groups, n_boot=1000)
        res["paired_tta_minus_plain"][m] = [d["difference"], d["ci95"]]
        print(f"{m}: tta4 - plain {d['difference']:+.4f} ({d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f})")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
