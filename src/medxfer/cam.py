"""Class activation maps (Grad-CAM on the backbone's last stage) for trained models.

Grad-CAM (Selvaraju et al., 2017): the gradient of a finding's logit with respect to the last
feature map A (C, h, w), averaged over space, weights the channels; the map is
ReLU(sum_c w_c A_c), upsampled to the image and scaled to [0, 1]. The backbone is the model's
own (same weights, input size, preprocessing), so the map explains the model that predicted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .backbones import Backbone, rebuild_backbone
from .images import load_image
from .model_io import TrainedModel


def backbone_for(model: TrainedModel) -> Backbone:
    """The model's own backbone, rebuilt from its recorded identity (hash-checked)."""
    return rebuild_backbone(model.backbone, model.backbone_state)


def grad_cam(model: TrainedModel, image: np.ndarray, findings: list[str], *,
             backbone: Backbone | None = None) -> dict[str, np.ndarray]:
    """Maps for ``findings`` on one decoded gray image (H, W) in [0, 1].

    Returns {finding: (H, W) float32 map in [0, 1]} at the image's own resolution.
    """
    backbone = backbone or backbone_for(model)
    index = {n: j for j, n in enumerate(model.label_names)}
    # The backbone is frozen; asking for the input gradient builds the graph through it.
    x = backbone.preprocessing(image).unsqueeze(0).requires_grad_(True)
    net = model.estimator.net_
    out = {}
    with torch.enable_grad():
        feats, fmap = backbone.forward_with_map(x)
        if fmap.ndim != 4:
            raise ValueError(f"backbone '{backbone.config.name}' gives no spatial map for Grad-CAM")
        logits, _ = net(feats)
        for name in findings:
            (grad,) = torch.autograd.grad(logits[0, index[name]], fmap, retain_graph=True)
            weights = grad.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * fmap).sum(1, keepdim=True))
            cam = F.interpolate(cam, size=image.shape, mode="bilinear", align_corners=False)[0, 0]
            cam = cam.detach().numpy()
            top = cam.max()
            out[name] = (cam / top if top > 0 else cam).astype(np.float32)
    return out


def peak(cam: np.ndarray) -> tuple[int, int]:
    """(row, col) of the map's maximum."""
    r, c = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return int(r), int(c)


def save_overlay(image: np.ndarray, cam: np.ndarray, path: str | Path, title: str = "") -> Path:
    """The radiograph in gray with the map in colour on top, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    ax.imshow(cam, cmap="jet", alpha=0.35, vmin=0, vmax=1)
    r, c = peak(cam)
    ax.plot([c], [r], "w+", ms=14, mew=2)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def cam_for_files(model: TrainedModel, paths, out_dir: str | Path, *, probabilities=None) -> list[Path]:
    """Overlays for each image's findings above threshold (its top finding when none is)."""
    backbone = backbone_for(model)
    written = []
    for i, p in enumerate(paths):
        image = load_image(p)
        if probabilities is not None:
            prob = np.asarray(probabilities[i])
            chosen = [n for j, n in enumerate(model.label_names) if prob[j] >= model.thresholds[j]]
            chosen = chosen or [model.label_names[int(np.argmax(prob))]]
        else:
            chosen = list(model.label_names)
        for name, cam in grad_cam(model, image, chosen, backbone=backbone).items():
            written.append(save_overlay(image, cam, Path(out_dir) / f"{Path(p).stem}_{name}.png",
                                        title=f"{Path(p).name}: {name}"))
    return written
