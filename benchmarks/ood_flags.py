"""How often the out-of-distribution flag fires: real held-out radiographs (false alarms)
against non-chest images and corrupted radiographs. Run by hand after a disturbance study:

    python benchmarks/ood_flags.py STUDY_RUN [--out docs/ood_flags.json]

STUDY_RUN is the folder of `medxfer study disturbance DATA --out STUDY_RUN` (it holds the
clean features and the corrupted ones of the held-out patients). The score is fitted on the
study's training patients as `medxfer train` fits it (medxfer.ood.FeatureDistance); the
non-chest images are every DICOM image that ships with pydicom (MR, CT, US, colour).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import pydicom

from medxfer.backbones import rebuild_backbone
from medxfer.corruptions import CORRUPTIONS
from medxfer.data import read_image_paths
from medxfer.features import FeatureSet, extract_features
from medxfer.ood import FeatureDistance
from medxfer.settings import StudySettings
from medxfer.splits import patient_holdout


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    run = Path(a.run)
    (feats,) = list((run / "features").iterdir())[:1]
    fs = FeatureSet.load(feats)
    s = StudySettings()
    tr, te = patient_holdout(fs.dataset.patient_ids, s.test_fraction, Y=fs.Y, seed=s.seed)
    od = FeatureDistance.fit(fs.X[tr])
    out = {"threshold": od.threshold, "quantile": od.quantile, "train_images": int(len(tr)),
           "held_out_radiographs": {"n": int(len(te)), "flagged": float(od.flag(fs.X[te]).mean())},
           "corrupted": {}}
    for name in CORRUPTIONS:
        for sev in (1, 3, 5):
            folder = run / "disturbance" / "features" / f"{name}-{sev}"
            if folder.is_dir():
                out["corrupted"][f"{name}-{sev}"] = float(od.flag(FeatureSet.load(folder).X).mean())
    files = sorted((Path(pydicom.__file__).parent / "data").rglob("*.dcm"))
    ds, _ = read_image_paths(files)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nf = extract_features(ds, rebuild_backbone(fs.manifest["backbone"]), Path(tmp) / "f",
                              num_workers=0, progress=False)
        out["non_chest_dicom"] = {"n": int(len(nf)), "flagged": float(od.flag(nf.X).mean())}
    print(json.dumps(out, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
