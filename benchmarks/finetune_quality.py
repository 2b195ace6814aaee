"""Partial fine-tuning under nested patient-wise CV, beside frozen-feature models on the same folds.

    python benchmarks/finetune_quality.py [DATA] [--models finetune,logistic_regression]
        [--extra-oof OTHER.npz ...] [--out DIR]
    python benchmarks/finetune_quality.py --resized-copy DST [DATA]

Outer folds: ``patient_kfold(patients, 5, Y, seed 0)``, the folds of
benchmarks/model_quality.py on the same rows. Per outer fold every model sees only the
training part and makes its choices inside it:
  finetune            : `medxfer.finetune.finetune` with its defaults (last 2 blocks, light
                        radiograph augmentation, early stopping, calibration and thresholds on a
                        patient-wise validation share of the training part); the test part is
                        then extracted with the fine-tuned backbone and scored.
  logistic_regression : TunedLogisticRegression (C by inner patient-wise CV) on frozen features
  medxfer_train       : BottleneckCV + Platt on its out-of-fold predictions, what `medxfer train`
                        deploys, on frozen features (slow on 2 cores: minutes)
Writes oof.npz (every model's pooled out-of-fold probabilities, Y, patients) and result.json
(pooled macro AUC with patient-bootstrap CIs, per-fold AUCs, paired differences to the logistic
regression). ``--extra-oof`` adds models from an earlier oof.npz of the same rows, so a GPU run
of the fine-tuning can be paired with a CPU run of the frozen models.

``--resized-copy DST`` writes DATA's images resized to the fine-tuning backbone's input (8-bit PNG,
the same resize medxfer applies) with the table, so the run can travel where the 166 MB of
full-resolution PNGs cannot (medxfer leaves an image already at its input size untouched).
Skips politely when DATA is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/nih14-sample"


def resized_copy(src: Path, dst: Path) -> None:
    import shutil

    from PIL import Image

    from medxfer.backbones import create_backbone
    from medxfer.images import load_image
    from medxfer.settings import DEFAULT_FINETUNE_BACKBONE

    pp = create_backbone(DEFAULT_FINETUNE_BACKBONE).preprocessing
    (dst / "images").mkdir(parents=True, exist_ok=True)
    for p in sorted((src / "images").glob("*.png")):
        g = pp.resize(load_image(p))
        Image.fromarray(np.round(np.clip(g, 0, 1) * 255).astype(np.uint8)).save(dst / "images" / p.name)
    for t in src.glob("*.csv*"):
        shutil.copy(t, dst / t.name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", default=str(DEFAULT_DATA))
    ap.add_argument("--models", default="finetune,logistic_regression")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--extra-oof", nargs="*", default=[])
    ap.add_argument("--out", default=None, help="folder for oof.npz and result.json")
    ap.add_argument("--resized-copy", default=None, metavar="DST")
    ap.add_argument("--max-steps", type=int, default=None, help="fine-tuning steps cap (dry runs)")
    ap.add_argument("--backbone", default=None, help="default: the fine-tuning default, efficientnet_lite2")
    a = ap.parse_args(argv)
    if not Path(a.data).is_dir():
        print(f"skipped: data folder {a.data} not present")
        return 0
    if a.resized_copy:
        resized_copy(Path(a.data), Path(a.resized_copy))
        return 0
    warnings.simplefilter("ignore")
    from medxfer.baselines import TunedLogisticRegression
    from medxfer.data import read_dataset
    from medxfer.experiments import default_models
    from medxfer.features import extract_with_settings
    from medxfer.finetune import finetune
    from medxfer.metrics import evaluate_predictions, macro_auc, paired_bootstrap_auc
    from medxfer.pipeline import features_for_model
    from medxfer.settings import DEFAULT_FINETUNE_BACKBONE, ExtractSettings, FinetuneSettings
    from medxfer.splits import patient_kfold

    backbone = a.backbone or DEFAULT_FINETUNE_BACKBONE
    work = Path(a.out or tempfile.mkdtemp(prefix="medxfer-ftq-"))
    work.mkdir(parents=True, exist_ok=True)
    ds = read_dataset(a.data)
    Y, groups = ds.labels.astype(float), ds.patient_ids
    folds = patient_kfold(groups, a.folds, Y=Y, seed=0)
    names = [m for m in a.models.split(",") if m]
    oof = {m: np.full(Y.shape, np.nan) for m in names}
    per_fold = {m: [] for m in names}
    seconds = {m: 0.0 for m in names}
    frozen = [m for m in names if m != "finetune"]
    fs = None
    if frozen:
        fs = extract_with_settings(ds, ExtractSettings(backbone=backbone), work / "features", progress=False)
        if len(fs) != len(ds):
            raise SystemExit("some images did not decode; the folds need every row")
    makers = default_models(tune=True) | {
        "logistic_regression": lambda seed: TunedLogisticRegression(random_state=seed)}
    for k, (tr, te) in enumerate(folds):
        for m in names:
            t = time.time()
            if m == "finetune":
                st = FinetuneSettings(backbone=backbone, max_steps=a.max_steps)
                model = finetune(ds.subset(tr), settings=st, seed=0, progress=False)
                tfs = features_for_model(model, ds.subset(te), cache=work / f"ft-fold{k + 1}", progress=False)
                P = model.predict_proba(tfs.X)
            else:
                est = makers[m](0).fit(fs.X[tr], Y[tr], groups=groups[tr])
                P = est.predict_proba(fs.X[te])
            oof[m][te] = P
            per_fold[m].append(macro_auc(Y[te], P))
            seconds[m] += time.time() - t
            print(f"fold {k + 1}/{len(folds)} {m}: {per_fold[m][-1]:.3f} ({time.time() - t:.0f} s)",
                  file=sys.stderr, flush=True)
    for f in a.extra_oof:
        z = np.load(f, allow_pickle=False)
        if not np.array_equal(z["Y"], Y) or not np.array_equal(z["groups"].astype(str), groups.astype(str)):
            raise SystemExit(f"{f} holds other rows than {a.data}")
        for m in z.files:
            if m.startswith("oof_") and m[4:] not in oof:
                oof[m[4:]] = z[m]
                per_fold[m[4:]] = [macro_auc(Y[te], z[m][te]) for _, te in folds]
    np.savez(work / "oof.npz", Y=Y, groups=groups.astype(str), **{f"oof_{m}": v for m, v in oof.items()})
    res = {"data": str(a.data), "images": len(Y), "backbone": backbone, "models": {}, "paired_vs_logistic_regression": {}}
    for m, P in oof.items():
        pooled = evaluate_predictions(Y, P, list(ds.label_names), groups=groups, n_boot=a.n_boot, seed=0)
        res["models"][m] = {"pooled_macro_auc": pooled["macro_auc"], "ci95": pooled["macro_auc_ci95"],
                            "per_fold": per_fold[m], "mean": float(np.mean(per_fold[m])),
                            "sd": float(np.std(per_fold[m])), "seconds": round(seconds.get(m, 0.0), 1)}
        if m != "logistic_regression" and "logistic_regression" in oof:
            res["paired_vs_logistic_regression"][m] = paired_bootstrap_auc(
                Y, oof["logistic_regression"], P, groups=groups, n_boot=a.n_boot, seed=0)
    (work / "result.json").write_text(json.dumps(res, indent=2, default=str))
    print("| model | pooled OOF macro AUC (95% CI) | per fold mean ± SD | vs LR (95% CI) |\n|---|---|---|---|")
    for m, r in res["models"].items():
        d = res["paired_vs_logistic_regression"].get(m)
        dd = f"{d['difference']:+.3f} ({d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f})" if d else "—"
        print(f"| {m} | {r['pooled_macro_auc']:.3f} ({r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}) | "
              f"{r['mean']:.3f} ± {r['sd']:.3f} | {dd} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
