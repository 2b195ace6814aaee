"""Command line: a thin layer over the Python API. Every command has --help."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from . import __version__
from .errors import MedxferError

log = logging.getLogger("medxfer")


def _add_extract_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--workers", type=int, default=None,
                   help="image decoding processes (default: cores - 1, at least 1)")


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("CSV datasets (DATA is a .csv of image paths and labels)")
    g.add_argument("--path-column", default=None, help="image path column (default: path/image/filename)")
    g.add_argument("--patient-column", default=None, help="patient id column (default: patient_id/patient)")
    g.add_argument("--labels-column", default=None,
                   help="one column of delimited finding names instead of one 0/1 column per label")
    g.add_argument("--separator", default="|", help="delimiter of --labels-column (default |)")


def _read(a, path):
    from .data import read_dataset

    kw = {}
    if str(path).lower().endswith((".csv", ".csv.gz")):
        kw = {k: v for k, v in dict(path_column=a.path_column, patient_column=a.patient_column,
                                     labels_column=a.labels_column).items() if v is not None}
        if a.labels_column:
            kw["separator"] = a.separator
    ds = read_dataset(path, **kw)
    limit = getattr(a, "limit", None)
    if limit:
        import numpy as np

        ds = ds.subset(np.arange(min(limit, len(ds))))
    return ds


def _saved_line(what: str, out, metrics: dict) -> str:
    auc = metrics["validation_macro_auc"]
    return (f"{what} saved to {out}: best epoch {metrics['best_epoch']}, validation macro AUC "
            f"{'n/a' if auc is None else f'{auc:.3f}'} on {metrics['validation_images']} images")


def build_parser() -> argparse.ArgumentParser:
    from .model import IMBALANCE_OPTIONS
    from .pipeline import DEFAULT_PARAMS

    ap = argparse.ArgumentParser(prog="medxfer", description=(
        "Transfer learning for chest radiographs: frozen ImageNet features, a regularized "
        "bottleneck model, and evaluation with patient-level confidence intervals."))
    ap.add_argument("--version", action="version", version=f"medxfer {__version__}")
    ap.add_argument("--config", default=None, metavar="FILE.toml",
                    help="defaults per command from a TOML file, e.g. [train] l1 = 1e-4; options "
                         "given on the command line still win")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info lines")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run the main job on the bundled real ChestX-ray14 sample",
                       description="Extract features with a pretrained frozen backbone, train the "
                       "bottleneck model on a patient-wise training part, evaluate it beside a tuned "
                       "logistic regression on held-out patients, and write a report folder.")
    p.add_argument("--out", default="medxfer-demo", help="output folder (default medxfer-demo)")
    p.add_argument("--data", default=None, help="a ChestX-ray14 folder instead of the bundled sample")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for CIs")

    p = sub.add_parser("inspect", help="counts per finding, patients, views, age, sex, problems")
    p.add_argument("data", help="ChestX-ray14 folder, CSV file, class folder or DICOM folder")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_data_options(p)

    p = sub.add_parser("backbones", help="list backbones and whether their weights are here")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("extract", help="compute backbone features for a dataset (resumable)")
    p.add_argument("data", help="ChestX-ray14 folder, CSV file, class folder or DICOM folder")
    p.add_argument("--backbone", default="efficientnet_lite0", help="see `medxfer backbones`")
    p.add_argument("--out", required=True, help="features folder to write")
    p.add_argument("--weights", default=None, help="explicit weights file for the backbone")
    p.add_argument("--input-size", type=int, default=None, help="square input side in pixels")
    p.add_argument("--pooling", default="avg", choices=["avg", "multistage"])
    p.add_argument("--shard-size", type=int, default=1024, help="rows per shard (resume unit)")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    p.add_argument("--overwrite", action="store_true",
                   help="recompute when the folder holds features made differently")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--image-cache", default=None,
                   help="folder for decoded+resized images, reused by later backbones at this size")
    _add_extract_options(p)
    _add_data_options(p)

    p = sub.add_parser("train", help="train the bottleneck model on a features folder")
    p.add_argument("features", help="features folder from `medxfer extract`")
    p.add_argument("--out", required=True, help="model folder to write")
    d = DEFAULT_PARAMS
    p.add_argument("--bottleneck-dim", type=int, default=d["bottleneck_dim"],
                   help="k; 0 for no bottleneck (linear head)")
    p.add_argument("--l1", type=float, default=d["l1"], help="lambda1 on ||h||_1")
    p.add_argument("--l2", type=float, default=d["l2"], help="lambda2 on ||h||_F^2")
    p.add_argument("--alpha", type=float, default=d["alpha"], help="L2 penalty on W and V")
    p.add_argument("--ensemble", type=int, default=1, metavar="N",
                   help="average N members, each with its own patient-wise validation split")
    p.add_argument("--refit", action="store_true",
                   help="after early stopping, retrain on all rows for the chosen epochs")
    p.add_argument("--lr", type=float, default=d["lr"])
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"])
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--epochs", type=int, default=d["max_epochs"], help="maximum epochs")
    p.add_argument("--patience", type=int, default=d["patience"])
    p.add_argument("--imbalance", default=d["imbalance"], choices=IMBALANCE_OPTIONS,
                   help="pos_weight (default), class_balanced, focal, balanced_sampler or none")
    p.add_argument("--focal-gamma", type=float, default=2.0, help="gamma of --imbalance focal")
    p.add_argument("--cb-beta", type=float, default=0.999, help="beta of --imbalance class_balanced")
    p.add_argument("--threshold-method", default="f1", choices=["f1", "youden", "sensitivity"])
    p.add_argument("--target-sensitivity", type=float, default=0.9,
                   help="with --threshold-method sensitivity (default 0.9)")
    p.add_argument("--calibration", default="platt", choices=["none", "platt", "temperature"],
                   help="recalibrate probabilities on the validation patients (default platt)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the training summary as JSON")

    p = sub.add_parser("tune", help="train a grid of settings in one pass, keep the best",
                       description="Every setting of a grid (k, lambda1=lambda2, alpha, imbalance) "
                       "trained at once over the cached features; the best by patient-wise "
                       "validation macro AUC is calibrated, thresholded and saved.")
    p.add_argument("features", help="features folder")
    p.add_argument("--out", required=True, help="model folder to write (with tune.json)")
    p.add_argument("--grid", default=None, help="JSON file with a list of parameter dicts")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--patience", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("finetune", help="fine-tune the last backbone blocks with the head, from images",
                       description="Partial fine-tuning: unfreeze the last N backbone blocks and "
                       "train them end to end with the bottleneck head (lower backbone learning "
                       "rate, light radiograph augmentation, early stopping on patient-wise "
                       "validation). Uses the GPU when one is present.")
    p.add_argument("data", help="dataset (ChestX-ray14 folder or CSV)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--unfreeze", type=int, default=2, help="number of last blocks to train")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--lr-backbone", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--hflip", action="store_true", help="also flip horizontally (off: anatomy is not symmetric)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    _add_data_options(p)

    p = sub.add_parser("cv", help="patient-wise K-fold CV of the model beside its baselines",
                       description="Logistic regression, linear head, bottleneck without and with "
                       "regularization (and with --tune, nested selection) on the same folds; "
                       "pooled out-of-fold metrics with patient-bootstrap CIs, per-fold spread, "
                       "paired differences.")
    p.add_argument("features", help="features folder")
    p.add_argument("--out", required=True, help="folder for cv.json and cv.md")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--tune", action="store_true", help="add the nested-CV tuned bottleneck")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("evaluate", help="metrics with CIs and a report folder")
    p.add_argument("model", help="model folder from `medxfer train`")
    p.add_argument("data", help="features folder, or a dataset folder (extracted with the "
                                "model's own backbone and preprocessing)")
    p.add_argument("--out", required=True, help="report folder to write")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    _add_extract_options(p)

    p = sub.add_parser("predict", help="per-finding probabilities for image files or folders")
    p.add_argument("model", help="model folder")
    p.add_argument("images", nargs="+", help="PNG, JPEG or DICOM files, or folders of them")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--cam", default=None, metavar="DIR",
                   help="also save Grad-CAM overlays of the predicted findings into DIR")
    return ap


def _cmd_demo(a) -> int:
    from .pipeline import run_demo

    run_demo(a.out, data=a.data, backbone=a.backbone, limit=a.limit, seed=a.seed,
             n_boot=a.n_boot, progress=not a.quiet)
    return 0


def _cmd_inspect(a) -> int:
    ds = _read(a, a.data)
    s = ds.summary()
    s["problem_list"] = [p.as_dict() for p in ds.problems]
    if a.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"{s['name']}: {s['images']} images, {s['patients']} patients")
    width = max(len(n) for n in s["findings"]) if s["findings"] else 10
    for name, n in s["findings"].items():
        print(f"  {name:<{width}}  {n:6d}  ({100 * n / max(1, s['images']):.1f}%)")
    print(f"  {'No Finding':<{width}}  {s['no_finding']:6d}")
    for key in ("view", "sex"):
        if key in s:
            print(f"{key}: " + ", ".join(f"{k} {v}" for k, v in s[key].items()))
    if "age" in s:
        ag = s["age"]
        print(f"age: min {ag['min']}, median {ag['median']}, max {ag['max']}, missing {ag['missing']}")
    for p in ds.problems[:10]:
        print(f"problem: {p.kind}: {p.item}: {p.detail}")
    if len(ds.problems) > 10:
        print(f"... and {len(ds.problems) - 10} more problems")
    return 0


def _cmd_backbones(a) -> int:
    from .backbones import get_backbone_config, list_backbones

    rows = [get_backbone_config(n).describe() for n in list_backbones()]
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        state = "available" if r["weights_available"] else "weights missing"
        print(f"{r['name']:<20} {r['feature_dim']:5d}-d  {r['input_size']}px  {state:<15} "
              f"{r['weights']} [{r['license']}]")
    return 0


def _cmd_extract(a) -> int:
    from .backbones import create_backbone
    from .features import extract_features

    ds = _read(a, a.data)
    bb = create_backbone(a.backbone, weights=a.weights, input_size=a.input_size, pooling=a.pooling)
    fs = extract_features(ds, bb, a.out, batch_size=a.batch_size, num_workers=a.workers,
                          shard_size=a.shard_size, dtype=a.dtype, overwrite=a.overwrite,
                          progress=not a.quiet, image_cache=a.image_cache)
    print(f"features: {fs.features.shape[0]} x {fs.features.shape[1]} ({a.dtype}) in {a.out}"
          + (f"; {len(fs.skipped)} unreadable image(s) left out" if fs.skipped else ""))
    return 0


def _cmd_train(a) -> int:
    from .features import FeatureSet
    from .pipeline import train_from_features

    fs = FeatureSet.load(a.features)
    params = dict(bottleneck_dim=a.bottleneck_dim or None, l1=a.l1, l2=a.l2, alpha=a.alpha,
                  refit=a.refit, n_ensemble=a.ensemble, lr=a.lr,
                  weight_decay=a.weight_decay, batch_size=a.batch_size, max_epochs=a.epochs,
                  patience=a.patience, imbalance=a.imbalance, focal_gamma=a.focal_gamma,
                  cb_beta=a.cb_beta)
    model = train_from_features(fs, params=params, seed=a.seed, threshold_method=a.threshold_method,
                                calibration=a.calibration, target_sensitivity=a.target_sensitivity)
    model.save(a.out)
    out = {"model": str(a.out), "train_images": len(fs)} | model.metrics
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(_saved_line("model", a.out, out))
    return 0


def _cmd_tune(a) -> int:
    from .features import FeatureSet
    from .pipeline import tune_from_features

    fs = FeatureSet.load(a.features)
    grid = json.loads(Path(a.grid).read_text()) if a.grid else None
    model, table = tune_from_features(fs, grid=grid, seed=a.seed, batch_size=a.batch_size,
                                      max_epochs=a.epochs, patience=a.patience)
    model.save(a.out)
    (Path(a.out) / "tune.json").write_text(json.dumps(table, indent=2))
    best = max(table, key=lambda r: r["val_macro_auc"])
    if a.json:
        print(json.dumps({"model": a.out, "best": best, "settings": len(table)}, indent=2))
    else:
        print(f"{len(table)} settings trained; best validation macro AUC {best['val_macro_auc']:.3f} "
              f"with {({k: v for k, v in best.items() if k not in ('val_macro_auc', 'best_epoch')})}; "
              f"model saved to {a.out} (all settings in tune.json)")
    return 0


def _cmd_finetune(a) -> int:
    from .finetune import finetune

    ds = _read(a, a.data)
    model = finetune(ds, backbone=a.backbone, unfreeze=a.unfreeze, epochs=a.epochs,
                     patience=a.patience, lr_backbone=a.lr_backbone, batch_size=a.batch_size,
                     augment=not a.no_augment, hflip=a.hflip, max_steps=a.max_steps, seed=a.seed,
                     device=a.device, progress=not a.quiet)
    model.save(a.out)
    print(_saved_line("fine-tuned model", a.out, model.metrics))
    return 0


def _cmd_cv(a) -> int:
    import numpy as np

    from .experiments import cross_validate, cv_table
    from .features import FeatureSet

    fs = FeatureSet.load(a.features)
    res = cross_validate(fs, n_splits=a.folds, seed=a.seed, tune=a.tune, n_boot=a.n_boot,
                         progress=(lambda m: None) if a.quiet or a.json else
                         (lambda m: print(m, file=sys.stderr)))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    oof = res.pop("oof")
    np.savez(out / "oof_predictions.npz", **oof)
    (out / "cv.json").write_text(json.dumps(res, indent=2, default=str))
    table = cv_table(res)
    (out / "cv.md").write_text(f"# {a.folds}-fold patient-wise CV on {fs.dataset.name}\n\n{table}\n")
    if a.json:
        print(json.dumps({n: {k: v for k, v in m.items() if k != "pooled"}
                          for n, m in res["models"].items()}, indent=2))
    else:
        print(table)
    return 0


def _cmd_evaluate(a) -> int:
    from .model_io import TrainedModel
    from .pipeline import evaluate_model, features_for_model

    model = TrainedModel.load(a.model)
    out = Path(a.out)
    fs = features_for_model(model, a.data, cache=out / "features", batch_size=a.batch_size,
                            num_workers=a.workers, progress=not a.quiet)
    m = evaluate_model(model, fs, out, n_boot=a.n_boot, seed=a.seed,
                       config={"model": str(a.model), "data": str(a.data)})
    if a.json:
        print(json.dumps(m, indent=2, default=str))
        return 0
    ci = m["macro_auc_ci95"]
    print(f"macro AUC {m['macro_auc']:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f}) on {m['n_images']} "
          f"images of {m['n_patients']} patients; report: {m['report']}" if ci else
          f"macro AUC {m['macro_auc']}; report: {m['report']}")
    return 0


def _cmd_predict(a) -> int:
    from .model_io import TrainedModel
    from .pipeline import predict_paths

    model = TrainedModel.load(a.model)
    with tempfile.TemporaryDirectory(prefix="medxfer-predict-") as tmp:
        table, problems = predict_paths(model, a.images, cache=Path(tmp) / "features")
    overlays = []
    if a.cam and len(table):
        from .cam import cam_for_files

        overlays = cam_for_files(model, table["path"].tolist(), a.cam,
                                 probabilities=table[model.label_names].to_numpy())
    if a.json:
        rows = []
        for r in table.to_dict("records"):
            rows.append({"image": r["path"], "probabilities": {n: r[n] for n in model.label_names},
                         "findings": [] if r["findings"] == "none above threshold"
                         else r["findings"].split("|")})
        print(json.dumps({"predictions": rows, "failed": [p.as_dict() for p in problems],
                          "cam_overlays": [str(o) for o in overlays]}, indent=2))
    else:
        import pandas as pd

        with pd.option_context("display.max_columns", None, "display.width", 200):
            if len(table):
                print(table.drop(columns=["path"]).to_string(index=False))
        for p in problems:
            print(f"could not read {p.item}: {p.detail}", file=sys.stderr)
        if overlays:
            print(f"{len(overlays)} Grad-CAM overlay(s) in {a.cam}")
    return 0 if len(table) or not problems else 1


_COMMANDS = {"demo": _cmd_demo, "inspect": _cmd_inspect, "backbones": _cmd_backbones,
             "extract": _cmd_extract, "train": _cmd_train, "evaluate": _cmd_evaluate, "cv": _cmd_cv,
             "finetune": _cmd_finetune, "tune": _cmd_tune,
             "predict": _cmd_predict}


def _apply_config(parser: argparse.ArgumentParser, path: str) -> None:
    """Set each command's defaults from the TOML file's section of the same name."""
    import tomllib

    try:
        doc = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise MedxferError(f"config file '{path}' does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise MedxferError(f"config file '{path}' is not valid TOML: {exc}") from exc
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for section, values in doc.items():
        if section not in subs or not isinstance(values, dict):
            raise MedxferError(f"config file '{path}': unknown section [{section}]; sections are "
                               f"command names: {', '.join(sorted(subs))}")
        known = {a.dest for a in subs[section]._actions}
        for key in values:
            if key.replace("-", "_") not in known:
                raise MedxferError(f"config file '{path}': [{section}] has no option '{key}'; "
                                   f"see `medxfer {section} --help`")
        subs[section].set_defaults(**{k.replace("-", "_"): v for k, v in values.items()})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    config = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"), None)
    try:
        if config:
            _apply_config(parser, config)
    except MedxferError as exc:
        print(f"medxfer: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="medxfer: %(message)s", stream=sys.stderr, force=True)
    try:
        return _COMMANDS[args.command](args)
    except MedxferError as exc:
        print(f"medxfer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medxfer: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
