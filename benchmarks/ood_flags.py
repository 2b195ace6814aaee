"""How often the out-of-distribution flag fires, with exact binomial 95% CIs: on real
held-out radiographs (false alarms), on the same radiographs corrupted (8 disturbances at
severities 1, 3, 5) and on non-chest images; beside each corruption, the macro AUC it costs
the deployed model, so a blind spot (an image that loses AUC and is not flagged) shows.

    python benchmarks/ood_flags.py FEATURES [--work DIR] [--out FILE]   # writes docs/results/ood_flags.json

FEATURES is a features folder of `medxfer extract` (default extraction) of
../shared/data/nih14-sample. The split is the disturbance study's (`medxfer study
disturbance`: the same patient-wise hold-out, seed and image cap); the score is fitted on
the training patients with their patient groups, as `medxfer train` fits it
(medxfer.ood.FeatureDistance.fit(X, groups=)), and the model is what `medxfer train`
deploys. The held-out images are re-extracted per corruption into ``--work`` (a resumable
cache). The non-chest images are every DICOM file that ships with pydicom (MR, CT, US,
colour, test patterns); many are copies of one image, so they are also counted as
distinct images (by the pixel hash the extraction records), and both the feature flag alone
and the deployed rule (feature flag or a DICOM header that is not a chest radiograph's) are
reported. Exits 2 when its inputs are missing, 1 when an extraction lost images.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
from provenance import provenance
from scipy.stats import binomtest

from medxfer.backbones import rebuild_backbone
from medxfer.corruptions import CORRUPTIONS, Corruption
from medxfer.data import read_image_paths
from medxfer.experiments import CalibratedBottleneckCV
from medxfer.features import FeatureSet, extract_features, is_features_folder
from medxfer.metrics import macro_auc, paired_bootstrap_auc
from medxfer.ood import FeatureDistance, dicom_header_flags
from medxfer.settings import StudySettings
from medxfer.studies.disturbance import test_rows

SEVERITIES = (1, 3, 5)


def rate(flags) -> dict:
    """k of n flagged with the exact (Clopper-Pearson) 95% CI of the rate."""
    flags = np.asarray(flags, dtype=bool)
    k, n = int(flags.sum()), int(len(flags))
    ci = binomtest(k, n).proportion_ci(method="exact") if n else None
    return {"k": k, "n": n, "rate": k / n if n else None,
            "ci95": None if ci is None else [float(ci.low), float(ci.high)]}


class _Split:
    """What test_rows needs of a study context."""

    def __init__(self, fs: FeatureSet, settings: StudySettings):
        self.groups, self.Y, self.settings = fs.dataset.patient_ids, fs.Y, settings


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("features", help="features folder of ../shared/data/nih14-sample (default extraction)")
    ap.add_argument("--work", default="ood-flags-work", help="cache of the corrupted features")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "results" / "ood_flags.json"),
                    help="result JSON (default: docs/results/ood_flags.json, which README quotes)")
    ap.add_argument("--n-boot", type=int, default=1000)
    a = ap.parse_args(argv)
    prov = provenance(argv)  # at the start: the code that runs, not what is checked out later
    if not is_features_folder(a.features):
        print(f"'{a.features}' is not a features folder: run `medxfer extract "
              "../shared/data/nih14-sample --out FEATURES` first", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")
    fs = FeatureSet.load(a.features)
    s = StudySettings()
    tr, te = test_rows(_Split(fs, s))
    groups, Y, X = fs.dataset.patient_ids, fs.Y, fs.X
    od = FeatureDistance.fit(X[tr], groups=groups[tr])
    est = CalibratedBottleneckCV(random_state=s.seed).fit(X[tr], Y[tr], groups=groups[tr])
    P_clean = est.predict_proba(X[te])
    backbone = rebuild_backbone(fs.manifest["backbone"])
    test_ds = fs.dataset.subset(te)
    work = Path(a.work)
    out = {"features": a.features, "backbone": fs.manifest["backbone"]["name"],
           "threshold": od.threshold, "quantile": od.quantile,
           "train_images": int(len(tr)), "held_out_images": int(len(te)),
           "held_out_radiographs": rate(od.flag(X[te])),
           "clean_macro_auc": macro_auc(Y[te], P_clean), "corrupted": {}}
    lost = []
    for name in CORRUPTIONS:
        for sev in SEVERITIES:
            key = f"{name}-{sev}"
            cf = extract_features(test_ds, backbone, work / key, dtype=fs.manifest.get("dtype", "float16"),
                                  progress=False, image_cache=work / "image_cache",
                                  corruption=Corruption(name, sev, s.seed))
            if len(cf) != len(te):
                lost.append(f"{key}: {len(te) - len(cf)} images")
                continue
            P = est.predict_proba(cf.X)
            d = paired_bootstrap_auc(Y[te], P_clean, P, groups=groups[te], n_boot=a.n_boot, seed=s.seed)
            out["corrupted"][key] = rate(od.flag(cf.X)) | {
                "macro_auc": d["macro_auc_b"], "auc_drop": -d["difference"],
                "auc_drop_ci95": [-d["ci95"][1], -d["ci95"][0]]}
            print(key, out["corrupted"][key], flush=True)
    files = sorted((Path(pydicom.__file__).parent / "data").rglob("*.dcm"))
    ds, _ = read_image_paths(files)
    nf = extract_features(ds, backbone, work / "non_chest_dicom", progress=False)
    feature_flag = od.flag(nf.X)
    paths = nf.dataset.table["path"].astype(str).to_numpy()
    header = np.array([bool(dicom_header_flags(p)) for p in paths])
    hashes = nf.dataset.table["pixel_hash"].astype(str).to_numpy()
    first = np.unique(hashes, return_index=True)[1]
    out["non_chest_dicom"] = {
        "files_found": len(files), "decoded": int(len(nf)),
        "feature_flag": rate(feature_flag), "deployed_rule": rate(feature_flag | header),
        "distinct_images": int(len(first)),
        "distinct_feature_flag": rate(feature_flag[first]),
        "distinct_deployed_rule": rate((feature_flag | header)[first]),
        "copies_of_most_common": int(np.unique(hashes, return_counts=True)[1].max())}
    out["provenance"] = prov
    print(json.dumps({k: v for k, v in out.items() if k != "corrupted"}, indent=1))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    if lost:
        print("extraction lost images: " + "; ".join(lost), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
