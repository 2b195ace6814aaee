"""Any timm model as ``timm:NAME``, from a local weights file (needs the timm extra)."""

from __future__ import annotations

from pathlib import Path

from ..errors import BackboneError, unknown_name_message
from .registry import IMAGENET_MEAN, IMAGENET_STD, BackboneConfig, register_resolver
from .weights import load_state


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
            state = load_state(path)
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


register_resolver(lambda name: name.startswith("timm:"),
                  lambda name: _timm_config(name.split(":", 1)[1]))
