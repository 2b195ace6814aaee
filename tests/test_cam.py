import numpy as np
import pytest
from PIL import Image

from medxfer.backbones import create_backbone
from medxfer.cam import grad_cam, peak
from medxfer.cli import main
from medxfer.head import BottleneckClassifier
from medxfer.model_io import TrainedModel


def _blob_image(rng, with_blob, at=None, size=64):
    img = 0.3 + 0.05 * rng.standard_normal((size, size))
    if with_blob:
        r, c = at if at is not None else rng.integers(8, size - 8, 2)
        img[r - 5:r + 5, c - 5:c + 5] = 1.0
    return np.clip(img, 0, 1).astype(np.float32)


@pytest.mark.slow
def test_grad_cam_peaks_where_the_signal_is():
    rng = np.random.default_rng(0)
    bb = create_backbone("tiny_random_test")
    imgs = [_blob_image(rng, i % 2 == 1) for i in range(200)]
    import torch
    with torch.inference_mode():
        X = torch.cat([bb(bb.preprocessing(im).unsqueeze(0)) for im in imgs]).numpy()
    Y = np.array([[i % 2] for i in range(200)], dtype=np.float32)
    est = BottleneckClassifier(8, lr=1e-2, max_epochs=60).fit(X, Y)
    model = TrainedModel(est, ["Blob"], np.array([0.5]), bb.identity())
    hits = 0
    for k, at in enumerate([(16, 16), (16, 48), (48, 16), (48, 48), (32, 40)]):
        img = _blob_image(np.random.default_rng(100 + k), True, at=at)
        cam = grad_cam(model, img, ["Blob"], backbone=bb)["Blob"]
        assert cam.shape == img.shape and cam.min() >= 0 and cam.max() == pytest.approx(1.0)
        r, c = peak(cam)
        hits += abs(r - at[0]) <= 8 and abs(c - at[1]) <= 8
    assert hits >= 4


@pytest.mark.slow
def test_predict_writes_cam_overlays(make_cxr14, sample_table, tmp_path, capsys):
    root = make_cxr14(sample_table["image_id"][:30].tolist())
    main(["-q", "extract", str(root), "--backbone", "efficientnet_lite0", "--out", str(tmp_path / "f")])
    main(["-q", "train", str(tmp_path / "f"), "--out", str(tmp_path / "m"), "--no-select", "--epochs", "5"])
    img = root / "images" / sample_table["image_id"][0]
    capsys.readouterr()
    assert main(["-q", "predict", str(tmp_path / "m"), str(img), "--json", "--cam", str(tmp_path / "cam")]) == 0
    import json
    r = json.loads(capsys.readouterr().out)
    assert r["cam_overlays"] and all(Image.open(p).size[0] > 100 for p in r["cam_overlays"])
