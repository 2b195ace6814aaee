"""The backbone registry: one frozen :class:`BackboneConfig` per name.

Family modules (``lite``, ``torchvision_family``, ``tiny``, ...) register their entries at
import with :func:`register_backbone`; names built on the fly (``a+b``,
``torchvision:ARCH``, ``timm:NAME``) are resolved by functions those modules register with
:func:`register_resolver`. This module imports none of them, so it never imports a family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..errors import BackboneError, unknown_name_message

if TYPE_CHECKING:
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Builder(Protocol):
    """What a registry entry's ``builder`` is: ``builder(path, size)`` builds the network.

    ``path`` is the weights file to load (None for an entry with ``pretrained=False``) and
    ``size`` the square input side in pixels. It returns ``(trunk, blocks, stage_ends)`` and
    optionally a fourth item, a dict of layout hints passed on to :class:`Backbone`:
    ``{"channels_last": bool, "width": int}`` (None for either means: detect it).

    ``trunk`` maps a (B, 3, S, S) batch to a (B, C, h, w) or (B, h, w, C) map or a (B, C)
    vector; ``blocks`` are its blocks in forward order (what ``unfreeze_last`` opens);
    ``stage_ends`` are the modules whose outputs multistage pooling averages.
    """

    def __call__(self, path: Path | None, size: int) -> (
            tuple[nn.Module, list[nn.Module], list[nn.Module]]
            | tuple[nn.Module, list[nn.Module], list[nn.Module], dict]): ...


@dataclass(frozen=True)
class BackboneConfig:
    name: str
    architecture: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int
    weights: str  # where the weights come from, in words
    license: str
    pretrained: bool = True
    builder: Builder = field(default=None, repr=False, compare=False)
    locate_weights: Callable[[], Path | None] = field(default=None, repr=False, compare=False)
    weights_hint: str = ""
    members: tuple[str, ...] = ()  # a concatenation of these backbones ("a+b")

    def describe(self) -> dict:
        path = self.locate_weights() if self.locate_weights else None
        return {"name": self.name, "architecture": self.architecture,
                "input_size": self.input_size, "feature_dim": self.feature_dim,
                "mean": list(self.mean), "std": list(self.std), "weights": self.weights,
                "license": self.license, "pretrained": self.pretrained,
                "weights_available": (not self.pretrained) or path is not None,
                "weights_path": str(path) if path else None}


_REGISTRY: dict[str, BackboneConfig] = {}
# (matches, resolve) for names that are built, not registered; tried in registration order,
# so the package imports concat first: 'torchvision:x+y' is a concatenation.
_RESOLVERS: list[tuple[Callable[[str], bool], Callable[[str], BackboneConfig]]] = []


def register_backbone(config: BackboneConfig) -> BackboneConfig:
    if config.name in _REGISTRY:
        raise BackboneError(f"backbone '{config.name}' is registered twice")
    _REGISTRY[config.name] = config
    return config


def register_resolver(matches: Callable[[str], bool],
                      resolve: Callable[[str], BackboneConfig]) -> None:
    """Have :func:`get_backbone_config` build the entry of any unregistered name that
    ``matches`` with ``resolve(name)``."""
    _RESOLVERS.append((matches, resolve))


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def get_backbone_config(name: str) -> BackboneConfig:
    """The registry entry; ``torchvision:ARCH`` and ``timm:NAME`` build one on the fly."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    for matches, resolve in _RESOLVERS:
        if matches(name):
            return resolve(name)
    raise BackboneError(unknown_name_message("backbone", name, _REGISTRY)
                        + " Any torchvision model also works as 'torchvision:ARCH', any timm "
                          "model as 'timm:NAME' (both with local weights).")
