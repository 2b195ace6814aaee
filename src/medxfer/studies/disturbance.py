"""Study 4, disturbance: the model trained on clean images of the training patients, tested
on held-out patients' images corrupted at severities 0-5 (medxfer.corruptions: Gaussian and
Poisson noise, blur, contrast, gamma, JPEG, downsampling, rotation).

Only the held-out images are re-extracted, each (corruption, severity) into its own
features folder under ``disturbance/features/`` (a normal resumable cache whose manifest
records the corruption), through a decoded-image cache so each image is decoded once.
Severity 0 goes through the same path without a corruption and must equal the clean
result. Per (corruption, severity): macro AUC with its patient-bootstrap CI, the paired
bootstrap drop from the clean result (same images), and the relative drop
(clean - corrupted) / (clean - 0.5), the share of the above-chance AUC that is lost.
The model is what `medxfer train` deploys (inner-CV choice, Platt calibration); macro F1
is at the per-finding thresholds it chose on its out-of-fold training predictions.
"""

from __future__ import annotations

import logging
from functools import partial

import numpy as np
import pandas as pd

from ..backbones import rebuild_backbone
from ..corruptions import CORRUPTIONS, SEVERITIES, Corruption, parameter
from ..errors import MedxferError, unknown_name_message
from ..experiments import CalibratedBottleneckCV, training_thresholds
from ..features import extract_features
from ..metrics import macro_auc, macro_f1, paired_bootstrap_auc
from ..splits import patient_holdout
from .common import (Ledger, Progress, StudyContext, finish, flat_ci, in_parallel, line_figure, with_ci,
                     write_table)
from .registry import register_study

log = logging.getLogger("medxfer.studies")


def parse_corruptions(spec: str) -> tuple[str, ...]:
    if spec.strip() == "all":
        return CORRUPTIONS
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    for n in names:
        if n not in CORRUPTIONS:
            raise MedxferError(unknown_name_message("corruption", n, CORRUPTIONS))
    if not names:
        raise MedxferError("--corruptions names no corruption; use 'all' or e.g. 'blur,jpeg'")
    return names


