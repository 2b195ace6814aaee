import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import cross_val_score

from medxfer.errors import NotFittedError
from medxfer.head import BottleneckClassifier, BottleneckNet, HeadLoss, resolve_device
from medxfer.head.net import predict_proba_nets
from medxfer.model_io import TrainedModel

from .conftest import multilabel_data as _data


def _separable(n=200, d=20, L=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    Y = (X[:, :L] > 0).astype(np.float32)  # finding j is the sign of feature j
    return X, Y


def test_fits_separable_multilabel_data():
    X, Y = _separable()
    m = BottleneckClassifier(16, alpha=0.01, validation_fraction=0.25).fit(X, Y)
    Xt, Yt = _separable(seed=1)
    assert m.score(Xt, Yt) > 0.97
    P = m.predict_proba(Xt)
    assert P.shape == (200, 3) and (P >= 0).all() and (P <= 1).all()
    assert (m.predict(Xt) == Yt).mean() > 0.9


def test_softmax_head_for_single_label_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 10)).astype(np.float32)
    y = np.array(["a", "b", "c"])[np.argmax(X[:, :3], axis=1)]
    m = BottleneckClassifier(8, lr=1e-2, max_epochs=100).fit(X, y)
    assert m.task_ == "multiclass" and list(m.classes_) == ["a", "b", "c"]
    P = m.predict_proba(X)
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-5)
    assert (m.predict(X) == y).mean() > 0.9
    # sklearn tools work with it
    scores = cross_val_score(clone(m).set_params(max_epochs=30), X, y, cv=3)
    assert scores.mean() > 0.8


def _near_zero_fraction(m, X):
    h = m.transform(X)
    return float((np.abs(h) < 1e-2 * np.abs(h).max()).mean())


@pytest.mark.slow
def test_larger_l1_gives_sparser_codes():
    X, Y = _separable(d=30)
    kw = dict(bottleneck_dim=32, l2=0.0, alpha=0.0, lr=1e-2, max_epochs=150, validation_fraction=0.0)
    weak = BottleneckClassifier(l1=0.0, **kw).fit(X, Y)
    strong = BottleneckClassifier(l1=0.1, **kw).fit(X, Y)
    assert _near_zero_fraction(strong, X) > _near_zero_fraction(weak, X) + 0.2
    assert np.abs(strong.transform(X)).sum(1).mean() < np.abs(weak.transform(X)).sum(1).mean()


def test_nan_labels_do_not_change_the_gradient_of_known_labels():
    logits = torch.randn(6, 3, requires_grad=True)
    y = torch.tensor([[1, 0, np.nan], [0, np.nan, 1], [1, 1, 0],
                      [np.nan, np.nan, np.nan], [0, 0, 0], [1, np.nan, 0]], dtype=torch.float32)
    loss = HeadLoss(BottleneckClassifier(imbalance="none"), "multilabel", y.numpy(), 3)
    loss.ce(logits, y).backward()
    g_nan = logits.grad.clone()
    known = ~torch.isnan(y)
    assert torch.all(g_nan[~known] == 0)
    # the same loss written over the known entries only
    logits2 = logits.detach().clone().requires_grad_(True)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(logits2[known], y[known])
    ref.backward()
    torch.testing.assert_close(g_nan, logits2.grad)
    # whatever is written where the label is unknown changes nothing
    for fill in (0.0, 1.0):
        logits3 = logits.detach().clone().requires_grad_(True)
        y3 = torch.where(known, y, torch.tensor(fill))
        mask_loss = (torch.nn.functional.binary_cross_entropy_with_logits(
            logits3, y3, reduction="none") * known).sum() / known.sum()
        mask_loss.backward()
        torch.testing.assert_close(g_nan, logits3.grad)


@pytest.mark.parametrize("imbalance", ["none", "pos_weight", "class_balanced", "focal", "balanced_sampler"])
def test_every_imbalance_option_trains(imbalance):
    X, Y = _separable(n=120)
    Y[:, 2] = (X[:, 2] > 1.2)  # rare finding
    Y[::7, 0] = np.nan
    m = BottleneckClassifier(8, imbalance=imbalance, solver="adamw", lr=1e-2, max_epochs=40).fit(X, Y)
    assert np.isfinite(m.predict_proba(X)).all()
    assert m.score(X, Y) > 0.8


def test_deterministic_given_seed():
    X, Y = _separable()
    a = BottleneckClassifier(8, max_epochs=20, random_state=3).fit(X, Y).predict_proba(X)
    b = BottleneckClassifier(8, max_epochs=20, random_state=3).fit(X, Y).predict_proba(X)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("param,value,msg", [
    ("l1", -0.1, "The 'l1' parameter of BottleneckClassifier must be a float in the range [0.0, 10000.0]. Got -0.1 instead."),
    ("bottleneck_dim", 0, "The 'bottleneck_dim' parameter of BottleneckClassifier must be an int or None in the range [1, inf). Got 0 instead."),
    ("lr", 0.0, "The 'lr' parameter of BottleneckClassifier must be a float in the range (0.0, 10.0]. Got 0.0 instead."),
    ("imbalance", "smote", "The 'imbalance' parameter of BottleneckClassifier must be a str among {'none', 'pos_weight', 'class_balanced', 'focal', 'balanced_sampler'}. Got 'smote' instead."),
    ("cb_beta", 1.5, "The 'cb_beta' parameter of BottleneckClassifier must be a float in the range [0.0, 1.0). Got 1.5 instead."),
    ("cb_beta", 1.0, "The 'cb_beta' parameter of BottleneckClassifier must be a float in the range [0.0, 1.0). Got 1.0 instead."),
])
def test_bad_parameters_exact_messages(param, value, msg):
    X, Y = _separable(n=20)
    with pytest.raises(ValueError) as exc:
        BottleneckClassifier(**{param: value}).fit(X, Y)
    assert str(exc.value) == msg


