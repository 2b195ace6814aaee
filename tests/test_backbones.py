import pytest
import torch

from medxfer.backbones import create_backbone, get_backbone_config, list_backbones
from medxfer.errors import BackboneError

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
    assert bb.identity()["weights_sha256"] == (None if not cfg.pretrained else bb.identity()["weights_sha256"])


def test_real_pretrained_lite0_features_are_real():
    bb = create_backbone("efficientnet_lite0")
    assert bb.weights_path is not None and bb.weights_path.name.startswith("efficientnet-lite0")
    assert len(bb.identity()["weights_sha256"]) == 64
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