def test_rows(ctx: StudyContext) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows): a patient-wise holdout, the held-out side capped at
    ``disturbance_images`` images by dropping whole patients at random."""
    s = ctx.settings
    tr, te = patient_holdout(ctx.groups, s.test_fraction, Y=ctx.Y, seed=s.seed)
    if len(te) > s.disturbance_images:
        rng = np.random.default_rng(s.seed)
        g = ctx.groups[te]
        keep, n = [], 0
        for p in rng.permutation(np.unique(g)):
            rows = te[g == p]
            if n + len(rows) > s.disturbance_images:
                continue
            keep.append(rows)
            n += len(rows)
        if not keep:
            raise MedxferError(f"--disturbance-images {s.disturbance_images} is smaller than every "
                               "held-out patient's image count; raise it")
        te = np.sort(np.concatenate(keep))
    return tr, te


def score(Yt, P_clean, P, gt, metrics: dict, n_boot: int, seed: int) -> tuple[dict, dict]:
    """(metrics with CIs, paired bootstrap of the macro-AUC difference from the clean
    predictions) on the images the corrupted pass could read."""
    ok = ~np.isnan(P).any(axis=1)  # images the corrupted pass could not read are left out
    return (flat_ci(Yt[ok], P[ok], gt[ok], metrics, n_boot, seed),
            paired_bootstrap_auc(Yt[ok], P_clean[ok], P[ok], groups=gt[ok], n_boot=n_boot, seed=seed))


@register_study("disturbance", title="4. Image disturbances", order=4)
def run_disturbance(ctx: StudyContext, *, batch_size: int = 32, num_workers: int | None = None) -> dict:
    s = ctx.settings
    names = parse_corruptions(s.corruptions)
    X, Y, groups = ctx.X, ctx.Y, ctx.groups
    folder = ctx.folder("disturbance")
    tr, te = test_rows(ctx)
    ledger = Ledger(folder, ctx.fingerprint("test_fraction", "disturbance_images"))
    bar = Progress(ctx, "disturbance", 1 + 1 + len(names) * len(SEVERITIES))
    bar.stage(f"training on {len(tr)} images, {len(te)} held-out images x "
              f"{len(names)} corruptions x {len(SEVERITIES)} severities")

    # What is kept for a resume is the corrupted features (the slow part), under the ledger's
    # fingerprinted folder; the model is refitted (seconds) and every prediction, clean or
    # corrupted, comes from that one fit.
    est = CalibratedBottleneckCV(random_state=s.seed).fit(X[tr], Y[tr], groups=groups[tr])
    thr = np.asarray(training_thresholds(est))
    bar.step(what="model")
    P_clean = est.predict_proba(X[te])
    backbone = rebuild_backbone(ctx.features.manifest["backbone"])
    test_ds = ctx.features.dataset.subset(te)
    dtype = ctx.features.manifest.get("dtype", "float16")
    cache = ctx.out / "image_cache"
    x = ctx.extract
    engine = {} if x is None else {"engine": x.engine, "device": x.device}

    def predictions(corruption: Corruption | None, key: str):
        fs = extract_features(test_ds, backbone, ledger.folder / "features" / key,
                              batch_size=batch_size, num_workers=num_workers, dtype=dtype,
                              progress=False, image_cache=cache, corruption=corruption,
                              **engine)
        P = np.full((len(test_ds), Y.shape[1]), np.nan)
        ok = np.isin(test_ds.table["image_id"].to_numpy(), fs.dataset.table["image_id"].to_numpy())
        P[ok] = est.predict_proba(fs.X)
        return P

    metrics = {"macro_auc": macro_auc, "macro_f1": lambda Yb, Pb: macro_f1(Yb, Pb, thr)}
    Yt, gt = Y[te], groups[te]
    clean = with_ci(Yt, P_clean, gt, ctx, metrics)
    P0 = predictions(None, "severity0")
    bar.step(what="severity 0")
    rows = [{"corruption": "clean (cached features)", "severity": 0, "parameter": None, **clean,
             "drop": 0.0, "drop_lo": None, "drop_hi": None, "relative_drop": 0.0}]
    sev0 = score(Yt, P_clean, P0, gt, metrics, s.n_boot, s.seed)
    if sev0[0]["macro_auc"] is not None and clean["macro_auc"] is not None \
            and abs(sev0[0]["macro_auc"] - clean["macro_auc"]) > 1e-3:
        log.warning("severity 0 (clean images through the corruption path) gives macro AUC %.4f, "
                    "the cached clean features %.4f: the two extractions differ", sev0[0]["macro_auc"],
                    clean["macro_auc"])
    plan = [(name, sev) for name in names for sev in SEVERITIES]
    disturbed = []
    for name, sev in plan:  # the extraction (the slow part, kept in the ledger's folder)
        disturbed.append(predictions(Corruption(name, sev, s.seed), f"{name}-{sev}"))
        bar.step(what=f"{name} {sev}")
    # each setting's bootstraps (its CIs, its paired drop) in the run's workers
    scores = dict(zip(plan, in_parallel(ctx, [partial(score, Yt, P_clean, P, gt, metrics, s.n_boot, s.seed)
                                              for P in disturbed])))
    for name in names:
        for sev in (0,) + SEVERITIES:
            m, d = sev0 if sev == 0 else scores[name, sev]
            ci = d["ci95"] or [None, None]
            drop = None if d["difference"] is None else -d["difference"]
            rel = (None if drop is None or clean["macro_auc"] is None or clean["macro_auc"] <= 0.5
                   else drop / (clean["macro_auc"] - 0.5))
            rows.append({"corruption": name, "severity": sev, "parameter": parameter(name, sev), **m,
                         "drop": drop, "drop_lo": None if ci[1] is None else -ci[1],
                         "drop_hi": None if ci[0] is None else -ci[0], "relative_drop": rel})
    table = pd.DataFrame(rows)
    write_table(folder, "disturbance", table, ci_of=("macro_auc", "macro_f1", "drop"))
    plot = table[table["corruption"] != "clean (cached features)"]
    line_figure(folder, "disturbance_auc", plot[["corruption", "severity", "macro_auc", "macro_auc_lo",
                                             "macro_auc_hi"]],
                x="severity", y="macro_auc", group=None, panels="corruption",
                reference=clean["macro_auc"], ylabel="macro AUC (95% CI)",
                title=f"Macro AUC by severity on {len(te)} held-out images (dashed: clean)")
    return finish(ctx, "disturbance", {
        "train_images": int(len(tr)), "test_images": int(len(te)),
        "test_patients": int(len(np.unique(gt))), "clean": clean, "severity0": sev0[0],
        "rows": rows, "tables": ["disturbance.csv"], "figures": ["disturbance_auc.png"]}, bar.close())
