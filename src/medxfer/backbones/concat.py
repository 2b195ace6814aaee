"""Several backbones as one (``a+b``): the :class:`Concat` trunk and the entry
:func:`concat_config` builds for such a name."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import BackboneError
from .registry import BackboneConfig, get_backbone_config, register_resolver


class Concat(nn.Module):
    """Trunk of a concatenation: the (B, 3, S, S) gray image in [0, 1] (the composite's
    preprocessing does not normalize; S is the largest member's size) is resized bilinearly,
    without antialiasing, to each smaller member's input size, normalized with the member's
    mean and std, and the members' pooled features are concatenated. A smaller member's
    features therefore differ slightly from that backbone extracted alone (which resizes the
    original image once). ``last_maps`` keeps every member's last feature map of the latest
forward pass (Grad-CAM)."""

    def __init__(self, members: list):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.last_maps: list[torch.Tensor] = []
        for i, m in enumerate(members):
            self.register_buffer(f"mean_{i}", torch.tensor(m.preprocessing.mean).view(1, 3, 1, 1))
            self.register_buffer(f"std_{i}", torch.tensor(m.preprocessing.std).view(1, 3, 1, 1))

    def forward(self, x):
        out, maps = [], []
        for i, m in enumerate(self.members):
            size = m.preprocessing.size
            xi = x if x.shape[-1] == size else nn.functional.interpolate(
                x, size=(size, size), mode="bilinear", align_corners=False)
            xi = (xi - getattr(self, f"mean_{i}")) / getattr(self, f"std_{i}")
            feats, fmap = m.forward_with_map(xi)
            maps.append(fmap)
            out.append(feats)
        self.last_maps = maps
        return torch.cat(out, dim=1)


def concat_config(name: str) -> BackboneConfig:
    parts = [p.strip() for p in name.split("+")]
    if len(parts) < 2 or not all(parts):
        raise BackboneError(f"'{name}': a concatenation names two or more backbones joined by "
                            "'+', e.g. efficientnet_lite2+mobilenet_v2")
    if len(set(parts)) != len(parts):
        raise BackboneError(f"'{name}' names a backbone twice")
    configs = [get_backbone_config(p) for p in parts]
    missing = [c.name for c in configs if c.pretrained and (c.locate_weights is None or c.locate_weights() is None)]
    return BackboneConfig(
        name="+".join(parts), architecture=" + ".join(c.architecture for c in configs),
        input_size=max(c.input_size for c in configs), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
        feature_dim=0, weights="; ".join(c.weights for c in configs),
        license=", ".join(dict.fromkeys(c.license for c in configs)), pretrained=False,
        weights_hint=" ".join(c.weights_hint for c in configs if c.name in missing),
        members=tuple(parts))


register_resolver(lambda name: "+" in name, concat_config)
