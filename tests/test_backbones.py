import dataclasses
import hashlib

import pytest
import torch
from torch import nn

from medxfer.backbones import (Backbone, create_backbone, get_backbone_config, list_backbones,
                               rebuild_backbone, state_sha256)
from medxfer.errors import BackboneError, ModelError

AVAILABLE = [n for n in list_backbones() if get_backbone_config(n).describe()["weights_available"]]


def test_default_backbones_are_available_offline():
    # The packages the Makefile installs carry these weights; nothing is downloaded.
    for name in ("efficientnet_lite0", "tiny_random_test"):
        assert name in AVAILABLE


@pytest.mark.parametrize("name", AVAILABLE)
def test_backbone_contract(name):
    bb = create_backbone(name)
    cfg = get_backbone_config(name)
    size = bb.preprocessing.size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b = bb(x), bb(x)
    assert a.shape == (2, cfg.feature_dim) == (2, bb.feature_dim)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)  # deterministic
    assert not bb.training
    assert not any(p.requires_grad for p in bb.parameters())  # frozen
    # recomputed here from the file the registry locates, not by medxfer's (memoized) hash
    want = hashlib.sha256(cfg.locate_weights().read_bytes()).hexdigest() if cfg.pretrained else None
    assert bb.identity().weights_sha256 == want


def test_real_pretrained_lite0_features_are_real():
    bb = create_backbone("efficientnet_lite0")
    assert bb.weights_path is not None and bb.weights_path.name.startswith("efficientnet-lite0")
    assert len(bb.identity().weights_sha256) == 64
    x = torch.zeros(1, 3, 224, 224)
    with torch.inference_mode():
        f1 = bb(x)
        f2 = create_backbone("efficientnet_lite0")(x)
    assert f1.shape == (1, 1280)
    assert torch.equal(f1, f2)  # same weights, same numbers, across instances
    # ImageNet weights, not random: ReLU6 features are bounded and not all equal
    assert float(f1.min()) >= 0 and float(f1.max()) <= 6 and float(f1.std()) > 0


def test_input_size_and_multistage_pooling():
    bb = create_backbone("efficientnet_lite0", input_size=256, pooling="multistage")
    assert bb.preprocessing.size == 256
    with torch.inference_mode():
        out = bb(torch.zeros(1, 3, 256, 256))
    assert out.shape == (1, bb.feature_dim) and bb.feature_dim > 1280


def test_unknown_name_suggests():
    with pytest.raises(BackboneError, match=r"Unknown backbone 'efficientnet_lite9'\. Did you mean 'efficientnet_lite[0-2]'\? Available: "):
        create_backbone("efficientnet_lite9")


def test_missing_weights_say_what_to_get(tmp_path):
    with pytest.raises(BackboneError, match=r"No weights for backbone 'densenet121'\. '.*nope\.pth' does not exist\. Get torchvision's file densenet121-a639ec97\.pth"):
        create_backbone("densenet121", weights=tmp_path / "nope.pth")


def test_unfreeze_last_blocks():
    bb = create_backbone("tiny_random_test")
    params = bb.unfreeze_last(1)
    assert params and all(p.requires_grad for p in params)
    assert not any(p.requires_grad for p in bb.blocks[0].parameters())
    with pytest.raises(BackboneError, match="cannot unfreeze 9 blocks"):
        bb.unfreeze_last(9)


def test_any_torchvision_model_from_a_local_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet18()
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    bb = create_backbone("torchvision:resnet18", weights=tmp_path / "r18.pth")
    ref.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(bb(x), ref.eval()(x))
    with pytest.raises(BackboneError, match=r"Unknown torchvision model 'resnet19'\. Did you mean"):
        create_backbone("torchvision:resnet19")


def test_timm_model_from_a_local_file(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    m = timm.create_model("resnet18", pretrained=False)
    torch.save(m.state_dict(), tmp_path / "w.pth")
    bb = create_backbone("timm:resnet18", weights=tmp_path / "w.pth")
    m.reset_classifier(0)
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(bb(x), m.eval()(x))
    with pytest.raises(BackboneError, match=r"No weights for backbone 'timm:resnet18'.*--weights PATH"):
        create_backbone("timm:resnet18")


def _tiny_swin(arch=None, weights=None):
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                           window_size=[4, 4], num_classes=10)


