"""The whole model as one ONNX file: same probabilities as PyTorch on real images."""

import json

import numpy as np
import pytest
import torch

from medxfer.cli import main

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


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
    assert main(["-q", "export", str(tmp_path / "m"), "--onnx", str(tmp_path / "m.onnx")]) == 0
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
    with torch.no_grad():
        np.testing.assert_allclose(WholeModel(model)(torch.from_numpy(gray)).numpy(), ref, atol=1e-5)


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
                 "multistage", "--out", str(tmp_path / "onnxruntime")]) == 0
