"""A trained model as one self-describing folder.

    model.safetensors   weights of the bottleneck and head plus the feature
                        standardization (safetensors: loading runs no code)
    backbone.safetensors  fine-tuned models only: the whole backbone's weights
    model.json          estimator parameters, task, label names, decision thresholds,
                        the backbone identity (name, weights sha256, pooling,
                        preprocessing), the training features' manifest summary and the
                        validation metrics the model was selected on

With the folder alone, medxfer can recreate the backbone and its preprocessing and
predict on new images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .backbones import BackboneIdentity
from .card import write_model_card
from .data import normalise_patient_ids
from .errors import ModelError
from .hashing import sha256_file
from .head import BottleneckClassifier
from .metrics import (apply_calibration, calibration_bins, choose_thresholds, evaluate_predictions,
                      fit_calibration, subgroup_metrics, threshold_fallbacks)
from .ood import FeatureDistance
from .settings import PackageSettings

log = logging.getLogger(__name__)

FORMAT = "medxfer-model"
FORMAT_VERSION = 1


@dataclass
class TrainedModel:
    """A fitted estimator with everything needed to use it on new images."""

    estimator: BottleneckClassifier
    label_names: list[str]
    thresholds: np.ndarray
    backbone: dict
    features: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=lambda: {"method": "none"})
    backbone_state: dict | None = field(default=None, repr=False)  # fine-tuned backbone weights
    ood: FeatureDistance | None = field(default=None, repr=False)  # distance from training
    sha256: str | None = field(default=None, repr=False)  # of model.safetensors, once saved or loaded
    folder: Path | None = field(default=None, repr=False)  # where it was saved or loaded from

    def __post_init__(self):
        # the folder records the identity as a dict (model.json)
        if isinstance(self.backbone, BackboneIdentity):
            self.backbone = self.backbone.as_dict()

    def training_overlap(self, patient_ids) -> dict | None:
        """How many of these images belong to patients the model was trained on (from the
        salted patient-ID hashes in model.json); None when the model records none."""
        rec = self.features.get("training_patients")
        if not rec:
            return None
        known = set(rec["sha256_16"])
        ids = normalise_patient_ids(np.asarray(patient_ids).astype(str)).to_numpy().astype(str)
        hit = np.isin([hash_patient(p, rec["salt"]) for p in ids], list(known))
        if rec.get("id_rule") != ID_RULE:
            # a model from before IDs were normalised hashed them as read: ChestX-ray14 wrote
            # them with five digits ("00075"), the other readers as given
            for variant in (np.asarray(patient_ids).astype(str),
                            np.array([p.zfill(5) if p.isdigit() else p for p in ids])):
                hit |= np.isin([hash_patient(p, rec["salt"]) for p in variant], list(known))
        return {"images": int(hit.sum()), "of_images": int(len(ids)),
                "patients": int(len(np.unique(ids[hit]))), "of_patients": int(len(np.unique(ids)))}

    @property
    def feature_dtype(self) -> str:
        """The storage type of the features the model was trained on ("float16" unless its
        features folder said otherwise): new images' features are rounded to it, so the
        service and `predict` feed the model what it was trained on."""
        return str(self.features.get("dtype") or "float16")

    def predict_proba(self, X) -> np.ndarray:
        """Probabilities (n, n_labels), recalibrated when the model carries a calibration.
        Multiclass (softmax) probabilities are never recalibrated per class."""
        P = self.estimator.predict_proba(X)
        if self.estimator.task_ == "multiclass":
            return P
        return apply_calibration(P, self.calibration)

    def check_features(self, manifest: dict, where: str = "the features") -> None:
        """Raise ModelError when features were not made the way this model's were."""
        have = BackboneIdentity.from_dict(manifest.get("backbone"))
        mine = BackboneIdentity.from_dict(self.backbone)
        diffs = mine.differences(have)
        if diffs:
            raise ModelError(
                f"{where} were made with backbone {have.label!r} and this model with "
                f"{mine.label!r}; they differ in {', '.join(diffs)}. Extract features with the "
                "model's backbone (give `medxfer evaluate` the image folder and it does so "
                "itself).")

    def save(self, folder: str | Path) -> Path:
        """Write the model folder. It is written beside ``folder`` and then swapped in, so
        an existing model there is replaced whole (no file of the older model is left) and
        a failure midway leaves the older model as it was."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f".{folder.name}.writing-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            self._write(tmp, folder.resolve().name)
            if folder.exists():
                old = folder.with_name(f".{folder.name}.replaced-{os.getpid()}")
                os.replace(folder, old)
                os.replace(tmp, folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.folder = folder
        return folder

    def _write(self, folder: Path, model_name: str) -> None:
        tensors, est_meta = self.estimator.to_state()
        save_file(tensors, str(folder / "model.safetensors"))
        if self.backbone_state is not None:
            save_file(self.backbone_state, str(folder / "backbone.safetensors"))
        ood_meta = None
        if self.ood is not None:
            ood_tensors, ood_meta = self.ood.to_state()
            save_file(ood_tensors, str(folder / "ood.safetensors"))
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "medxfer_version": __version__,
            "estimator": est_meta,
            "label_names": list(self.label_names),
            "thresholds": [float(t) for t in self.thresholds],
            "calibration": self.calibration,
            "backbone": self.backbone,
            "features": self.features,
            "selection_metrics": self.metrics,
            "config": self.config,
            "ood": ood_meta,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (folder / "model.json").write_text(json.dumps(meta, indent=2, default=_json_default))
        # safetensors writes its files 0600; a model folder is shared as a whole, so every
        # file in it gets the same permissions as model.json (the umask's default).
        mode = (folder / "model.json").stat().st_mode & 0o777
        for name in ("model.safetensors", "backbone.safetensors", "ood.safetensors"):
            if (folder / name).is_file():
                (folder / name).chmod(mode)
        self.sha256 = sha256_file(folder / "model.safetensors")
        try:  # hours of training are not lost to a card: the model is saved without one
            write_model_card(folder, name=model_name)
        except Exception as exc:
            log.warning("the model card could not be written (%s: %s); the model is saved "
                        "without it: write it with `medxfer card MODEL --out card.html`",
                        type(exc).__name__, exc)

    @classmethod
    def load(cls, folder: str | Path) -> "TrainedModel":
        folder = Path(folder)
        jpath, wpath = folder / "model.json", folder / "model.safetensors"
        if not jpath.is_file() or not wpath.is_file():
            raise ModelError(f"'{folder}' is not a medxfer model folder (needs model.json and "
                             "model.safetensors). Train one with `medxfer train FEATURES --out MODEL`.")
        try:
            meta = json.loads(jpath.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"'{jpath}' is not readable JSON ({exc}); the model folder is damaged: "
                             "copy it again or train the model again") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT \
                or meta.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"'{jpath}' is not a model of format {FORMAT} v{FORMAT_VERSION}")
        missing = [k for k in ("estimator", "label_names", "thresholds", "backbone") if k not in meta]
        if missing:
            raise ModelError(f"'{jpath}' lacks {', '.join(missing)}; the model folder is damaged: "
                             "copy it again or train the model again")
        try:
            est = BottleneckClassifier.from_state(_load_tensors(wpath), meta["estimator"])
        except ModelError as exc:
            raise ModelError(f"'{wpath}' does not fit '{jpath}': {exc}") from exc
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelError(f"'{wpath}' and '{jpath}' do not describe one model ({exc}); copy the "
                             "model folder again or train the model again") from exc
        bpath = folder / "backbone.safetensors"
        backbone_state = _load_tensors(bpath) if bpath.is_file() else None
        if meta["backbone"].get("finetuned_sha256") and backbone_state is None:
            raise ModelError(f"'{folder}' is a fine-tuned model but backbone.safetensors is missing")
        ood = None
        if meta.get("ood"):
            opath = folder / "ood.safetensors"
            if not opath.is_file():
                raise ModelError(f"'{jpath}' records an out-of-distribution score but {opath.name} "
                                 "is missing; copy the whole model folder")
            try:
                ood = FeatureDistance.from_state(_load_tensors(opath), meta["ood"])
            except (KeyError, TypeError) as exc:
                raise ModelError(f"'{opath}' does not fit '{jpath}' ({exc}); copy the model folder "
                                 "again or train the model again") from exc
        return cls(est, meta["label_names"], np.asarray(meta["thresholds"]), meta["backbone"],
                   meta.get("features", {}), meta.get("selection_metrics", {}), meta.get("config", {}),
                   meta.get("calibration", {"method": "none"}), backbone_state, ood,
                   sha256_file(wpath), folder)


def _load_tensors(path: Path) -> dict:
    """A safetensors file, or ModelError naming it (truncated, not safetensors...)."""
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises SafetensorError, OSError, ValueError...
        raise ModelError(f"'{path}' is not a readable safetensors file ({type(exc).__name__}: "
                         f"{exc}); the model folder is damaged or was copied only in part: copy "
                         "it again or train the model again") from exc


def hash_patient(patient_id, salt: str) -> str:
    return hashlib.sha256(f"{salt}|{patient_id}".encode()).hexdigest()[:16]


#: A threshold whose sensitivity or specificity on the predictions it was chosen on is at
#: most this is reported as deciding nothing.
DEGENERATE = 0.05

#: How patient IDs are written before hashing (medxfer.data.normalise_patient_ids).
ID_RULE = "trimmed; digits without leading zeros"


def training_patients_record(patient_ids) -> dict:
    """Salted, truncated sha256 of every training patient ID: enough for `evaluate` to find
    training patients in an evaluation set, without listing the IDs in clear. (IDs from a
    small known range can still be found by trying them all: this is not anonymization.)"""
    salt = secrets.token_hex(8)
    ids = sorted(set(normalise_patient_ids(np.asarray(patient_ids).astype(str))))
    return {"salt": salt, "id_rule": ID_RULE, "sha256_16": sorted(hash_patient(p, salt) for p in ids)}


#: Patient resamples of the CIs of a model's validation metrics (the model card quotes
#: them); fewer above LARGE_VALIDATION rows, where they cost minutes.
VALIDATION_BOOT = 1000
LARGE_VALIDATION, LARGE_VALIDATION_BOOT = 20_000, 200


def validation_metrics(Yv, Pv, label_names, thresholds, dataset, index, what: str) -> dict:
    """Metrics of a model's validation predictions (Yv, Pv) of ``dataset``'s rows ``index``,
    with patient-bootstrap CIs and subgroup results, and ``what`` they are (out-of-fold
    predictions or a held-out validation part) in words, for the model card."""
    index = np.asarray(index)
    groups = np.asarray(dataset.patient_ids)[index]
    n_boot = VALIDATION_BOOT if len(index) <= LARGE_VALIDATION else LARGE_VALIDATION_BOOT
    out = evaluate_predictions(Yv, Pv, list(label_names), thresholds, groups=groups, n_boot=n_boot)
    out.pop("micro", None)
    cal = calibration_bins(Yv, Pv)
    out["calibration"] = {"ece_pooled": cal["ece"], "bins": cal["bins"]}
    out["subgroups"] = subgroup_metrics(Yv, Pv, dataset.table.iloc[index], groups=groups,
                                        n_boot=min(n_boot, 200))
    out["predictions"] = what
    return out


def package(estimator: BottleneckClassifier, label_names, Yv: np.ndarray, Pv: np.ndarray, *,
            backbone: dict, features: dict, settings: PackageSettings = PackageSettings(),
            config: dict | None = None, metrics: dict | None = None,
            backbone_state: dict | None = None, training_patients=None,
            train_features=None, dataset=None, validation_index=None,
            validation_what: str | None = None) -> TrainedModel:
    """The one packaging step of train, tune and fine-tuning: calibrate, then choose
    thresholds, on validation predictions (Yv, Pv) of patients the model did not train on,
    and wrap everything the model folder records. Multiclass (softmax) probabilities are
    not recalibrated per class. ``training_patients`` (the patient IDs of every training
    and validation row) are stored hashed, for :meth:`TrainedModel.training_overlap`;
    ``train_features`` (their features) fit the out-of-distribution score (medxfer.ood).
    ``dataset`` (the training Dataset) is summarised for the model card (counts, patients,
    views, sex, age, prevalence); with ``validation_index`` (its rows that Yv, Pv predict;
    every row when they are as many) the validation predictions' metrics are recorded with
    patient-bootstrap CIs and subgroups (:func:`validation_metrics`, ``validation_what``
    saying what they are)."""
    if training_patients is not None:
        features = dict(features) | {"training_patients": training_patients_record(training_patients)}
    calibration = "none" if estimator.task_ == "multiclass" else settings.calibration
    cal = fit_calibration(Yv, Pv, calibration)
    Pv = apply_calibration(Pv, cal)
    thresholds = choose_thresholds(Yv, Pv, method=settings.threshold_method,
                                   target_sensitivity=settings.target_sensitivity)
    val = evaluate_predictions(Yv, Pv, list(label_names), thresholds, n_boot=0)
    extra: dict = {"fallbacks": fallback_record(Yv, cal, label_names)}
    if dataset is not None:
        features = dict(features) | {"training_data": dataset.summary()}
        if validation_index is None and len(Yv) == len(dataset):
            validation_index = np.arange(len(dataset))
        if validation_index is not None:
            extra["validation_metrics"] = validation_metrics(
                Yv, Pv, label_names, thresholds, dataset, validation_index,
                validation_what or "predictions of validation patients the model did not train on")
    # A threshold that calls (nearly) every training image positive (specificity at most
    # 0.05) or (nearly) none (sensitivity at most 0.05) decides nothing; the report names it.
    degenerate = {n: {"sensitivity": m["sensitivity"], "specificity": m["specificity"]}
                  for n, m in val["per_finding"].items()
                  if any(m[k] is not None and m[k] <= DEGENERATE for k in ("sensitivity", "specificity"))}
    return TrainedModel(
        estimator, list(label_names), thresholds, backbone, features=features,
        metrics={"validation_macro_auc": val["macro_auc"], "best_epoch": estimator.best_epoch_,
                 "validation_images": int(len(Yv)), "degenerate_thresholds": degenerate,
                 "loss_terms": getattr(estimator, "loss_terms_", {})} | extra | (metrics or {}),
        config=(config or {}) | asdict(settings), calibration=cal, backbone_state=backbone_state,
        ood=FeatureDistance.fit(train_features, groups=training_patients)
        if train_features is not None and len(train_features) >= 10 else None)


def fallback_record(Yv, cal: dict, label_names) -> dict:
    """Where packaging could not do what was asked, by finding name (model.json
    ``selection_metrics.fallbacks``), each also logged in one line: thresholds kept at 0.5 (no both
    classes in the validation predictions), calibration kept as identity or reduced to a
    shift."""
    names = list(label_names)
    fb = (cal or {}).get("fallbacks", {})
    rec = {"threshold_0.5_no_both_classes": [names[j] for j in threshold_fallbacks(Yv)],
           "calibration_identity_no_both_classes": [names[j] for j in fb.get("identity_no_both_classes", [])],
           "calibration_shift_only": [names[j] for j in fb.get("shift_only", [])]}
    why = {"threshold_0.5_no_both_classes": "threshold kept at 0.5 (the validation predictions "
                                            "lack positives or negatives)",
           "calibration_identity_no_both_classes": "not calibrated (the validation predictions "
                                                   "lack positives or negatives)",
           "calibration_shift_only": "calibration reduced to a shift (its Platt slope was reversed, "
                                     "flat or infinite)"}
    for k, found in rec.items():
        if found:
            log.warning("%s: %s; recorded in model.json selection_metrics.fallbacks", ", ".join(found), why[k])
    return rec


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, torch.device)):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
