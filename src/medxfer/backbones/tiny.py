"""``tiny_random_test``: a 3-layer CNN with random weights (seed 0), for fast tests only."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .registry import BackboneConfig, register_backbone


def _build_tiny(path: Path | None, size: int):
    gen = torch.Generator().manual_seed(0)
    convs = [nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Conv2d(8, 16, 3, stride=2, padding=1),
             nn.Conv2d(16, 32, 3, stride=2, padding=1)]
    for c in convs:
        with torch.no_grad():
            c.weight.copy_(torch.randn(c.weight.shape, generator=gen) * 0.3)
            c.bias.zero_()
    blocks = [nn.Sequential(c, nn.ReLU()) for c in convs]
    return nn.Sequential(*blocks), blocks, blocks


register_backbone(BackboneConfig(
    name="tiny_random_test", architecture="3-layer CNN, random weights (seed 0)",
    input_size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), feature_dim=32,
    weights="none: random, for fast tests only", license="n/a", pretrained=False,
    builder=_build_tiny,
))
