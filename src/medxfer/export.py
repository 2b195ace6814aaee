"""A trained model as one ONNX file a hospital's engineers can run without medxfer.

The graph takes ``gray``: (batch, 1, S, S) float32 in [0, 1], the decoded radiograph
already resized to S x S (S and the resize rule are in the metadata: the whole image,
no crop, antialiased bilinear as Pillow's resize), and returns ``probabilities``:
(batch, n_findings), everything between inside: gray to 3 channels, the backbone's
normalization, the frozen (or fine-tuned) backbone and its pooling, the feature
standardization, the bottleneck and head of every averaged member, and the calibration.
Metadata (``onnx.ModelProto.metadata_props``): label_names, thresholds, input_size,
resize, decoding, calibration, medxfer_version, backbone identity and the
out-of-distribution threshold. A model with an out-of-distribution score (medxfer.ood) also
returns ``ood_score`` (batch,): above the threshold, the image is unlike the training images
and its findings should be withheld, as medxfer itself does.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .backbones import BackboneIdentity, rebuild_backbone
from .data import bundled_sample
from .engine import OPSET, onnx_session
from .errors import ModelError
from .images import load_image
from .model_io import TrainedModel
from .preprocess import Preprocessing
from .records import NOTICE


class WholeModel(nn.Module):
    """gray (B, 1, S, S) in [0, 1] -> calibrated probabilities (B, L), in torch; with
    ``with_ood`` (and a model that has the score) also the out-of-distribution score (B,)
    of medxfer.ood.FeatureDistance on the same features."""

    def __init__(self, model: TrainedModel, *, with_ood: bool = False):
        super().__init__()
        if model.estimator.task_ != "multilabel":
            raise ModelError("export supports multi-label models (per-finding sigmoid) for now")
        self.backbone = rebuild_backbone(model.backbone, model.backbone_state).eval()
        pre = self.backbone.preprocessing
        self.register_buffer("mean", torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1))
        self.members = nn.ModuleList(model.estimator.members_)
        cal = model.calibration or {"method": "none"}
        L = len(model.label_names)
        if cal.get("method") == "platt":
            a, b = np.asarray(cal["a"], np.float32), np.asarray(cal["b"], np.float32)
        elif cal.get("method") == "temperature":
            a, b = np.full(L, 1.0 / cal["temperature"], np.float32), np.zeros(L, np.float32)
        else:
            a, b = None, None
        self.calibrated = a is not None
        self.register_buffer("cal_a", torch.from_numpy(a if a is not None else np.ones(L, np.float32)))
        self.register_buffer("cal_b", torch.from_numpy(b if b is not None else np.zeros(L, np.float32)))
        self.with_ood = with_ood and model.ood is not None
        if self.with_ood:
            o = model.ood
            for name in ("mean", "scale", "components", "variances"):
                self.register_buffer(f"ood_{name}", torch.from_numpy(np.ascontiguousarray(getattr(o, name))))
            self.ood_residual_scale, self.ood_norm = o.residual_scale, o.norm

    def ood_score(self, z: torch.Tensor) -> torch.Tensor:
        """medxfer.ood's score, the same arithmetic in torch."""
        Z = (z - self.ood_mean) / self.ood_scale
        proj = Z @ self.ood_components.T
        maha = (proj ** 2 / self.ood_variances).sum(1) / max(1, len(self.ood_variances))
        resid = Z - proj @ self.ood_components
        raw = torch.sqrt(maha) + torch.sqrt((resid ** 2).sum(1)) * self.ood_residual_scale
        return raw / self.ood_norm

    def forward(self, gray: torch.Tensor) -> torch.Tensor:
        x = (gray.clamp(0, 1).expand(-1, 3, -1, -1) - self.mean) / self.std
        z = self.backbone(x)
        p = torch.stack([torch.sigmoid(m(z)[0]) for m in self.members]).mean(0)
        if self.calibrated:
            p = p.clamp(1e-7, 1 - 1e-7)
            p = torch.sigmoid(torch.log(p / (1 - p)) * self.cal_a + self.cal_b)
        if self.with_ood:
            return p, self.ood_score(z)
        return p


