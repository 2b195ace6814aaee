"""The one prediction record: what medxfer says about one image, built once.

`medxfer predict` prints it as text or JSON, the service returns it, and `medxfer
evaluate` writes it (one row per image) into predictions.csv. A record holds the
per-finding probabilities (calibrated, as the model deploys them), the thresholds and the
rule that chose them, the findings whose probability is at or above their threshold
(withheld when the image is out of distribution), the out-of-distribution flag with its
reason, and the notice that medxfer is a research tool, not a medical device. The flag has one meaning everywhere: the image's features are far
from the training images' (medxfer.ood.FeatureDistance) or its DICOM header says it is not
a chest radiograph (medxfer.ood.dicom_header_flags).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .model_io import TrainedModel
from .ood import ood_reasons
from .settings import NOTICE

#: Decimals kept of probabilities, thresholds and OOD scores in every output.
DECIMALS = 6


@dataclass(frozen=True)
class OutOfDistribution:
    flag: bool
    reason: str | None  # "; "-joined reasons, None when not flagged
    score: float | None  # the feature distance; None when the model has no OOD score
    threshold: float | None


#: What every output that carries findings says of itself.

#: How each threshold rule of PackageSettings.threshold_method is described in the records.
THRESHOLD_RULES = {
    "f1": "per finding, the threshold that maximised F1 on predictions of training patients "
          "the model had not seen (favours sensitivity when a finding is rare)",
    "youden": "per finding, the threshold that maximised sensitivity + specificity - 1 on "
              "predictions of training patients the model had not seen",
    "sensitivity": "per finding, the highest threshold that reached the target sensitivity on "
                   "predictions of training patients the model had not seen",
}


def threshold_rule(config: dict) -> str:
    """The words for a model's threshold rule, from its config (model.json)."""
    method = config.get("threshold_method", "f1")
    rule = THRESHOLD_RULES.get(method, method)
    if method == "sensitivity":
        rule += f" ({config.get('target_sensitivity')})"
    return rule


@dataclass(frozen=True)
class PredictionRecord:
    """What medxfer says about one image.

    ``above_threshold`` names the findings whose probability is at or above its threshold
    (``threshold_rule`` says how the thresholds were chosen); an image above threshold is
    not an image with that finding: at the F1 rule most images are above at least one.
    ``findings`` is the same list, or empty with ``findings_withheld`` giving the reason
    when the image is out of distribution: numbers about an image unlike the training
    images are kept (probabilities) but not offered as findings.
    """

    image: str  # the file's path (or the upload's name)
    image_id: str
    probabilities: dict[str, float]
    thresholds: dict[str, float]
    above_threshold: list[str]  # at or above threshold, in the model's order
    findings: list[str]  # above_threshold, or [] when withheld
    findings_withheld: str | None
    threshold_rule: str
    out_of_distribution: OutOfDistribution
    notice: str = NOTICE

    def to_dict(self) -> dict:
        """The JSON form (CLI --json, the service)."""
        return asdict(self)

    def to_row(self) -> dict:
        """The flat form of predictions.csv: prob_/above_ per finding, above_threshold and
        findings joined by '|' (empty when none), findings_withheld, ood, ood_reason,
        ood_score, ood_threshold."""
        row = {"image_id": self.image_id, "path": self.image}
        for name, p in self.probabilities.items():
            row[f"prob_{name}"] = p
            row[f"above_{name}"] = int(name in self.above_threshold)
        o = self.out_of_distribution
        return row | {"above_threshold": "|".join(self.above_threshold),
                      "findings": "|".join(self.findings),
                      "findings_withheld": self.findings_withheld or "", "ood": o.flag,
                      "ood_reason": o.reason or "", "ood_score": o.score,
                      "ood_threshold": o.threshold}


def make_records(P: np.ndarray, label_names, thresholds, paths, image_ids=None, *,
                 ood: list[OutOfDistribution] | None = None,
                 rule: str = THRESHOLD_RULES["f1"]) -> list[PredictionRecord]:
    """Records of probabilities P (n, L) at ``thresholds`` (L,) chosen by ``rule`` (words);
    ``ood`` per row (default: not flagged, no score: what a caller without a model's OOD
    score knows)."""
    names = list(label_names)
    thr = [round(float(t), DECIMALS) for t in thresholds]
    ids = image_ids if image_ids is not None else [Path(p).name for p in paths]
    out = []
    for i, path in enumerate(paths):
        probs = {n: round(float(P[i, j]), DECIMALS) for j, n in enumerate(names)}
        o = ood[i] if ood is not None else OutOfDistribution(False, None, None, None)
        # from the rounded numbers, so that a record agrees with itself
        above = [n for j, n in enumerate(names) if probs[n] >= thr[j]]
        withheld = f"out of distribution: {o.reason}" if o.flag else None
        out.append(PredictionRecord(
            image=str(path), image_id=str(ids[i]), probabilities=probs,
            thresholds=dict(zip(names, thr)), above_threshold=above,
            findings=[] if withheld else above, findings_withheld=withheld,
            threshold_rule=rule, out_of_distribution=o))
    return out


def predict_records(model: TrainedModel, X: np.ndarray, paths, image_ids=None, *,
                    P: np.ndarray | None = None) -> list[PredictionRecord]:
    """One record per row of features X (n, d) of the images ``paths``: the model's
    calibrated probabilities and thresholds, and the OOD flag (feature distance or DICOM
    header) with its reason. ``P``: the model's probabilities of X when the caller has
    them already (evaluate), so they are not computed twice."""
    X = np.asarray(X, dtype=np.float32)
    scores = model.ood.score(X) if model.ood is not None else [None] * len(X)
    ood_thr = None if model.ood is None else round(float(model.ood.threshold), DECIMALS)
    flags = []
    for path, score in zip(paths, scores):
        score = None if score is None else float(score)
        why = ood_reasons(str(path), score, model.ood)
        flags.append(OutOfDistribution(bool(why), "; ".join(why) or None,
                                       None if score is None else round(score, DECIMALS), ood_thr))
    return make_records(model.predict_proba(X) if P is None else P, model.label_names,
                        model.thresholds, paths, image_ids, ood=flags,
                        rule=threshold_rule(model.config))


__all__ = ["DECIMALS", "NOTICE", "THRESHOLD_RULES", "OutOfDistribution", "PredictionRecord",
           "make_records", "predict_records", "threshold_rule"]
