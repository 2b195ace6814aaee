"""BottleneckCV: penalties chosen by inner patient-wise CV, fold models averaged."""

import warnings

import numpy as np
import pytest

from medxfer.head import BottleneckClassifier, BottleneckCV
from medxfer.head.net import predict_proba_nets

from .conftest import multilabel_data as _data


def test_bottleneck_cv_selects_by_out_of_fold_auc_and_averages_fold_models(tmp_path):
    from medxfer.head import BottleneckCV
    from medxfer.model_io import TrainedModel

    X, Y = _data(n=200)
    groups = np.arange(200) // 2
    grid = [dict(bottleneck_dim=4, alpha=0.05), dict(bottleneck_dim=None, alpha=1.0),
            dict(bottleneck_dim=None, alpha=1e4)]  # the last one is flattened to nothing
    cv = BottleneckCV(grid, n_splits=3).fit(X, Y, groups=groups)
    scores = [r["oof_macro_auc"] for r in cv.cv_results_]
    assert scores[2] < max(scores[:2])
    assert cv.best_score_ >= max(scores) - 1e-9  # a blend is kept only when it is better
    members = cv.best_estimator_.members_
    assert len(members) in (3, 6)
    # out-of-fold: each row predicted by the fold models that did not see its patient
    _, Yv, Pv = cv.validation_
    assert Pv.shape == Y.shape and np.isfinite(Pv).all()
    P = cv.predict_proba(X)
    np.testing.assert_allclose(P, np.mean([predict_proba_nets([m], X, "multilabel") for m in members], 0),
                               atol=1e-6)
    tm = TrainedModel(cv.best_estimator_, ["A", "B", "C"], np.full(3, 0.5), {"name": "x"})
    tm.save(tmp_path / "m")
    np.testing.assert_allclose(TrainedModel.load(tmp_path / "m").predict_proba(X), P, atol=1e-6)


def test_bottleneck_cv_repeats_average_partitions(capsys, tmp_path):
    """n_repeats=2: the out-of-fold predictions are the mean of two partitions' (each the
    one-repeat run with seeds 0 and 1), and all 2K fold models are deployed."""
    from medxfer.cli import main
    from medxfer.head import BottleneckCV

    X, Y = _data(n=120)
    groups = np.arange(120) // 2
    grid = [dict(bottleneck_dim=None, alpha=1.0)]
    one = [BottleneckCV(grid, n_splits=3, blend=False, random_state=r).fit(X, Y, groups=groups) for r in (0, 1)]
    two = BottleneckCV(grid, n_splits=3, n_repeats=2, blend=False).fit(X, Y, groups=groups)
    assert len(two.best_estimator_.members_) == 6
    np.testing.assert_allclose(two.validation_[2], (one[0].validation_[2] + one[1].validation_[2]) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="n_repeats"):
        BottleneckCV(grid, n_repeats=0).fit(X, Y, groups=groups)
    assert main(["-q", "train", str(tmp_path / "none"), "--out", str(tmp_path / "m"), "--inner-repeats", "0"]) == 2
    assert "--inner-repeats" in capsys.readouterr().err


def test_train_inner_repeats_deploys_every_fold_model(tiny_trained, tmp_path):
    from medxfer.cli import main
    from medxfer.model_io import TrainedModel

    grid = tmp_path / "grid.json"
    grid.write_text('[{"bottleneck_dim": null, "alpha": 1.0}]')
    for r in (1, 2):
        assert main(["-q", "train", str(tiny_trained / "f"), "--out", str(tmp_path / f"m{r}"), "--grid", str(grid),
                     "--inner-folds", "3", "--inner-repeats", str(r)]) == 0
        assert len(TrainedModel.load(tmp_path / f"m{r}").estimator.members_) == 3 * r


def test_bottleneck_cv_refit_starts_clean():
    from medxfer.head import BottleneckCV

    X, Y = _data(n=120)
    groups = np.arange(120)
    cv = BottleneckCV([dict(bottleneck_dim=4, alpha=0.05), dict(bottleneck_dim=None, alpha=1.0)],
                      n_splits=3).fit(X, Y, groups=groups)
    assert hasattr(cv, "blend_score_")
    cv.set_params(grid=[dict(bottleneck_dim=None, alpha=1.0)]).fit(X, Y, groups=groups)
    assert not hasattr(cv, "blend_score_")  # no bottleneck setting to blend with this time


