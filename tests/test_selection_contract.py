import warnings

from medxfer.head import BottleneckCV


def test_bottleneck_cv_passes_sklearn_check_estimator():
    """Multilabel Y is its home; a 1-D y (binary or multiclass) is selected one-vs-rest."""
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(BottleneckCV([dict(bottleneck_dim=None, alpha=1.0)], n_splits=2),
                                  on_fail=None)
    failed = [(r["check_name"], repr(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert len(results) > 50 and failed == []
