"""BottleneckCV: penalties chosen by inner patient-wise CV, fold models averaged."""

import warnings

import numpy as np
import pytest

from medxfer.head import BottleneckCV
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