def test_swin_channels_last_features_are_its_own_pooled_features(tmp_path, monkeypatch):
    # torchvision's Swin trunk gives (N, h, w, C) maps; pooling axes (2, 3) of those used to
    # give h-wide "features". A tiny Swin stands in for swin_t (same class, same code path).
    import torchvision

    monkeypatch.setattr(torchvision.models, "get_model", _tiny_swin)
    ref = _tiny_swin()
    torch.save(ref.state_dict(), tmp_path / "swin.pth")
    bb = create_backbone("torchvision:swin_t", weights=tmp_path / "swin.pth", input_size=64)
    assert bb.channels_last and bb.feature_dim == 32  # the classifier's width, not h = 8
    ref.head = nn.Identity()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        feats, fmap = bb.forward_with_map(x)
        torch.testing.assert_close(feats, ref.eval()(x))  # norm included, right axes pooled
    assert fmap.shape == (2, 32, 8, 8)  # (B, C, h, w) for Grad-CAM
    multi = create_backbone("torchvision:swin_t", weights=tmp_path / "swin.pth", input_size=64,
                            pooling="multistage")
    with torch.inference_mode():
        out = multi(x)
    # stage widths 16 (embedding), 16 (stage 1), 32 (merging), 32 (stage 2, the map)
    assert out.shape == (2, 16 + 16 + 32 + 32)


class _ChannelsLast(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 24, 8, stride=8)

    def forward(self, x):
        return self.conv(x).permute(0, 2, 3, 1)  # (B, 8, 8, 24) for 64-pixel inputs


def _backbone(trunk, feature_dim=0, **hints):
    cfg = dataclasses.replace(get_backbone_config("tiny_random_test"), name="fake",
                              feature_dim=feature_dim)
    return Backbone(cfg, trunk, [trunk], [trunk], input_size=64, pooling="avg",
                    weights_path=None, **hints)


def test_any_channels_last_trunk_is_detected_or_refused():
    trunk = _ChannelsLast()
    bb = _backbone(trunk)  # detected from the shape: inputs are square, so h == w
    assert bb.channels_last and bb.feature_dim == 24
    assert _backbone(trunk, width=24).feature_dim == 24
    with pytest.raises(BackboneError, match=r"gives 8-wide features, but its registry entry "
                                            r"says 24 .*refuses"):
        _backbone(trunk, feature_dim=24, channels_last=False)

    class Tokens(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 49, 24)

    with pytest.raises(BackboneError, match=r"returns a tensor of shape \(1, 49, 24\)"):
        _backbone(Tokens())


