"""The whole model as one ONNX file: same probabilities as PyTorch on real images."""

import json

import numpy as np
import pytest
import torch

from medxfer.cli import main

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.mark.slow
def test_export_runs_in_onnxruntime_and_matches_pytorch(make_cxr14, sample_table, tmp_path, capsys):
    from medxfer.backbones import rebuild_backbone
    from medxfer.export import WholeModel, sample_inputs
    from medxfer.model_io import TrainedModel

    ids = sample_table["image_id"].tolist()
    root = make_cxr14(ids[:40])
    assert main(["-q", "extract", str(root), "--backbone", "efficientnet_lite0", "--pooling", "avg",
                 "--out", str(tmp_path / "f")]) == 0
    assert main(["-q", "train", str(tmp_path / "f"), "--out", str(tmp_path / "m"), "--inner-folds", "2"]) == 0
    capsys.readouterr()
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["-q", "export", str(tmp_path / "m"), "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert not [w for w in caught if "torch" in (w.filename or "")], [str(w.message) for w in caught]
    assert "onnxruntime matches PyTorch on 8 bundled sample images" in capsys.readouterr().out
    model = TrainedModel.load(tmp_path / "m")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["label_names"]) == list(model.label_names)
    np.testing.assert_allclose(json.loads(meta["thresholds"]), model.thresholds)
    assert meta["input_size"] == "224"
    # on images the model never saw, batch 1 and batch 3 (dynamic batch axis)
    mk = make_cxr14(ids[50:53], name="other")
    gray = sample_inputs(model, sorted((mk / "images").glob("*.png")))
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    out3 = sess.run(None, {"gray": gray})[0]
    out1 = sess.run(None, {"gray": gray[:1]})[0]
    np.testing.assert_allclose(out1, out3[:1], atol=1e-5)
    # PyTorch: the medxfer path (backbone features in float32, then the model's predict_proba)
    bb = rebuild_backbone(model.backbone)
    with torch.no_grad():
        feats = bb(torch.stack([bb.preprocessing.to_tensor(g[0]) for g in gray])).numpy()
    ref = model.predict_proba(feats)
    np.testing.assert_allclose(out3, ref, atol=1e-4)
    # the graph also gives the out-of-distribution score, medxfer's on the same features
    assert [o.name for o in proto.graph.output] == ["probabilities", "ood_score"]
    np.testing.assert_allclose(sess.run(None, {"gray": gray})[1], model.ood.score(feats), rtol=1e-3)
    assert meta["ood_threshold"] == str(model.ood.threshold) and "not a medical device" in meta["notice"]
    assert json.loads(meta["weights_sha256"]) == {"efficientnet_lite0": model.backbone["weights_sha256"]}
    with torch.no_grad():
        np.testing.assert_allclose(WholeModel(model)(torch.from_numpy(gray)).numpy(), ref, atol=1e-5)


@pytest.mark.slow
def test_onnxruntime_engine_gives_torchs_features(make_cxr14, sample_table, tmp_path, monkeypatch, capsys):
    """`--engine onnxruntime`: the backbone exported once (cached by its identity) and run in
    onnxruntime gives the same features as torch on real images, up to float16 rounding."""
    monkeypatch.setenv("MEDXFER_CACHE", str(tmp_path / "cache"))
    root = make_cxr14(sample_table["image_id"][:24].tolist())
    for eng in ("torch", "onnxruntime"):
        assert main(["-q", "extract", str(root), "--backbone", "efficientnet_lite0", "--pooling",
                     "multistage", "--engine", eng, "--out", str(tmp_path / eng)]) == 0
    from medxfer.features import FeatureSet

    a, b = FeatureSet.load(tmp_path / "torch"), FeatureSet.load(tmp_path / "onnxruntime")
    assert b.manifest["engine"] == "onnxruntime" and len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1
    diff = np.abs(a.X - b.X)
    assert diff.max() <= 0.01 * np.abs(a.X).max() and diff.mean() < 1e-3
    # the caches are interchangeable: a torch run over the onnxruntime folder resumes, no refusal
    assert main(["-q", "extract", str(root), "--backbone", "efficientnet_lite0", "--pooling",
                 "multistage", "--engine", "torch", "--out", str(tmp_path / "onnxruntime")]) == 0


