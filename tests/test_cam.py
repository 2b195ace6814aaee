import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from medxfer.backbones import create_backbone
from medxfer.cam import grad_cam, peak
from medxfer.cli import main
from medxfer.head import BottleneckClassifier, BottleneckNet
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
    main(["-q", "train", str(tmp_path / "f"), "--out", str(tmp_path / "m"), "--no-select", "--max-iter", "50"])
    img = root / "images" / sample_table["image_id"][0]
    capsys.readouterr()
    assert main(["-q", "predict", str(tmp_path / "m"), str(img), "--json", "--cam", str(tmp_path / "cam")]) == 0
    import json
    r = json.loads(capsys.readouterr().out)
    assert r["cam_overlays"] and all(Image.open(p).size[0] > 100 for p in r["cam_overlays"])


def _model(bb, n_members, seed=0):
    torch.manual_seed(seed)
    nets = [BottleneckNet(bb.feature_dim, 4, 2).eval() for _ in range(n_members)]
    est = BottleneckClassifier.from_nets({"bottleneck_dim": 4}, nets, task="multilabel")
    return TrainedModel(est, ["A", "B"], np.array([0.5, 0.5]), bb.identity().as_dict())


def _reference_cam(bb, score_fn, image, j):
    """Grad-CAM written out for one map and an arbitrary score of the features."""
    x = bb.preprocessing(image).unsqueeze(0)
    with torch.enable_grad():
        feats, fmap = bb.forward_with_map(x.requires_grad_(True))
        (g,) = torch.autograd.grad(score_fn(feats)[0, j], fmap)
        cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * fmap).sum(1, keepdim=True))
        cam = F.interpolate(cam, size=image.shape, mode="bilinear", align_corners=False)[0, 0]
    cam = cam.detach().numpy()
    return cam / cam.max()


def test_cam_of_two_members_is_the_map_of_their_averaged_output():
    bb = create_backbone("tiny_random_test")
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    model = _model(bb, 2)
    both = grad_cam(model, image, ["A"], backbone=bb)["A"]
    nets = model.estimator.members_

    def averaged(feats):
        p = torch.stack([torch.sigmoid(n(feats)[0]) for n in nets]).mean(0)
        return torch.log(p / (1 - p))

    assert np.allclose(both, _reference_cam(bb, averaged, image, 0), atol=1e-5)
    first = _reference_cam(bb, lambda f: nets[0](f)[0], image, 0)
    assert np.abs(both - first).max() > 0.05  # not the first member's map alone


@pytest.mark.slow
def test_cam_of_a_concatenation_uses_every_member():
    bb = create_backbone("tiny_random_test+efficientnet_lite0")
    image = np.random.default_rng(1).random((96, 96)).astype(np.float32)
    x = bb.preprocessing(image).unsqueeze(0)
    with torch.no_grad():
        _, maps = bb.forward_with_maps(x)
    assert len(maps) == 2 and all(m.ndim == 4 for m in maps)
    cam = grad_cam(_model(bb, 1), image, ["B"], backbone=bb)["B"]
    assert cam.shape == image.shape and cam.max() == np.float32(1.0) and cam.min() >= 0
