"""One backbone identity, compared one way: every member of a concatenation is checked."""

import json
import shutil

import pytest

from medxfer.backbones import BackboneIdentity, create_backbone
from medxfer.cli import main
from medxfer.errors import ModelError


def _concat(lite="aa" * 32, mobile="bb" * 32) -> dict:
    pre = {"size": 260, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear"}
    return BackboneIdentity(
        name="efficientnet_lite2+mobilenet_v2", pooling="multistage", feature_dim=32,
        preprocessing=pre,
        members=(BackboneIdentity("efficientnet_lite2", lite, "multistage", 16, pre),
                 BackboneIdentity("mobilenet_v2", mobile, "multistage", 16, pre))).as_dict()


def test_identity_round_trips_and_names_member_differences():
    a = BackboneIdentity.from_dict(_concat())
    assert BackboneIdentity.from_dict(a.as_dict()) == a
    assert a.differences(_concat()) == []
    assert a.differences(_concat(mobile="cc" * 32)) == ["weights_sha256 of member 'mobilenet_v2'"]
    assert a.label == "efficientnet_lite2+mobilenet_v2 (multistage, 260 px)"
    assert a.weights_hashes == {"efficientnet_lite2": "aa" * 32, "mobilenet_v2": "bb" * 32}


def test_a_real_backbone_identity_is_what_the_cache_records():
    bb = create_backbone("tiny_random_test")
    ident = bb.identity()
    assert isinstance(ident, BackboneIdentity) and ident.feature_dim == 32
    assert ident.differences(bb.identity().as_dict()) == []
    assert ident.differences(create_backbone("tiny_random_test", pooling="multistage").identity()) \
        == ["pooling", "feature_dim"]


def test_evaluate_refuses_features_whose_member_weights_differ(tiny_trained, tmp_path, capsys):
    """The gap this type closes: a concatenation's own weights_sha256 is None, so only its
    members tell features made with other weights from the model's."""
    model, feats = tmp_path / "m", tmp_path / "f"
    shutil.copytree(tiny_trained / "m", model)
    shutil.copytree(tiny_trained / "f", feats)
    meta = json.loads((model / "model.json").read_text())
    meta["backbone"] = _concat()
    (model / "model.json").write_text(json.dumps(meta))
    man = json.loads((feats / "manifest.json").read_text())
    man["backbone"] = _concat(mobile="cc" * 32)
    (feats / "manifest.json").write_text(json.dumps(man))
    capsys.readouterr()
    assert main(["-q", "evaluate", str(model), str(feats), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "weights_sha256 of member 'mobilenet_v2'" in err and err.count("\n") == 1
    from medxfer.model_io import TrainedModel

    with pytest.raises(ModelError, match="member 'mobilenet_v2'"):
        TrainedModel.load(model).check_features(man)
    man["backbone"] = _concat()
    TrainedModel.load(model).check_features(man)  # the same members: accepted