@pytest.mark.slow
def test_bottleneck_cv_passes_sklearn_check_estimator():
    """Multilabel Y is its home; a 1-D y (binary or multiclass) is selected one-vs-rest."""
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(BottleneckCV([dict(bottleneck_dim=None, alpha=1.0)], n_splits=2),
                                  on_fail=None)
    failed = [(r["check_name"], repr(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert len(results) > 50 and failed == []


def test_row_space_training_solves_the_feature_space_problem(monkeypatch):
    """Fewer rows than features, weight penalty on: training on the row space's coordinates
    (medxfer.head.rowspace.row_space) gives the model trained on the features themselves (the
    linear head, a convex problem: the same predictions on new rows), and the bottleneck's
    weights lie in the row space of the standardized training rows, at a loss no worse."""
    import torch

    from medxfer.head import joint, rowspace
    from medxfer.head.losses import HeadLoss

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 300)).astype(np.float32)
    Y = (X[:, :3] + 0.5 * rng.normal(size=(60, 3)) > 0.8).astype(np.float32)
    new = rng.normal(size=(25, 300)).astype(np.float32)
    base = dict(solver="lbfgs", validation_fraction=0.0, n_ensemble=1, refit=False, max_iter=500)
    settings = [base | dict(bottleneck_dim=None, alpha=1.0), base | dict(bottleneck_dim=4, alpha=0.1)]
    fits = {}
    for on in (True, False):
        monkeypatch.setattr(rowspace, "ROW_SPACE", on)
        fits[on] = joint.fit_lbfgs_shared(X, Y, settings, seed=0)[0]
    with torch.no_grad():
        p = {on: torch.sigmoid(fits[on][0](torch.from_numpy(new))[0]).numpy() for on in fits}
    np.testing.assert_allclose(p[True], p[False], atol=2e-3)
    net = fits[True][1]
    z = ((X - net.mean.numpy()) / net.scale.numpy()).astype(np.float64)
    _, sv, vt = np.linalg.svd(z, full_matrices=False)
    B = vt[sv > sv[0] * 1e-7].T
    W = net.bottleneck.weight.detach().numpy().astype(np.float64)
    assert np.abs(W - W @ B @ B.T).max() < 1e-4 * np.abs(W).max()
    est = BottleneckClassifier(**settings[1])
    loss = {on: HeadLoss(est, "multilabel", Y, 3)(fits[on][1].train(), torch.from_numpy(X),
                                                  torch.from_numpy(Y)).item() for on in fits}
    assert loss[True] <= loss[False] + 1e-3
    # a grid mixing alpha = 0 (trained on the features) with penalized settings (on the row
    # space) gives each setting what it gets alone
    monkeypatch.setattr(rowspace, "ROW_SPACE", True)
    mixed = [base | dict(bottleneck_dim=None, alpha=0.0)] + settings
    nets = joint.fit_lbfgs_shared(X, Y, mixed, seed=0)[0]
    alone = [joint.fit_lbfgs_shared(X, Y, [st], seed=0)[0][0] for st in mixed]
    with torch.no_grad():
        for a, b in zip(nets, alone):
            np.testing.assert_allclose(a(torch.from_numpy(new))[0].numpy(),
                                       b(torch.from_numpy(new))[0].numpy(), atol=1e-4)
    # the one-setting path (BottleneckClassifier.fit with solver lbfgs) takes it too
    monkeypatch.setattr(rowspace, "ROW_SPACE", True)
    a = BottleneckClassifier(**settings[0], random_state=0).fit(X, Y).predict_proba(new)
    monkeypatch.setattr(rowspace, "ROW_SPACE", False)
    b = BottleneckClassifier(**settings[0], random_state=0).fit(X, Y).predict_proba(new)
    np.testing.assert_allclose(a, b, atol=2e-3)
