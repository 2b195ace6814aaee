"""Pretrained image backbones that work offline, behind one registry.

Each entry is a frozen :class:`BackboneConfig` (architecture, input size, normalization,
feature width, where its weights come from, license). :func:`create_backbone` returns a
:class:`Backbone`: a frozen module in eval mode mapping a (B, 3, S, S) batch to (B, d)
features. Unknown names and missing weights raise :class:`BackboneError` with the fix.
Nothing falls back to random weights; ``tiny_random_test`` is random on purpose, for tests.
:func:`rebuild_backbone` recreates the backbone a model was trained with from its recorded
:meth:`Backbone.identity`, checking weights and fine-tuned state by sha256.

The package: ``registry`` (entries, the :class:`~.registry.Builder` contract, name
lookup), ``module`` (:class:`Backbone`), ``identity`` (:class:`BackboneIdentity`, the one
way two backbones are compared), ``weights`` (hashes, loading, checks), ``build``
(create/rebuild), ``concat`` (``a+b``) and one module per family, each registering its
entries when imported here.
"""

from __future__ import annotations

from .registry import (IMAGENET_MEAN, IMAGENET_STD, BackboneConfig, get_backbone_config,
                       list_backbones, register_backbone)
from .identity import BackboneIdentity
from .weights import state_sha256, weights_sha256
from ..settings import POOLINGS
from .module import Backbone
from .build import create_backbone, rebuild_backbone
# Importing these registers their entries and name resolvers. The order matters: 'a+b'
# (concat) is resolved before the 'torchvision:' and 'timm:' prefixes, so 'torchvision:x+y'
# is a concatenation, and the entries keep the order they always had.
from . import concat, lite, torchvision_family, tiny, timm_family  # noqa: F401
from .lite import TF_LITE_MEAN, TF_LITE_STD

__all__ = ["Backbone", "BackboneConfig", "BackboneIdentity", "create_backbone", "rebuild_backbone",
           "get_backbone_config", "list_backbones", "register_backbone", "state_sha256",
           "weights_sha256", "POOLINGS", "IMAGENET_MEAN", "IMAGENET_STD", "TF_LITE_MEAN",
           "TF_LITE_STD"]