def test_not_fitted_message():
    with pytest.raises(NotFittedError, match=r"This BottleneckClassifier instance is not fitted yet\. Call 'fit'"):
        BottleneckClassifier().predict_proba(np.zeros((1, 3)))


def test_ensemble_averages_members_with_out_of_bag_validation(tmp_path):
    X, Y = _separable(n=240)
    groups = np.repeat(np.arange(120), 2)
    m = BottleneckClassifier(8, lr=1e-2, max_epochs=30, n_ensemble=3).fit(X, Y, groups=groups)
    assert len(m.members_) == 3
    members = [BottleneckClassifier(8, lr=1e-2, max_epochs=30, random_state=i).fit(X, Y, groups=groups)
               for i in range(3)]
    np.testing.assert_allclose(m.predict_proba(X), np.mean([e.predict_proba(X) for e in members], 0), atol=1e-6)
    Xv, Yv, Pv = m.validation_
    # out-of-bag: each validation row is predicted only by members that did not train on it
    row = int(np.flatnonzero((X == Xv[0]).all(1))[0])
    outside = [e for e in members if row in e.validation_index_]
    np.testing.assert_allclose(Pv[0], np.mean([e.predict_proba(X[row:row + 1])[0] for e in outside], 0), atol=1e-6)
    tm = TrainedModel(m, ["A", "B", "C"], np.full(3, 0.5), {"name": "x"})
    tm.save(tmp_path / "m")
    np.testing.assert_array_equal(TrainedModel.load(tmp_path / "m").predict_proba(X), m.predict_proba(X))


def test_refit_starts_from_a_clean_state():
    X, Y = _data()
    groups = np.arange(len(X)) // 2
    m = BottleneckClassifier(8, max_epochs=5, n_ensemble=3).fit(X, Y, groups=groups)
    assert len(m.members_) == 3
    m.set_params(n_ensemble=1).fit(X, Y, groups=groups)
    assert len(m.members_) == 1 and not hasattr(m, "member_best_epochs_")
    lone = BottleneckClassifier(8, max_epochs=5).fit(X, Y, groups=groups)
    np.testing.assert_array_equal(m.predict_proba(X), lone.predict_proba(X))


def test_fit_without_groups_warns_about_image_wise_validation():
    X, Y = _data(n=40)
    with pytest.warns(UserWarning, match="got no groups"):
        BottleneckClassifier(4, max_epochs=2).fit(X, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BottleneckClassifier(4, max_epochs=2).fit(X, Y, groups=np.arange(40) // 2)
        BottleneckClassifier(4, max_epochs=2, validation_fraction=0.0).fit(X, Y)


def test_every_imbalance_strategy_gives_finite_weights_at_its_limits():
    Y = np.array([[1, 0], [0, 0], [0, np.nan], [0, 0]], dtype=np.float32)
    for beta in (0.0, 0.5, 0.9999):
        loss = HeadLoss(BottleneckClassifier(imbalance="class_balanced", cb_beta=beta), "multilabel", Y, 2)
        assert all(torch.isfinite(w).all() for w in loss.weights.values())


def test_device_handling_is_one_code_path(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    # predictions go to each network's own device, whatever the estimator's device says
    seen = []
    net = BottleneckNet(5, 3, 2)
    original = BottleneckNet.forward

    def spy(self, x):
        seen.append((x.device, self.head.weight.device))
        return original(self, x)
    monkeypatch.setattr(BottleneckNet, "forward", spy)
    predict_proba_nets([net], np.zeros((4, 5), np.float32), "multilabel")
    assert seen and all(a == b for a, b in seen)


@pytest.mark.slow
def test_bottleneck_classifier_passes_sklearn_check_estimator():
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(BottleneckClassifier(8, max_epochs=30, patience=5, lr=1e-2),
                                  on_fail=None)
    failed = [(r["check_name"], repr(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert len(results) > 50 and failed == []


def test_lbfgs_solver_trains_full_batch_and_reports_loss_terms():
    X, Y = _data(n=200)
    m = BottleneckClassifier(8, solver="lbfgs", alpha=0.01, l1=1e-3, l2=1e-3,
                             validation_fraction=0.0).fit(X, Y)
    assert m.score(X, Y) > 0.85
    assert set(m.loss_terms_) >= {"ce", "code_l1", "code_l2", "weight_penalty"}
    assert m.loss_terms_["code_l1"] > 0 and m.loss_terms_["weight_penalty"] > 0
    with pytest.raises(ValueError, match="balanced_sampler"):
        BottleneckClassifier(4, solver="lbfgs", imbalance="balanced_sampler").fit(X, Y, groups=np.arange(200))


def test_bad_device_is_one_line(capsys):
    from medxfer.head import resolve_device

    with pytest.raises(ValueError, match="device must be auto, cpu, cuda"):
        resolve_device("gpu")