def test_engine_auto_picks_onnxruntime_on_the_cpu_and_torch_without_it(monkeypatch):
    from medxfer import engine
    from medxfer.engine import onnxruntime_engine
    from medxfer.errors import FeatureCacheError

    assert engine.choose_engine("auto", "cpu") == ("onnxruntime", torch.device("cpu"))
    assert engine.choose_engine("torch", "cpu") == ("torch", torch.device("cpu"))
    monkeypatch.setattr(onnxruntime_engine, "onnxruntime_installed", lambda: False)
    assert engine.choose_engine("auto", "cpu")[0] == "torch"
    with pytest.raises(FeatureCacheError, match="engine must be one of auto, torch, onnxruntime"):
        engine.choose_engine("tensorrt", "cpu")
    with pytest.raises(FeatureCacheError, match="device must be"):
        engine.choose_engine("auto", "gpu0")
    if not torch.cuda.is_available():  # a GPU asked for where there is none: named, not a crash
        with pytest.raises(FeatureCacheError, match="sees 0 GPU"):
            engine.choose_engine("torch", "cuda")


def test_engine_auto_falls_back_to_torch_when_the_backbone_does_not_export(
        make_cxr14, sample_table, tmp_path, monkeypatch, capsys):
    """A backbone the exporter cannot handle still extracts under the default engine (with a
    warning, and the manifest says torch); asked for explicitly, onnxruntime fails clearly."""
    from medxfer.engine import onnxruntime_engine
    from medxfer.features import FeatureSet

    def broken(backbone, cache_dir=None):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(onnxruntime_engine, "backbone_onnx", broken)
    root = make_cxr14(sample_table["image_id"][:8].tolist())
    assert main(["-q", "extract", str(root), "--backbone", "tiny_random_test", "--out", str(tmp_path / "a")]) == 0
    assert FeatureSet.load(tmp_path / "a").manifest["engine"] == "torch"
    assert "did not run in the onnxruntime engine" in capsys.readouterr().err
    assert main(["-q", "extract", str(root), "--backbone", "tiny_random_test", "--engine",
                 "onnxruntime", "--out", str(tmp_path / "b")]) == 2
    assert "use --engine torch" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_gives_the_same_probabilities_with_either_engine(tiny_trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEDXFER_CACHE", str(tmp_path / "cache"))
    files = [str(p) for p in sorted((tiny_trained / "cxr" / "images").glob("*.png"))[:6]]
    out = {}
    for eng in ("torch", "onnxruntime"):
        capsys.readouterr()
        assert main(["-q", "predict", str(tiny_trained / "m"), *files, "--engine", eng, "--json"]) == 0
        out[eng] = json.loads(capsys.readouterr().out)["predictions"]
        # only the onnxruntime run exports the backbone
        assert len(list(tmp_path.glob("cache/onnx/*.onnx"))) == (eng == "onnxruntime")
    assert len(out["torch"]) == len(out["onnxruntime"]) == 6
    for a, b in zip(out["torch"], out["onnxruntime"]):
        assert a["image"] == b["image"] and len(a["probabilities"]) == 14
        pa, pb = a["probabilities"], b["probabilities"]
        assert max(abs(pa[n] - pb[n]) for n in pa) < 2e-3


def test_onnx_metadata_names_every_members_weights_hash():
    from types import SimpleNamespace

    from medxfer.backbones import create_backbone
    from medxfer.export import metadata

    ident = create_backbone("efficientnet_lite0+mobilenet_v2").identity().as_dict()
    fake = SimpleNamespace(backbone=ident, label_names=["A"], thresholds=[0.5], calibration=None, ood=None)
    hashes = json.loads(metadata(fake)["weights_sha256"])
    assert set(hashes) == {"efficientnet_lite0", "mobilenet_v2"}
    assert all(isinstance(h, str) and len(h) == 64 for h in hashes.values())
