import logging

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import medxfer.baselines as baselines
from medxfer.baselines import DEFAULT_CS, TunedLogisticRegression
from medxfer.errors import NotFittedError

# Every check of scikit-learn's suite applies; none is expected to fail. A small grid
# and 3 inner folds keep the ~60 checks to a few seconds.
FAST = TunedLogisticRegression(Cs=(0.01, 1.0), n_splits=3)


@pytest.mark.slow
@parametrize_with_checks([FAST], expected_failed_checks=lambda est: {})
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _multilabel(n=120, d=6, L=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = (X[:, :L] + rng.normal(scale=1.0, size=(n, L)) > 0).astype(float)
    return X, Y


def test_nan_labels_are_left_out_of_that_findings_fit_only():
    X, Y = _multilabel()
    Y[::4, 0] = np.nan
    Y[:, 2] = np.nan  # a finding never labelled
    C = 0.1
    lr = TunedLogisticRegression(Cs=(C,)).fit(X, Y)
    assert lr.classes_.tolist() == [0, 1, 2] and lr.n_features_in_ == 6
    P = lr.predict_proba(X)
    assert P.shape == (120, 3)
    # The same numbers as one balanced L2 logistic regression per finding on the
    # standardized features, fitted on that finding's known labels only.
    Xs = StandardScaler().fit_transform(X)
    for j in (0, 1):
        known = ~np.isnan(Y[:, j])
        ref = LogisticRegression(C=C, class_weight="balanced", max_iter=3000)
        ref.fit(Xs[known], Y[known, j].astype(int))
        np.testing.assert_array_equal(P[:, j], ref.predict_proba(Xs)[:, 1])
    assert np.all(P[:, 2] == 0.0)  # nothing known: a constant
    np.testing.assert_array_equal(lr.predict(X), (P > 0.5).astype(int))
    # The NaNs also stay out of the inner-CV scoring: the search still works.
    tuned = TunedLogisticRegression(Cs=(1e-3, 1e-2, 1e-1)).fit(X, Y)
    assert all(np.isfinite(s) for s in tuned.cv_scores_.values())


def test_a_constant_finding_predicts_its_value():
    X, Y = _multilabel()
    Y[:, 1] = 1.0
    lr = TunedLogisticRegression(Cs=(0.1,)).fit(X, Y)
    assert np.all(lr.predict_proba(X)[:, 1] == 1.0)
    assert np.all(lr.predict(X)[:, 1] == 1)


def test_1d_y_with_nan_is_refused_with_the_fix():
    X, Y = _multilabel()
    y = Y[:, 0].copy()
    y[3] = np.nan
    with pytest.raises(ValueError, match=r"Unknown labels are allowed only in a 2-D y"):
        TunedLogisticRegression(Cs=(0.1,)).fit(X, y)


def test_bad_2d_labels_and_nan_features_are_refused():
    X, Y = _multilabel()
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        TunedLogisticRegression(Cs=(0.1,)).fit(X, Y * 2)
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        TunedLogisticRegression(Cs=(0.1,)).fit(Xn, Y)
    lr = TunedLogisticRegression(Cs=(0.1,))
    with pytest.raises(NotFittedError):
        lr.predict_proba(X)
    lr.fit(X, Y)
    with pytest.raises(ValueError, match="Input X contains infinity"):
        lr.predict_proba(np.where(X > 2, np.inf, X))
    with pytest.raises(ValueError, match="Input X contains NaN"):  # a refit refused on its X
        lr.fit(Xn, Y)
    with pytest.raises(NotFittedError):  # leaves no model of the earlier fit behind
        lr.predict_proba(X)


def test_1d_labels_binary_and_multiclass():
    X, Y = _multilabel()
    y = np.where(Y[:, 0] == 1, "sick", "healthy")
    lr = TunedLogisticRegression(Cs=(0.1, 1.0)).fit(X, y)
    assert lr.classes_.tolist() == ["healthy", "sick"]
    assert set(lr.predict(X)) <= {"healthy", "sick"}
    assert lr.predict_proba(X).shape == (120, 2) and lr.decision_function(X).shape == (120,)
    y3 = np.asarray(Y[:, :2].sum(axis=1), dtype=int)  # 0, 1, 2
    lr3 = TunedLogisticRegression(Cs=(0.1, 1.0)).fit(X, y3)
    P = lr3.predict_proba(X)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    np.testing.assert_array_equal(lr3.predict(X), lr3.classes_[P.argmax(axis=1)])


def test_groups_keep_patients_in_one_inner_fold(monkeypatch):
    X, Y = _multilabel()
    groups = np.repeat(np.arange(30), 4)  # 30 patients, 4 images each
    seen = []
    real = baselines.patient_kfold

    def spy(g, n_splits, **kw):
        folds = real(g, n_splits, **kw)
        seen.append((np.asarray(g), folds))
        return folds

    monkeypatch.setattr(baselines, "patient_kfold", spy)
    TunedLogisticRegression(Cs=(0.01, 0.1, 1.0), n_splits=4).fit(X, Y, groups=groups)
    (g, folds), = seen
    np.testing.assert_array_equal(g, groups)
    assert len(folds) == 4
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        TunedLogisticRegression(Cs=(0.01, 0.1)).fit(X, Y, groups=groups[:-1])


def test_fewer_patients_than_folds_uses_one_fold_per_patient():
    X, Y = _multilabel(n=12)
    lr = TunedLogisticRegression(Cs=(0.01, 1.0), n_splits=5).fit(X, Y, groups=np.arange(12) // 4)
    assert set(lr.cv_scores_) == {0.01, 1.0}


def test_chosen_c_at_the_edge_of_the_grid_is_flagged(caplog):
    X, Y = _multilabel()
    with caplog.at_level(logging.WARNING, logger="medxfer.baselines"):
        lr = TunedLogisticRegression(Cs=(1e-3, 1e-1)).fit(X, Y)
    assert lr.C_at_edge_ is True and lr.C_ in (1e-3, 1e-1)
    assert set(lr.cv_scores_) == {1e-3, 1e-1}
    assert "widen the grid" in caplog.text and "Cs=np.logspace" in caplog.text
    assert TunedLogisticRegression(Cs=(0.1,)).fit(X, Y).C_at_edge_ is False


def test_default_grid_is_wide():
    assert min(DEFAULT_CS) <= 1e-6 and max(DEFAULT_CS) >= 1.0
    assert TunedLogisticRegression().Cs == DEFAULT_CS


def test_wide_features_fit_in_the_row_space_give_the_plain_fit():
    """More features than images: the fit runs on the rotated training span (basis_), and
    its decision function is the plain LogisticRegression's on all columns."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 300))
    y = (X[:, 0] + 0.5 * rng.normal(size=60) > 0).astype(float)
    Xt = rng.normal(size=(20, 300))
    ours = TunedLogisticRegression(Cs=(0.01,)).fit(X, y[:, None])
    assert ours.basis_.shape == (300, 59)  # standardized: centred rows span n - 1 dimensions
    sc = StandardScaler().fit(X)
    plain = LogisticRegression(C=0.01, class_weight="balanced", max_iter=3000, tol=1e-8).fit(
        sc.transform(X), y.astype(int))
    np.testing.assert_allclose(ours.decision_function(Xt)[:, 0],
                               plain.decision_function(sc.transform(Xt)), atol=1e-3)
    narrow = TunedLogisticRegression(Cs=(0.01,)).fit(X[:, :10], y[:, None])
    assert narrow.basis_ is None