def metadata(model: TrainedModel) -> dict[str, str]:
    pre = model.backbone.get("preprocessing") or {}
    return {
        "producer": "medxfer", "medxfer_version": __version__,
        "label_names": json.dumps(list(model.label_names)),
        "thresholds": json.dumps([float(t) for t in model.thresholds]),
        "input": "gray: float32 (batch, 1, S, S), values in [0, 1]",
        "input_size": str(pre.get("size")),
        "resize": f"whole image to S x S, no crop, {pre.get('interpolation', 'bilinear')} with "
                  "antialiasing (Pillow Image.resize on the float image)",
        "decoding": "8-bit / 255, 16-bit / 65535, colour to luminance 0.299R+0.587G+0.114B, "
                    "DICOM: modality LUT, VOI LUT, MONOCHROME1 inverted, scaled to [0, 1]",
        "calibration": json.dumps(model.calibration),
        # the whole identity: every member's weights hash of a concatenation included
        "backbone": json.dumps(BackboneIdentity.from_dict(model.backbone).as_dict()),
        "weights_sha256": json.dumps(BackboneIdentity.from_dict(model.backbone).weights_hashes),
        "ood_threshold": "" if model.ood is None else str(model.ood.threshold),
        "ood_score": "" if model.ood is None else
        "output ood_score: distance of the features from the training images' (medxfer.ood); "
        "above ood_threshold the image is out of distribution and its findings are withheld",
        "notice": NOTICE,
    }


def export_onnx(model: TrainedModel, path: str | Path, *, opset: int = OPSET) -> Path:
    """Write the whole model as ONNX with a dynamic batch axis and check it loads."""
    try:
        import onnx
    except ImportError as exc:
        raise ModelError("ONNX export needs the onnx package: pip install 'medxfer[onnx]'") from exc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    whole = WholeModel(model, with_ood=True).eval()
    size = int((model.backbone.get("preprocessing") or {})["size"])
    dummy = torch.rand(2, 1, size, size)
    outputs = ["probabilities"] + (["ood_score"] if whole.with_ood else [])
    with torch.no_grad(), warnings.catch_warnings():
        # torch's exporter warns about its own internals (tracer, constant folding): nothing
        # a user can act on; the check below compares the file with PyTorch instead
        warnings.simplefilter("ignore")
        torch.onnx.export(whole, (dummy,), str(path), input_names=["gray"],
                          output_names=outputs, opset_version=opset, dynamo=False,
                          dynamic_axes={"gray": {0: "batch"}} | {o: {0: "batch"} for o in outputs})
    proto = onnx.load(str(path))
    for k, v in metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def sample_inputs(model: TrainedModel, paths) -> np.ndarray:
    """(n, 1, S, S) float32 inputs of image files, made exactly as medxfer makes them."""
    pre = Preprocessing.from_dict(model.backbone["preprocessing"])
    return np.stack([pre.resize(load_image(p)) for p in paths])[:, None].astype(np.float32)


def check_export(model: TrainedModel, path: str | Path, paths=None, *, atol: float = 1e-4) -> dict:
    """Run the ONNX file in onnxruntime on real images (default: 8 bundled sample images)
    and compare with the PyTorch pipeline; ModelError when they differ by more than atol."""
    if paths is None:
        paths = sorted((bundled_sample() / "images").glob("*.png"))[:8]
    gray = sample_inputs(model, paths)
    whole = WholeModel(model, with_ood=True).eval()
    with torch.no_grad():
        ref = whole(torch.from_numpy(gray))
    ref = [r.numpy() for r in ref] if whole.with_ood else [ref.numpy()]
    out = onnx_session(path).run(None, {"gray": gray})
    diff = float(np.abs(out[0] - ref[0]).max())
    if not diff <= atol:
        raise ModelError(f"the ONNX file '{path}' gives probabilities up to {diff:.2g} away from "
                         f"PyTorch's (tolerance {atol}); do not deploy it")
    result = {"images": len(paths), "max_abs_difference": diff}
    if whole.with_ood:
        rel = float(np.abs(out[1] - ref[1]).max() / max(1e-6, float(np.abs(ref[1]).max())))
        if not rel <= 1e-2:  # float32 sums over thousands of features: about 0.4% here
            raise ModelError(f"the ONNX file '{path}' gives OOD scores {rel:.2g} (relative) away "
                             "from PyTorch's; do not deploy it")
        result["ood_score_max_relative_difference"] = rel
    return result
