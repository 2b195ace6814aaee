"""The :class:`Backbone` module: a frozen trunk, its pooling and its identity."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..errors import BackboneError
from ..preprocess import Preprocessing
from ..settings import POOLINGS
from .identity import BackboneIdentity
from .registry import BackboneConfig
from .weights import weights_sha256

# The package's logger, by the name it had before backbones became a package.
log = logging.getLogger("medxfer.backbones")


class Backbone(nn.Module):
    """A frozen feature extractor: (B, 3, S, S) normalized images -> (B, feature_dim).

    ``blocks`` lists the trunk's blocks in forward order so that :meth:`unfreeze_last`
    can open the last few for partial fine-tuning.

    The trunk may return a (B, C, h, w) map, a channels-last (B, h, w, C) map (Swin and
    other transformers) or a (B, C) vector. ``channels_last`` says which of the two map
    layouts it uses (and its stage outputs); None detects it: ``width``, the trunk's
    channel count when known (e.g. the input width of the classifier it came from), is
    matched against the last axis, otherwise a map whose axes 1 and 2 are equal and axis
    3 differs is read as channels-last (inputs are square, so h == w). A registered
    ``feature_dim`` that the pooled features do not match raises :class:`BackboneError`.
    """

    def __init__(self, config: BackboneConfig, trunk: nn.Module, blocks: list[nn.Module],
                 stage_ends: list[nn.Module], *, input_size: int, pooling: str,
                 weights_path: Path | None, channels_last: bool | None = None,
                 width: int | None = None):
        super().__init__()
        self.config = config
        self.trunk = trunk
        self.blocks = blocks
        self.pooling = pooling
        self.weights_path = weights_path
        self.finetuned_sha256: str | None = None  # set when fine-tuned weights are loaded
        self.preprocessing = Preprocessing(input_size, config.mean, config.std)
        self._captured: list[torch.Tensor] = []
        if pooling == "multistage":
            for m in stage_ends:
                m.register_forward_hook(lambda _m, _i, out: self._captured.append(out))
        self.requires_grad_(False)
        self.eval()
        self.channels_last = False
        with torch.inference_mode():
            self._captured = []
            raw = trunk(torch.zeros(1, 3, input_size, input_size))
            if raw.ndim == 4:
                self.channels_last = (_looks_channels_last(tuple(raw.shape), width)
                                      if channels_last is None else bool(channels_last))
                if self.channels_last:
                    log.debug("backbone '%s' gives channels-last maps %s; permuting them",
                              config.name, tuple(raw.shape))
            elif raw.ndim != 2:
                raise BackboneError(
                    f"backbone '{config.name}' returns a tensor of shape {tuple(raw.shape)}; "
                    "medxfer needs a (B, C, h, w) or (B, h, w, C) map or a (B, C) vector "
                    "(token sequences are not pooled); use a registered backbone")
            self.feature_dim = int(self._pool(raw)[0].shape[1])
        if config.feature_dim and pooling == "avg" and self.feature_dim != config.feature_dim:
            raise BackboneError(
                f"backbone '{config.name}' gives {self.feature_dim}-wide features, but its "
                f"registry entry says {config.feature_dim} (feature map of shape "
                f"{tuple(raw.shape)}); the trunk's output layout is not understood, so "
                "medxfer refuses rather than pool the wrong axes")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_map(x)[0]

    def _nchw(self, t: torch.Tensor) -> torch.Tensor:
        return t.permute(0, 3, 1, 2) if self.channels_last and t.ndim == 4 else t

    def forward_with_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, d) and the last stage's feature map (B, C, h, w) they pool (of a
        concatenation: its first member's)."""
        feats, maps = self.forward_with_maps(x)
        return feats, maps[0]

    def forward_with_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Features (B, d) and the last stage's feature map of this backbone, or of every
        member of a concatenation, in member order (Grad-CAM of the whole feature vector)."""
        self._captured = []
        feats, fmap = self._pool(self.trunk(x))
        members_maps = getattr(self.trunk, "last_maps", None)
        return feats, list(members_maps) if members_maps else [fmap]

    def _pool(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self._nchw(raw)
        pooled = fmap.mean(dim=(2, 3)) if fmap.ndim == 4 else fmap
        if self.pooling == "multistage":
            stages = [self._nchw(t).mean(dim=(2, 3)) for t in self._captured[:-1]]
            pooled = torch.cat(stages + [pooled], dim=1)
        return pooled, fmap

    def unfreeze_last(self, n: int) -> list[nn.Parameter]:
        """Make the last ``n`` blocks trainable; returns their parameters."""
        if self.config.members and n:
            raise BackboneError(f"'{self.config.name}' concatenates backbones for frozen "
                                "features; fine-tune one backbone (e.g. its first member)")
        if n < 0 or n > len(self.blocks):
            raise BackboneError(f"cannot unfreeze {n} blocks: '{self.config.name}' has "
                                f"{len(self.blocks)} (use 0..{len(self.blocks)})")
        params: list[nn.Parameter] = []
        for block in self.blocks[len(self.blocks) - n:]:
            block.requires_grad_(True)
            params.extend(block.parameters())
        return params

    def identity(self) -> BackboneIdentity:
        """Everything about this backbone that changes the features it computes (every
        member's too, for a concatenation)."""
        return BackboneIdentity(
            name=self.config.name, weights_sha256=weights_sha256(self.weights_path),
            pooling=self.pooling, feature_dim=self.feature_dim,
            preprocessing=self.preprocessing.as_dict(), finetuned_sha256=self.finetuned_sha256,
            members=tuple(m.identity() for m in self.trunk.members) if self.config.members else ())


def _looks_channels_last(shape: tuple[int, ...], width: int | None) -> bool:
    """Whether a 4-D map from a square input is (B, h, w, C) rather than (B, C, h, w)."""
    _, a, b, c = shape
    if width:
        if a == width:
            return False
        if c == width:
            return True
    return a == b and b != c
