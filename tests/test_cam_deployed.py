"""Grad-CAM explains the deployed model: every averaged member, every concatenated backbone."""

import numpy as np
import torch
from torch.nn import functional as F

from medxfer.backbones import create_backbone
from medxfer.cam import grad_cam
from medxfer.head import BottleneckClassifier, BottleneckNet
from medxfer.model_io import TrainedModel


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


def test_cam_of_a_concatenation_uses_every_member():
    bb = create_backbone("tiny_random_test+efficientnet_lite0")
    image = np.random.default_rng(1).random((96, 96)).astype(np.float32)
    x = bb.preprocessing(image).unsqueeze(0)
    with torch.no_grad():
        _, maps = bb.forward_with_maps(x)
    assert len(maps) == 2 and all(m.ndim == 4 for m in maps)
    cam = grad_cam(_model(bb, 1), image, ["B"], backbone=bb)["B"]
    assert cam.shape == image.shape and cam.max() == np.float32(1.0) and cam.min() >= 0
