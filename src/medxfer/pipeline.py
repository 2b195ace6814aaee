"""The stages joined up: train on features, evaluate, predict, and the demo."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .backbones import rebuild_backbone
from .baselines import TunedLogisticRegression
from .card import write_model_card
from .data import (Dataset, bundled_sample, harmonised_label_index, read_dataset, read_image_paths,
                   shared_findings)
from .errors import DataError
from .features import (FeatureSet, extract_features, extract_with_settings, is_features_folder,
                       read_manifest)
from .head import BottleneckClassifier, BottleneckCV, fit_grid
from .metrics import evaluate_predictions, paired_bootstrap_auc, subgroup_metrics
from .model_io import TrainedModel, package
from .records import predict_records
from .report import write_report
from .settings import (DEFAULT_BACKBONE, DEFAULT_CV_GRID, DEMO_CS, TUNE_GRID, ExtractSettings,
                       HeadSettings, PackageSettings, SelectionSettings, TuneSettings, defaults,
                       head_params)
from .splits import check_no_patient_overlap, patient_holdout

log = logging.getLogger(__name__)


def _features_info(fs: FeatureSet) -> dict:
    """What the model folder records of its training features: their source, whether the
    patient IDs were real, the uncertain-label policy, and the pixel hashes of the training
    images (so `evaluate` finds the same image under another name)."""
    m = fs.manifest
    info = {k: m.get(k) for k in ("dataset_name", "dataset_fingerprint", "n_rows", "dtype",
                                  "medxfer_version")}
    info["n_rows"] = len(fs)  # the rows trained on (a subset of the folder's, in the demo)
    info["features_folder_rows"] = m.get("n_rows")
    info |= {"patient_ids_from": fs.dataset.patient_ids_from,
             "uncertain_policy": fs.dataset.uncertain_policy}
    if "pixel_hash" in fs.dataset.table.columns:
        info["training_pixel_hashes"] = sorted({h for h in fs.dataset.table["pixel_hash"].astype(str)
                                                if h and h != "nan"})
    return info


#: What a model's validation metrics are, in the model card's words.
OUT_OF_FOLD = ("out-of-fold predictions of the training images: each image predicted by the fold "
               "model that did not see its patient (the deployed model averages the fold "
               "models); the width and penalty were chosen and the calibration and thresholds "
               "fitted on these same predictions, so they are somewhat optimistic")
VALIDATION_PART = ("predictions of the validation part (patients held out from training, used "
                   "for early stopping, calibration and thresholds)")


def warn_derived_patients(ds: Dataset, command: str) -> bool:
    """One warning line when the patient IDs are stand-ins (file names), not metadata:
    patient-wise splits and the training-patient check then cannot see a patient's other
    images. True when they are stand-ins."""
    source = ds.patient_ids_from
    if source in ("metadata", "unknown"):
        return False
    log.warning("%s: the patient IDs of %s come from %s, not from metadata: images of one "
                "patient may fall on both sides of a split, and overlap with training patients "
                "is unchecked; give a patient column (--patient-column) where you have one",
                command, ds.name, source.replace("_", " "))
    return True


#: Fewer training images make no model: the out-of-distribution score needs 10.
MIN_TRAIN_IMAGES = 10


def check_trainable(fs: FeatureSet, *, widths, folds: int, multiclass: bool = False) -> None:
    """Refuse, before any training, data that training cannot use: a width k wider than the
    features, fewer patients than folds, no finding with 2 positive and 2 negative images
    (an AUC needs both). Findings with fewer positives than folds are named in a warning:
    their AUC is undefined in some folds and the choice rests on the others."""
    n, d = fs.features.shape
    wide = sorted({k for k in widths if k is not None and k > d})
    if wide:
        raise DataError(f"bottleneck width k={wide[0]} is wider than the {d}-d features: k must "
                        f"be at most {d} (0 on the command line for a linear head)")
    if n < MIN_TRAIN_IMAGES:
        raise DataError(f"training needs at least {MIN_TRAIN_IMAGES} images (the out-of-"
                        f"distribution score every model carries is fitted on them); these "
                        f"features hold {n}")
    patients = len(np.unique(fs.dataset.patient_ids))
    if patients < folds:
        raise DataError(f"training needs at least {folds} patients for its {folds}-fold patient-"
                        f"wise split; these features hold {n} images of {patients} patient(s)")
    if multiclass:
        return
    Y = fs.Y
    pos, neg = (Y == 1).sum(0), (Y == 0).sum(0)
    names = fs.dataset.label_names
    if not ((pos >= 2) & (neg >= 2)).any():
        raise DataError(
            f"no finding has 2 positive and 2 negative images, which an AUC needs, among these "
            f"{n} images (positive/negative: " + ", ".join(
                f"{nm} {p}/{q}" for nm, p, q in zip(names, pos, neg)) + "); train on more images")
    few = [f"{nm} {p}" for nm, p in zip(names, pos) if p < folds]
    if few:
        log.warning("%d finding(s) have fewer positive images than the %d folds (%s): their AUC "
                    "is undefined in some folds", len(few), folds, ", ".join(few))


def train_from_features(fs: FeatureSet, *, head: HeadSettings | dict | None = None,
                        selection: SelectionSettings = SelectionSettings(),
                        grid: list[dict] | None = None,
                        packaging: PackageSettings = PackageSettings(), progress=None) -> TrainedModel:
    """Fit the bottleneck model on a FeatureSet and package it.

    With ``selection.select`` (the default, multi-label data): every setting of ``grid``
    (default :data:`medxfer.head.DEFAULT_CV_GRID`, or the JSON file ``selection.grid``),
    on top of ``head``, is trained full-batch on the training parts of
    ``selection.inner_folds`` patient-wise folds; the setting with the best pooled
    out-of-fold macro AUC is kept and its fold models are averaged
    (:class:`medxfer.head.BottleneckCV`). Calibration and thresholds are fitted on the
    out-of-fold predictions: every training image predicted by the member that did not see
    its patient. Without selection (or for single-label data) ``head`` is trained as given
    and calibrated on its patient-wise validation part.
    """
    if fs.dataset.labels.shape[1] == 0:
        raise DataError("these features carry no labels; train needs a labelled dataset")
    params = head_params(head)
    multiclass = fs.dataset.task == "multiclass"
    if params["refit"]:
        raise DataError("refit retrains on the validation patients after early stopping, so "
                        "calibration and thresholds would describe another model; use the "
                        "default selection (fold models averaged, out-of-fold calibration)")
    if selection.select and not multiclass and params["n_ensemble"] > 1:
        raise DataError("--ensemble applies without selection (--no-select); with selection "
                        "the fold models are the ensemble")
    config: dict = {"params": params, "selection": asdict(selection)}
    metrics: dict = {}
    select = selection.select and not multiclass
    if select:
        grid = grid if grid is not None else read_grid(selection.grid)
    check_trainable(fs, widths=[g.get("bottleneck_dim", params["bottleneck_dim"])
                                for g in grid or DEFAULT_CV_GRID] if select else [params["bottleneck_dim"]],
                    folds=selection.inner_folds if select else 2, multiclass=multiclass)
    if select:
        cv = BottleneckCV(grid, params=params, n_splits=selection.inner_folds,
                          n_repeats=selection.inner_repeats, holdout_from=selection.holdout_from,
                          random_state=params["random_state"])
        # the stored features (float16) as they are: no float32 copy of the whole matrix
        cv.fit(fs.features, fs.Y, groups=fs.dataset.patient_ids, progress=progress)
        est = cv.best_estimator_
        _, Yv, Pv = cv.validation_
        keys = sorted({k for g in (grid or DEFAULT_CV_GRID) for k in g})
        chosen = cv.best_params_ if isinstance(cv.best_params_, list) else [cv.best_params_]
        config |= {"chosen": [{k: c[k] for k in keys} for c in chosen]}
        metrics = {"selection": cv.cv_results_, "selected_from": len(cv.cv_results_),
                   "selected_by": cv.selection_, "members": len(est.members_)}
    else:
        est = BottleneckClassifier(**params)
        y = fs.Y.argmax(1) if multiclass else fs.Y
        est.fit(fs.X, y, groups=fs.dataset.patient_ids)
        if est.validation_ is None:
            raise DataError("training needs a validation part for calibration and thresholds; "
                            "use validation_fraction > 0 or selection")
        _, Yv, Pv = est.validation_
        if multiclass and len(est.classes_) != len(fs.dataset.label_names):
            raise DataError(f"every class needs training images; the training rows hold only "
                            f"{len(est.classes_)} of {len(fs.dataset.label_names)} classes")
        if multiclass:  # one-vs-rest view of the classes, as the metrics expect
            Yv = np.eye(len(fs.dataset.label_names), dtype=np.float32)[Yv]
    if select and cv.selection_ == "inner_cv":
        index, what = np.arange(len(fs)), OUT_OF_FOLD
    elif select:
        index, what = cv.validation_index_, VALIDATION_PART
    else:
        index, what = getattr(est, "validation_index_", None), VALIDATION_PART
    return package(est, fs.dataset.label_names, Yv, Pv, backbone=fs.manifest["backbone"],
                   features=_features_info(fs), settings=packaging, config=config, metrics=metrics,
                   training_patients=fs.dataset.patient_ids, train_features=fs.features,
                   dataset=fs.dataset, validation_index=index, validation_what=what)


def read_grid(path: str | Path | None) -> list[dict] | None:
    """A grid of parameter dicts from a JSON file (None: the default grid)."""
    if path is None:
        return None
    try:
        grid = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"grid file '{path}' is not a readable JSON file: {exc}") from exc
    if not isinstance(grid, list) or not grid or not all(isinstance(g, dict) for g in grid):
        raise DataError(f"grid file '{path}' must hold a non-empty JSON list of parameter dicts, "
                        'e.g. [{"bottleneck_dim": 8, "alpha": 0.1}]')
    known = set(defaults(HeadSettings))
    for g in grid:
        unknown = sorted(set(g) - known)
        if unknown:
            raise DataError(f"grid file '{path}': unknown parameter(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(known))}")
    return grid


_UNSET = object()


def restrict_grid(grid: list[dict] | None, *, bottleneck_dim=_UNSET, alpha=_UNSET) -> list[dict]:
    """The selection grid (default DEFAULT_CV_GRID) restricted to a width and/or an alpha
    given by the user: the grid's settings with that value, or, where the grid has none,
    its settings of the same kind (bottleneck or linear head) with the value put in.
    Both given: that one setting."""
    grid = [dict(g) for g in (grid or DEFAULT_CV_GRID)]
    for key, value in (("bottleneck_dim", bottleneck_dim), ("alpha", alpha)):
        if value is _UNSET:
            continue
        same = [g for g in grid if g.get(key) == value]
        if not same:
            kind = [g for g in grid if key != "bottleneck_dim"
                    or (g.get("bottleneck_dim") is None) == (value is None)] or grid
            same = [g | {key: value} for g in kind]
        grid = [g for i, g in enumerate(same) if g not in same[:i]]
    return grid


def tune_from_features(fs: FeatureSet, *, grid: list[dict] | None = None, seed: int = 0,
                       tune: TuneSettings = TuneSettings(),
                       packaging: PackageSettings = PackageSettings(), progress=None):
    """Train every grid setting in one pass (:func:`medxfer.head.fit_grid`), keep the one
    with the best patient-wise validation macro AUC, and calibrate and threshold it on that
    validation part.

    Returns (TrainedModel, table of every setting with its validation macro AUC). The chosen
    setting's validation AUC is optimistic (it won a selection on that data): quote test or
    nested-CV numbers, not this one.
    """
    grid = list(grid or TUNE_GRID)
    ests = fit_grid(fs.X, fs.Y, grid, groups=fs.dataset.patient_ids, random_state=seed,
                    progress=progress, **asdict(tune))
    table = [g | {"val_macro_auc": e.best_score_, "best_epoch": e.best_epoch_} for g, e in zip(grid, ests)]
    best = int(np.nanargmax([e.best_score_ for e in ests]))
    est = ests[best]
    _, Yv, Pv = est.validation_
    model = package(est, fs.dataset.label_names, Yv, Pv, backbone=fs.manifest["backbone"],
                    features=_features_info(fs), settings=packaging,
                    config={"params": est.get_params(), "grid": grid, "seed": seed},
                    metrics={"selected_from": len(grid)}, training_patients=fs.dataset.patient_ids,
                    train_features=fs.X, dataset=fs.dataset, validation_index=est.validation_index_,
                    validation_what=VALIDATION_PART + "; the setting was chosen on them too, so "
                                    "they are optimistic")
    return model, table


def save_tuned(model: TrainedModel, table: list[dict], out: str | Path) -> Path:
    """The chosen model's folder, with every setting's validation score in tune.json."""
    out = model.save(out)
    (out / "tune.json").write_text(json.dumps(table, indent=2))
    return out


def duplicate_images(model: TrainedModel, fs: FeatureSet) -> dict:
    """Evaluation images whose pixels equal a training image's (from the pixel hashes the
    extraction records and the model folder keeps): {"images", "of_images", "examples"}, or
    {"unchecked": why} when either side has no hashes."""
    known = model.features.get("training_pixel_hashes")
    t = fs.dataset.table
    if not known or "pixel_hash" not in t.columns:
        return {"unchecked": "pixel hashes are missing (a model or features folder from an "
                             "earlier medxfer)"}
    hit = t["pixel_hash"].astype(str).isin(set(known)).to_numpy()
    return {"images": int(hit.sum()), "of_images": int(len(t)),
            "examples": t.loc[hit, "image_id"].astype(str).head(5).tolist()}


def align_labels(ds: Dataset, names: list[str]) -> np.ndarray:
    """Labels of ``ds`` in the order ``names``; error naming findings it lacks."""
    lookup = harmonised_label_index(ds, names)
    missing = [n for n in names if n not in lookup]
    if missing:
        raise DataError(f"the evaluation data has no labels for {', '.join(missing)}, which the "
                        "model predicts; relabel the data or evaluate a model trained on its findings")
    return ds.labels[:, [lookup[n] for n in names]]


def features_for_model(model: TrainedModel, source: str | Path | Dataset, *, cache: Path,
                       batch_size: int = ExtractSettings.batch_size,
                       num_workers: int | None = ExtractSettings.workers,
                       progress: bool = True, check=None, log_skipped: bool = True,
                       engine: str = ExtractSettings.engine,
                       device: str = ExtractSettings.device) -> FeatureSet:
    """Features of ``source`` as the model needs them.

    A features folder is checked against the model's backbone and preprocessing; a dataset
    folder (or Dataset) is extracted with the model's own backbone into ``cache``, after
    ``check(dataset)`` (e.g. the training-patient guard) has passed.
    """
    if isinstance(source, (str, Path)) and is_features_folder(source):
        model.check_features(read_manifest(source), where=f"features in '{source}'")
        return FeatureSet.load(source)
    ds = source if isinstance(source, Dataset) else read_dataset(source)
    if check is not None:
        check(ds)
    backbone = rebuild_backbone(model.backbone, model.backbone_state)
    # one folder per set of rows and labels: a second label file for the same report
    # folder gets its own features instead of a refusal as stale
    cache = Path(cache) / ds.fingerprint()[:12]
    fs = extract_features(ds, backbone, cache, batch_size=batch_size, num_workers=num_workers,
                          progress=progress, log_skipped=log_skipped, engine=engine, device=device,
                          dtype=model.feature_dtype)
    model.check_features(fs.manifest)
    return fs


def training_patient_guard(model: TrainedModel, patient_ids, allow: bool = False, *,
                           patient_ids_from: str = "metadata", quiet: bool = False):
    """(overlap counts or None, sentence describing the overlap or None). Raises DataError
    when images of training patients are present and ``allow`` is not set."""
    if patient_ids_from not in ("metadata", "unknown") or \
            model.features.get("patient_ids_from") not in (None, "metadata", "unknown"):
        where = ("evaluation" if patient_ids_from not in ("metadata", "unknown") else "training")
        reason = (f"the {where} data's patient IDs are stand-ins (from file names), so "
                  "whether these images belong to training patients is unchecked")
        if not quiet:
            log.warning("%s", reason)
        return {"unchecked": reason}, None
    overlap = model.training_overlap(patient_ids)
    if overlap is None:
        log.warning("this model records no training patients (made by an earlier medxfer); "
                    "whether the evaluation images overlap its training patients is unchecked")
        return None, None
    if not overlap["images"]:
        return overlap, None
    what = (f"{overlap['images']} of {overlap['of_images']} evaluation images "
            f"({overlap['patients']} of {overlap['of_patients']} patients) belong to patients "
            "the model was trained on")
    if not allow:
        raise DataError(f"{what}: their AUC would be inflated. Evaluate on patients the model "
                        "never saw, or pass --allow-training-patients to go on anyway (the "
                        "report then says so in its first line).")
    log.warning("%s; going on as asked (--allow-training-patients)", what)
    return overlap, what


def calibration_mismatch(model: TrainedModel, X, Y, cols, thresholds, P) -> dict:
    """How far the deployed model's inputs to calibration and thresholds differ from what
    they were fitted on, measured on these (held-out) images: calibration and thresholds
    are fitted on single fold members' out-of-fold predictions but applied to the average of
    the members, which is smoother. Returns mean per-finding ECE and the share of
    image-findings at or above threshold for the average (deployed) and for single members
    (each calibrated the same way, then averaged over members); {"members": 0, "why": ...}
    when the model has one member or no calibration."""
    from .head.net import predict_proba_nets
    from .metrics import apply_calibration, calibration_bins

    est = model.estimator
    nets = getattr(est, "members_", None) or []
    if len(nets) < 2 or getattr(est, "task_", None) == "multiclass":
        return {"members": 0, "why": "one member: calibration was fitted on the model that is deployed"}

    def mean_ece(Pm):
        vals = [calibration_bins(Y[:, j], Pm[:, j])["ece"] for j in range(Y.shape[1])
                if (~np.isnan(Y[:, j])).any()]
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else None

    known = ~np.isnan(Y)
    above = lambda Pm: float((Pm >= thresholds[None, :])[known].mean()) if known.any() else None  # noqa: E731
    singles = [apply_calibration(predict_proba_nets([net], X, est.task_), model.calibration)[:, cols]
               for net in nets]
    eces = [e for e in (mean_ece(Pm) for Pm in singles) if e is not None]
    return {"members": len(nets), "ece_deployed": mean_ece(P),
            "ece_single_members": float(np.mean(eces)) if eces else None,
            "above_threshold_deployed": above(P),
            "above_threshold_single_members": float(np.mean([above(Pm) for Pm in singles])),
            "what": "calibration and thresholds fitted on single fold members' out-of-fold "
                    "predictions, applied to their average; measured on these images"}


def evaluate_model(model: TrainedModel, fs: FeatureSet, out: str | Path, *, n_boot: int = 1000,
                   seed: int = 0, title: str = "medxfer evaluation", config: dict | None = None,
                   sections=(), allow_training_patients: bool = False) -> dict:
    """Metrics with patient-bootstrap CIs and the report folder; returns metrics.

    Refuses (DataError) an evaluation set holding patients the model was trained on, the
    mistake that inflates AUC, unless ``allow_training_patients``; then the report's first
    line says how many images and patients overlap."""
    overlap, what = training_patient_guard(model, fs.dataset.patient_ids, allow_training_patients,
                                           patient_ids_from=fs.dataset.patient_ids_from)
    if what:
        title = f"NOT A HELD-OUT EVALUATION: {what}. {title}"
    shared = shared_findings(fs.dataset, model.label_names)
    scored = shared["scored"]
    cols = [list(model.label_names).index(n) for n in scored]
    Y = align_labels(fs.dataset, scored)
    X = fs.X  # one float32 copy for the probabilities and the records
    P_all = model.predict_proba(X)
    P = P_all[:, cols]
    thresholds = np.asarray(model.thresholds)[cols]
    groups = fs.dataset.patient_ids
    metrics = evaluate_predictions(Y, P, scored, thresholds, groups=groups,
                                   n_boot=n_boot, seed=seed)
    metrics["findings"] = shared
    metrics["calibration_mismatch"] = calibration_mismatch(model, X, Y, cols, thresholds, P)
    metrics["skipped_images"] = len(fs.skipped)
    metrics["training_patient_overlap"] = overlap
    metrics["duplicates_of_training_images"] = duplicate_images(model, fs)
    dup = metrics["duplicates_of_training_images"]
    if dup.get("images"):
        log.warning("%d evaluation image(s) have the same pixels as a training image (e.g. %s): "
                    "their predictions are not held-out ones", dup["images"], ", ".join(dup["examples"]))
    t = fs.dataset.table
    records = predict_records(model, X, t["path"].astype(str).tolist(),
                              t["image_id"].astype(str).tolist(), P=P_all)
    flagged = sum(r.out_of_distribution.flag for r in records)
    metrics["out_of_distribution"] = {
        "flagged": int(flagged), "of": len(records),
        "rule": "features far from the training images (score above threshold) or a DICOM "
                "header that is not a chest radiograph's",
        "threshold": None if model.ood is None else model.ood.threshold,
        "quantile": None if model.ood is None else model.ood.quantile}
    if flagged:
        log.warning("%d of %d evaluation images are flagged out of distribution (features far "
                    "from the training images, score above %s, or a non-chest DICOM header); "
                    "listed in predictions.csv", flagged, len(records),
                    "n/a" if model.ood is None else f"{model.ood.threshold:.2f}")
    degenerate = {n: m for n, m in (model.metrics.get("degenerate_thresholds") or {}).items()
                  if n in scored}
    here = {n: {"sensitivity": m["sensitivity"], "specificity": m["specificity"]}
            for n, m in metrics["per_finding"].items()
            if m["sensitivity"] == 0 or m["specificity"] == 0}
    metrics["degenerate_thresholds"] = degenerate
    metrics["degenerate_thresholds_here"] = here
    if degenerate or here:
        lines = [f"{n}: sensitivity {_fmt_num(m['sensitivity'])}, specificity "
                 f"{_fmt_num(m['specificity'])} on the training predictions"
                 for n, m in degenerate.items()]
        lines += [f"{n}: sensitivity {_fmt_num(m['sensitivity'])}, specificity "
                  f"{_fmt_num(m['specificity'])} on these images" for n, m in here.items()]
        sections = [("Thresholds that decide nothing", "These thresholds call (nearly) every "
                     "image positive or none, on the predictions they were chosen on (at most "
                     "0.05 sensitivity or specificity) or on the images evaluated here (exactly "
                     "0): their above-threshold calls carry no information; read the AUC "
                     "instead.\n" + "\n".join(lines))] + list(sections)
    problems = list(fs.dataset.problems) + list(fs.skipped)
    metrics["subgroups"] = subgroup_metrics(Y, P, t, groups=groups, n_boot=min(n_boot, 200), seed=seed)
    cfg = {"model_sha256": model.sha256, "model_backbone": model.backbone, "model_config": model.config,
           "data": fs.dataset.name, "data_fingerprint": fs.manifest.get("dataset_fingerprint"),
           "n_boot": n_boot} | (config or {})
    links = []
    if model.folder is not None and (Path(model.folder) / "card.html").is_file():
        links.append(("The model card (intended use, training data, limits)",
                      os.path.relpath(Path(model.folder) / "card.html", Path(out))))
    report = write_report(out, metrics=metrics, Y=Y, P=P, table=t, records=records,
                          label_names=scored, thresholds=thresholds, config=cfg,
                          problems=problems, title=title, sections=sections, links=links)
    metrics["report"] = str(report)
    return metrics


def predict_paths(model: TrainedModel, paths, *, cache: Path, progress: bool = False,
                  engine: str = ExtractSettings.engine, device: str = ExtractSettings.device):
    """Prediction records for image files and folders (``engine``, ``device``: as in
    extraction).

    Returns (list of :class:`medxfer.records.PredictionRecord`, one per readable image, and
    the list of Problems for the others).
    """
    ds, problems = read_image_paths(paths)
    if len(ds) == 0:
        return [], problems
    # Unreadable files are returned as problems naming each file (the cache is temporary).
    fs = features_for_model(model, ds, cache=cache, progress=progress, num_workers=0,
                            log_skipped=False, engine=engine, device=device)
    if len(fs) == 0:  # every file unreadable: each is listed, nothing to predict
        return [], problems + list(fs.skipped)
    t = fs.dataset.table
    records = predict_records(model, fs.X, t["path"].astype(str).tolist(),
                              t["image_id"].astype(str).tolist())
    return records, problems + list(fs.skipped)


def _fmt_num(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _fmt_ci(ci, signed: bool = False) -> str:
    if not ci:
        return "n/a"
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if signed else f"{ci[0]:.3f}-{ci[1]:.3f}"


@dataclass
class DemoResult:
    report: Path
    metrics: dict
    baseline: dict
    test_images: int
    seconds: float


def run_demo(out: str | Path = "medxfer-demo", *, data: str | Path | None = None,
             backbone: str = DEFAULT_BACKBONE, limit: int | None = None, seed: int = 0,
             n_boot: int = 1000, progress: bool = True) -> DemoResult:
    """The main job end to end on real chest X-rays (the bundled sample by default):
    extract frozen pretrained features, train the paper's model on a patient-wise training
    part, evaluate it beside a tuned logistic regression on the held-out patients, and
    write a report folder. Steps are logged (logger "medxfer.pipeline"); nothing is printed."""
    out = Path(out)
    t0 = time.time()
    ds = read_dataset(data or bundled_sample())
    if limit:
        ds = ds.subset(np.arange(min(limit, len(ds))))
    log.info(f"[1/4] data: {len(ds)} images of {ds.table['patient_id'].nunique()} patients from {ds.name}")
    settings = ExtractSettings(backbone=backbone)
    log.info(f"[2/4] features: {backbone} ({settings.pooling} pooling), ImageNet weights, frozen "
             f"-> {out / 'features'}")
    fs = extract_with_settings(ds, settings, out / "features", progress=progress)
    tr, te = patient_holdout(fs.dataset.patient_ids, 0.25, Y=fs.Y, seed=seed)
    check_no_patient_overlap(fs.dataset.patient_ids, tr, te)
    log.info(f"[3/4] train: bottleneck model on {len(tr)} images (width and penalty chosen by "
             f"inner patient-wise CV), test on {len(te)} held-out images of other patients")
    train, test = fs.subset(tr), fs.subset(te)
    model = train_from_features(train, head={"random_state": seed})
    model.config["command"] = (f"medxfer demo --out {out} --seed {seed}"
                               + (f" --data {data}" if data else "") + (f" --limit {limit}" if limit else "")
                               + f" --backbone {backbone}")
    model.save(out / "model")
    # C from 1e-6 to 1e-2: the full default grid (to 1) takes minutes on 2,000-d features
    # on 2 cores and its upper half was never chosen on this data (docs/benchmarks.md).
    lr = TunedLogisticRegression(DEMO_CS, random_state=seed).fit(train.X, train.Y,
                                                        groups=train.dataset.patient_ids)
    Yt = align_labels(test.dataset, model.label_names)
    P_model, P_lr = model.predict_proba(test.X), lr.predict_proba(test.X)
    cmp = paired_bootstrap_auc(Yt, P_lr, P_model, groups=test.dataset.patient_ids,
                               n_boot=n_boot, seed=seed)
    lr_metrics = evaluate_predictions(Yt, P_lr, model.label_names, groups=test.dataset.patient_ids,
                                      n_boot=n_boot, seed=seed)
    section = (
        f"Same training images, same held-out test images.\n"
        f"bottleneck model (this report):   macro AUC {cmp['macro_auc_b']:.3f}\n"
        f"logistic regression (C={lr.C_:g}, chosen among 1e-6..1e-2 by patient-wise 5-fold CV on "
        f"training data): "
        f"macro AUC {lr_metrics['macro_auc']:.3f} (95% CI {_fmt_ci(lr_metrics['macro_auc_ci95'])})\n"
        f"difference (model - LR): {cmp['difference']:+.3f}, 95% CI {_fmt_ci(cmp['ci95'], signed=True)}, "
        f"share of patient resamples where the model is not better: {cmp['p_b_not_better']:.2f}\n"
        f"A test set of {len(te)} images is small: read the intervals, not the point estimates.")
    log.info(f"[4/4] evaluate on the held-out patients -> {out / 'report'}")
    metrics = evaluate_model(model, test, out / "report", n_boot=n_boot, seed=seed,
                             title="medxfer demo: ChestX-ray14 sample, patient-wise hold-out",
                             config={"demo": {"backbone": backbone, "seed": seed,
                                              "train_images": int(len(tr)),
                                              "test_images": int(len(te))}},
                             sections=[("Baseline side by side", section)])
    baseline = {"logistic_regression": {"C": lr.C_, "macro_auc": lr_metrics["macro_auc"],
                                        "macro_auc_ci95": lr_metrics["macro_auc_ci95"]},
                "paired_difference": cmp}
    doc = json.loads((out / "report" / "metrics.json").read_text())
    doc["baselines"] = baseline
    (out / "report" / "metrics.json").write_text(json.dumps(doc, indent=2, default=str))
    # the model folder's card, now with the held-out evaluation the report linked it from
    write_model_card(out / "model", [out / "report"])
    return DemoResult(Path(metrics["report"]), metrics, baseline, int(len(te)), time.time() - t0)
