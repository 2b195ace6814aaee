"""Building backbones: :func:`create_backbone` from a registry name and
:func:`rebuild_backbone` from the identity a model recorded."""

from __future__ import annotations

from pathlib import Path

from ..errors import BackboneError, ModelError, unknown_name_message
from ..settings import POOLINGS
from .concat import Concat
from .identity import BackboneIdentity
from .module import Backbone
from .registry import get_backbone_config
from .weights import check_weights, state_sha256


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
        trunk = Concat([create_backbone(m, pooling=pooling) for m in config.members])
        return Backbone(config, trunk, [], [], input_size=size, pooling=pooling, weights_path=None)
    path: Path | None = None
    if config.pretrained:
        path = Path(weights) if weights else config.locate_weights()
        if path is None or not path.is_file():
            where = f"'{weights}' does not exist. " if weights else ""
            raise BackboneError(
                f"No weights for backbone '{name}'. {where}{config.weights_hint} "
                "medxfer never falls back to random weights.")
    # (trunk, blocks, stage_ends[, layout hints for Backbone]): see registry.Builder.
    trunk, blocks, stage_ends, *hints = config.builder(path, size)
    return Backbone(config, trunk, blocks, stage_ends, input_size=size, pooling=pooling,
                    weights_path=path, **(hints[0] if hints else {}))


def rebuild_backbone(identity: BackboneIdentity | dict, state: dict | None = None, *,
                     weights: str | Path | None = None) -> Backbone:
    """The backbone a model was trained with, from the identity recorded in its folder
    (:meth:`Backbone.identity`: name, weights_sha256, pooling, feature_dim,
    preprocessing, and finetuned_sha256 when fine-tuned).

    The weights found on this machine (or ``weights``) must have the recorded sha256, and
    a fine-tuned ``state`` the recorded finetuned_sha256; both are loaded and checked
    before any feature is computed. Raises :class:`ModelError` on any difference, and
    :class:`BackboneError` when the backbone cannot be built at all.
    """
    identity = BackboneIdentity.from_dict(identity)
    name = identity.name
    pre = identity.preprocessing or {}
    config = get_backbone_config(name)
    expected = identity.weights_sha256
    path = Path(weights) if weights else (config.locate_weights() if config.locate_weights
                                          else None)
    check_weights(f"'{name}'", path, expected)  # before the (slow) build
    for rec in identity.members:  # a concatenation: each member's weights
        mc = get_backbone_config(rec.name)
        check_weights(f"'{rec.name}' (member of '{name}')",
                      mc.locate_weights() if mc.locate_weights else None, rec.weights_sha256)
    finetuned = identity.finetuned_sha256
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
                         pooling=identity.pooling or "avg")
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
    recorded_dim = identity.feature_dim
    if recorded_dim is not None and int(recorded_dim) != bb.feature_dim:
        raise ModelError(f"backbone '{name}' gives {bb.feature_dim}-wide features here, but the "
                         f"model was trained on {recorded_dim}-wide ones")
    return bb
