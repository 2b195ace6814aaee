"""Class activation maps (Grad-CAM) of the model that is deployed.

Grad-CAM (Selvaraju et al., 2017): the gradient of a finding's score with respect to a
feature map A (C, h, w), averaged over space, weights the channels; the map is
ReLU(sum_c w_c A_c), upsampled to the image and scaled to [0, 1].

The score is the deployed model's own output: the logit of the probability averaged over
every member that `medxfer train` deploys (its fold models), before the per-finding
calibration (monotone, so it moves no pixel's rank). The maps are the last stage of every
backbone of a concatenation: each member's Grad-CAM is upsampled to the image and they are
summed (their channel weights are gradients of the same score, so they share one scale).
The backbone is the model's own (same weights, input size, preprocessing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch.nn import functional as F

from .backbones import Backbone, rebuild_backbone
from .images import load_image
from .model_io import TrainedModel


def backbone_for(model: TrainedModel) -> Backbone:
    """The model's own backbone, rebuilt from its recorded identity (hash-checked)."""
    return rebuild_backbone(model.backbone, model.backbone_state)


def deployed_score(model: TrainedModel, feats: torch.Tensor) -> torch.Tensor:
    """(B, L) logit of the mean member probability: the deployed output before calibration."""
    members = model.estimator.members_
    if model.estimator.task_ == "multilabel":
        p = torch.stack([torch.sigmoid(m(feats)[0]) for m in members]).mean(0)
        p = p.clamp(1e-7, 1 - 1e-7)
        return torch.log(p / (1 - p))
    p = torch.stack([torch.softmax(m(feats)[0], -1) for m in members]).mean(0)
    return torch.log(p.clamp_min(1e-12))


def grad_cam(model: TrainedModel, image: np.ndarray, findings: list[str], *,
             backbone: Backbone | None = None) -> dict[str, np.ndarray]:
    """Maps for ``findings`` on one decoded gray image (H, W) in [0, 1].

    Returns {finding: (H, W) float32 map in [0, 1]} at the image's own resolution.
    """
    backbone = backbone or backbone_for(model)
    index = {n: j for j, n in enumerate(model.label_names)}
    unknown = [n for n in findings if n not in index]
    if unknown:
        raise ValueError(f"the model predicts no finding named {', '.join(unknown)}; it "
                         f"predicts {', '.join(model.label_names)}")
    # The backbone is frozen; asking for the input gradient builds the graph through it.
    x = backbone.preprocessing(image).unsqueeze(0).requires_grad_(True)
    out = {}
    with torch.enable_grad():
        feats, fmaps = backbone.forward_with_maps(x)
        if not fmaps or any(m.ndim != 4 for m in fmaps):
            raise ValueError(f"backbone '{backbone.config.name}' gives no spatial map for Grad-CAM")
        score = deployed_score(model, feats)
        for name in findings:
            grads = torch.autograd.grad(score[0, index[name]], fmaps, retain_graph=True)
            cam = torch.zeros(image.shape)
            for fmap, grad in zip(fmaps, grads):
                weights = grad.mean(dim=(2, 3), keepdim=True)
                part = F.relu((weights * fmap).sum(1, keepdim=True))
                cam = cam + F.interpolate(part, size=image.shape, mode="bilinear",
                                          align_corners=False)[0, 0]
            cam = cam.detach().numpy()
            top = cam.max()
            out[name] = (cam / top if top > 0 else cam).astype(np.float32)
    return out


def peak(cam: np.ndarray) -> tuple[int, int]:
    """(row, col) of the map's maximum."""
    r, c = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return int(r), int(c)


#: The opacity of the map over the radiograph in every overlay (files, the service, the viewer).
CAM_ALPHA = 0.35


def colour_map(cam: np.ndarray) -> np.ndarray:
    """(H, W) map in [0, 1] -> (H, W, 3) RGB in [0, 1], matplotlib's "jet" as in the overlays."""
    from matplotlib import colormaps

    return colormaps["jet"](np.clip(cam, 0, 1))[..., :3]


def save_overlay(image: np.ndarray, cam: np.ndarray, path: str | Path, title: str = "") -> Path:
    """The radiograph in gray with the map in colour on top, as PNG. Drawn on its own Agg
    canvas: matplotlib's process-wide backend is left alone."""
    fig = Figure(figsize=(5, 5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    ax.imshow(cam, cmap="jet", alpha=CAM_ALPHA, vmin=0, vmax=1)
    r, c = peak(cam)
    ax.plot([c], [r], "w+", ms=14, mew=2)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path


def cam_for_records(model: TrainedModel, records, out_dir: str | Path) -> list[Path]:
    """Overlays for each prediction record's findings above threshold (its top finding when
    none is), named IMAGE-STEM_FINDING.png in ``out_dir``."""
    backbone = backbone_for(model)
    written = []
    for r in records:
        image = load_image(r.image)
        chosen = list(r.findings) or [max(r.probabilities, key=r.probabilities.get)]
        for name, cam in grad_cam(model, image, chosen, backbone=backbone).items():
            written.append(save_overlay(image, cam, Path(out_dir) / f"{Path(r.image).stem}_{name}.png",
                                        title=f"{Path(r.image).name}: {name}"))
    return written
