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

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import ModelError
from .metrics import apply_calibration
from .model import BottleneckClassifier, _Net

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

    def predict_proba(self, X) -> np.ndarray:
        """Probabilities (n, n_labels), recalibrated when the model carries a calibration.
        Multiclass (softmax) probabilities are never recalibrated per class."""
        P = self.estimator.predict_proba(X)
        if self.estimator.task_ == "multiclass":
            return P
        return apply_calibration(P, self.calibration)

    def check_features(self, manifest: dict, where: str = "the features") -> None:
        """Raise ModelError when features were not made the way this model's were."""
        have = manifest.get("backbone", {})
        diffs = [k for k in ("name", "weights_sha256", "pooling", "feature_dim", "preprocessing",
                             "finetuned_sha256")
                 if have.get(k) != self.backbone.get(k)]
        if diffs:
            raise ModelError(
                f"{where} were made with backbone {have.get('name')!r} and this model with "
                f"{self.backbone.get('name')!r}; they differ in {', '.join(diffs)}. Extract "
                f"features with the model's backbone (give `medxfer evaluate` the image folder "
                "and it does so itself).")

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        est = self.estimator
        est._check_fitted()
        nets = getattr(est, "members_", None) or [est.net_]
        state = {(f"member{i}." if len(nets) > 1 else "") + k: v.detach().cpu().contiguous()
                 for i, net in enumerate(nets) for k, v in net.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        if self.backbone_state is not None:
            save_file(self.backbone_state, str(folder / "backbone.safetensors"))
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "medxfer_version": __version__,
            "estimator": {"class": type(est).__name__, "params": est.get_params(),
                          "task": est.task_, "n_features_in": int(est.n_features_in_),
                          "n_outputs": int(est.n_outputs_),
                          "classes": est.classes_.tolist() if est.task_ == "multiclass" else None,
                          "best_epoch": int(est.best_epoch_),
                          "best_score": _finite_or_none(est.best_score_)},
            "label_names": list(self.label_names),
            "thresholds": [float(t) for t in self.thresholds],
            "calibration": self.calibration,
            "backbone": self.backbone,
            "features": self.features,
            "selection_metrics": self.metrics,
            "config": self.config,
        }
        (folder / "model.json").write_text(json.dumps(meta, indent=2, default=_json_default))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "TrainedModel":
        folder = Path(folder)
        jpath, wpath = folder / "model.json", folder / "model.safetensors"
        if not jpath.is_file() or not wpath.is_file():
            raise ModelError(f"'{folder}' is not a medxfer model folder (needs model.json and "
                             "model.safetensors). Train one with `medxfer train FEATURES --out MODEL`.")
        meta = json.loads(jpath.read_text())
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"'{jpath}' is not a model of format {FORMAT} v{FORMAT_VERSION}")
        e = meta["estimator"]
        est = BottleneckClassifier(**e["params"])
        est.task_ = e["task"]
        est.n_features_in_ = e["n_features_in"]
        est.n_outputs_ = e["n_outputs"]
        if e["classes"] is not None:
            est.classes_ = np.asarray(e["classes"])
        est.best_epoch_ = e["best_epoch"]
        est.best_score_ = e["best_score"] if e["best_score"] is not None else float("nan")
        est.history_ = []
        n_members = int(e["params"].get("n_ensemble", 1))
        tensors = load_file(str(wpath))
        nets = []
        for i in range(n_members):
            prefix = f"member{i}." if n_members > 1 else ""
            net = _Net(e["n_features_in"], e["params"]["bottleneck_dim"], e["n_outputs"])
            try:
                net.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            except Exception as exc:
                raise ModelError(f"weights in '{wpath}' do not fit model.json: {exc}") from exc
            nets.append(net.eval())
        est.net_ = nets[0]
        if n_members > 1:
            est.members_ = nets
        bpath = folder / "backbone.safetensors"
        backbone_state = load_file(str(bpath)) if bpath.is_file() else None
        if meta["backbone"].get("finetuned_sha256") and backbone_state is None:
            raise ModelError(f"'{folder}' is a fine-tuned model but backbone.safetensors is missing")
        return cls(est, meta["label_names"], np.asarray(meta["thresholds"]), meta["backbone"],
                   meta.get("features", {}), meta.get("selection_metrics", {}), meta.get("config", {}),
                   meta.get("calibration", {"method": "none"}), backbone_state)


def _finite_or_none(x):
    return float(x) if x is not None and np.isfinite(x) else None


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, torch.device)):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