# What each family module of medxfer.backbones registers when the package is imported.
FAMILIES = {
    "lite": {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"},
    "torchvision_family": {"mobilenet_v2", "densenet121", "resnet18", "resnet50", "convnext_tiny",
                           "efficientnet_b0"},
    "tiny": {"tiny_random_test"},
}


def test_each_family_module_registers_what_it_says():
    import pkgutil
    import sys

    import medxfer.backbones as backbones

    modules = [m.name for m in pkgutil.iter_modules(backbones.__path__)]
    assert set(FAMILIES) <= set(modules)
    by_module: dict[str, set[str]] = {}
    for name in list_backbones():
        by_module.setdefault(get_backbone_config(name).builder.__module__, set()).add(name)
    for mod in modules:  # every file is imported by the package; only families register
        assert f"medxfer.backbones.{mod}" in sys.modules
        assert by_module.pop(f"medxfer.backbones.{mod}", set()) == FAMILIES.get(mod, set()), mod
    assert not by_module  # nothing registered from outside the package
    assert set(list_backbones()) == set().union(*FAMILIES.values())
    # built, not registered: 'a+b' is tried before the prefixes
    assert get_backbone_config("torchvision:resnet18+tiny_random_test").members == (
        "torchvision:resnet18", "tiny_random_test")
    assert get_backbone_config("torchvision:resnet18").builder.__module__ == "medxfer.backbones.torchvision_family"


def test_state_sha256_is_the_recorded_hash():
    state = {"b": torch.arange(3, dtype=torch.float32), "a": torch.ones(2, 2)}
    h = hashlib.sha256()
    for k in ("a", "b"):
        h.update(k.encode())
        h.update(state[k].numpy().tobytes())
    assert state_sha256(state) == h.hexdigest()


def _fake_pretrained(monkeypatch, weights_file):
    """A registered 'pretrained' entry whose weights are a small local file."""
    import medxfer.backbones.registry as backbones

    tiny = get_backbone_config("tiny_random_test")

    def build(path, size):
        trunk, blocks, stages = tiny.builder(None, size)
        trunk.load_state_dict(torch.load(path, weights_only=True))
        return trunk, blocks, stages

    cfg = dataclasses.replace(tiny, name="fake_pretrained", pretrained=True, builder=build,
                              locate_weights=lambda: weights_file)
    monkeypatch.setitem(backbones._REGISTRY, "fake_pretrained", cfg)


def test_rebuild_backbone_from_identity_checks_the_weights(tmp_path, monkeypatch):
    trunk = get_backbone_config("tiny_random_test").builder(None, 64)[0]
    torch.save(trunk.state_dict(), tmp_path / "w.pth")
    _fake_pretrained(monkeypatch, tmp_path / "w.pth")
    bb = create_backbone("fake_pretrained", input_size=96, pooling="multistage")
    identity = bb.identity()
    again = rebuild_backbone(identity)
    assert again.identity() == identity and again.pooling == "multistage"
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(again(x), bb(x))
    # Other weights on this machine than the model was trained with:
    with torch.no_grad():
        next(trunk.parameters()).add_(1e-3)
    torch.save(trunk.state_dict(), tmp_path / "w.pth")
    with pytest.raises(ModelError, match=r"the weights of backbone 'fake_pretrained' on this "
                       r"machine \(.*w\.pth\) differ from those the model was trained with "
                       r"\(sha256 mismatch\); install the same weights package version"):
        rebuild_backbone(identity)


def test_rebuild_backbone_refuses_a_tampered_weights_hash_before_building():
    cfg = get_backbone_config("efficientnet_lite0")
    identity = {"name": "efficientnet_lite0", "weights_sha256": "0" * 64, "pooling": "avg",
                "feature_dim": 1280, "preprocessing": {"size": 224}}
    with pytest.raises(ModelError, match=r"the weights of backbone 'efficientnet_lite0' on this "
                       r"machine \(.*\) differ from those the model was trained with \(sha256 "
                       r"mismatch\); install the same weights package version"):
        rebuild_backbone(identity)
    assert cfg.locate_weights() is not None


def test_rebuild_backbone_loads_and_checks_a_finetuned_state():
    bb = create_backbone("tiny_random_test")
    state = {k: v.clone() for k, v in bb.state_dict().items()}
    first = next(iter(state))
    state[first] += 0.5  # "fine-tuned"
    bb.load_state_dict(state)
    identity = bb.identity().as_dict() | {"finetuned_sha256": state_sha256(state)}
    again = rebuild_backbone(identity, state)
    assert again.finetuned_sha256 == identity["finetuned_sha256"]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(again(x), bb(x))
    bad = {k: v.clone() for k, v in state.items()}
    bad[first] += 1e-3
    with pytest.raises(ModelError, match=r"fine-tuned weights of backbone 'tiny_random_test' "
                       r"differ from those the model recorded \(sha256 mismatch\)"):
        rebuild_backbone(identity, bad)
    with pytest.raises(ModelError, match="no fine-tuned state was given"):
        rebuild_backbone(identity)
    with pytest.raises(ModelError, match="records no fine-tuning"):
        rebuild_backbone(create_backbone("tiny_random_test").identity(), state)


@pytest.mark.slow
def test_a_concatenation_of_backbones_is_one_backbone(make_cxr14, sample_table, tmp_path, capsys):
    """`--backbone a+b`: each member sees the image at its own size and normalization, the
    features are the members' side by side; the model folder names every member's weights,
    so predict, Grad-CAM and the onnxruntime engine work as for one backbone, and a changed
    member's weights are refused."""
    import numpy as np

    from medxfer.cli import main
    from medxfer.features import FeatureSet
    from medxfer.images import load_image
    from medxfer.model_io import TrainedModel

    bb = create_backbone("efficientnet_lite0+tiny_random_test", pooling="multistage")
    a, b = (create_backbone(n, pooling="multistage") for n in ("efficientnet_lite0", "tiny_random_test"))
    assert bb.feature_dim == a.feature_dim + b.feature_dim
    assert bb.preprocessing.size == max(a.preprocessing.size, b.preprocessing.size)
    gray = np.random.default_rng(0).random((300, 280)).astype(np.float32)
    x = bb.preprocessing(gray).unsqueeze(0)
    with torch.no_grad():
        got = bb(x)
        xb = nn.functional.interpolate(x, size=(b.preprocessing.size,) * 2, mode="bilinear", align_corners=False)
        mean, std = torch.tensor(b.preprocessing.mean).view(1, 3, 1, 1), torch.tensor(b.preprocessing.std).view(1, 3, 1, 1)
        want = torch.cat([a(a.preprocessing(bb.preprocessing.resize(gray)).unsqueeze(0)), b((xb - mean) / std)], 1)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert [m.name for m in bb.identity().members] == ["efficientnet_lite0", "tiny_random_test"]

    root = make_cxr14(sample_table["image_id"][:30].tolist())
    name = "efficientnet_lite0+tiny_random_test"
    for eng in ("torch", "onnxruntime"):
        assert main(["-q", "extract", str(root), "--backbone", name, "--engine", eng, "--out", str(tmp_path / eng)]) == 0
    ft, fo = FeatureSet.load(tmp_path / "torch"), FeatureSet.load(tmp_path / "onnxruntime")
    assert ft.X.shape == (30, bb.feature_dim) and fo.manifest["engine"] == "onnxruntime"
    assert np.abs(ft.X - fo.X).max() <= 0.01 * np.abs(ft.X).max()
    assert main(["-q", "train", str(tmp_path / "torch"), "--out", str(tmp_path / "m"), "--no-select", "--max-iter", "50"]) == 0
    img = sorted((root / "images").glob("*.png"))[0]
    capsys.readouterr()
    assert main(["-q", "predict", str(tmp_path / "m"), str(img), "--cam", str(tmp_path / "cam"), "--json"]) == 0
    assert list((tmp_path / "cam").glob("*.png"))
    from medxfer.cam import grad_cam
    model = TrainedModel.load(tmp_path / "m")
    maps = grad_cam(model, load_image(img), model.label_names[:1])
    assert maps[model.label_names[0]].shape == load_image(img).shape
    # one member's weights changed since training: refused, naming the member
    ident = dict(model.backbone)
    ident["members"] = [dict(ident["members"][0], weights_sha256="0" * 64), ident["members"][1]]
    with pytest.raises(ModelError, match="member of"):
        rebuild_backbone(ident)
    assert main(["-q", "export", str(tmp_path / "m"), "--onnx", str(tmp_path / "m.onnx")]) == 0
    with pytest.raises(BackboneError, match="fine-tune one backbone"):
        create_backbone(name).unfreeze_last(1)
    capsys.readouterr()
    assert main(["-q", "finetune", str(root), "--backbone", name, "--out", str(tmp_path / "ft"),
                 "--device", "cpu", "--max-steps", "1"]) == 2
    assert "fine-tune one network" in capsys.readouterr().err
    with pytest.raises(BackboneError, match="its own input size"):
        create_backbone(name, input_size=320)
    with pytest.raises(BackboneError, match="names a backbone twice"):
        create_backbone("tiny_random_test+tiny_random_test")
    with pytest.raises(BackboneError, match="Unknown backbone|unknown backbone"):
        create_backbone("efficientnet_lite0+nope")
