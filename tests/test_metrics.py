import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from medxfer.metrics import (binary_metrics, bootstrap_auc_ci, calibration_bins, choose_thresholds,
                             evaluate_predictions, fast_auc, paired_bootstrap_auc)


def _data(n=80, L=3, seed=0):
    rng = np.random.default_rng(seed)
    Y = (rng.random((n, L)) < 0.3).astype(float)
    P = np.clip(Y * 0.3 + rng.random((n, L)) * 0.7, 0, 1)
    return Y, P


def test_per_finding_metrics_match_sklearn_and_hand_counts():
    y = np.array([1, 0, 1, 0, 0, np.nan, 1, 0])
    p = np.array([0.9, 0.2, 0.4, 0.6, 0.1, 0.99, 0.7, 0.3])
    m = binary_metrics(y, p, 0.5)
    k = ~np.isnan(y)
    assert m["n"] == 7 and m["positives"] == 3
    assert m["auc"] == pytest.approx(roc_auc_score(y[k], p[k]))
    assert m["average_precision"] == pytest.approx(average_precision_score(y[k], p[k]))
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 3, 1)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(3 / 4)
    assert m["accuracy"] == pytest.approx(5 / 7) and m["all_negative_accuracy"] == pytest.approx(4 / 7)
    assert m["f1"] == pytest.approx(f1_score(y[k], p[k] >= 0.5))


def test_finding_without_positives_is_undefined_not_half():
    y = np.zeros(10)
    m = binary_metrics(y, np.linspace(0, 1, 10), 0.5)
    assert m["auc"] is None and m["sensitivity"] is None and m["f1"] is None
    Y, P = _data()
    Y[:, 1] = 0
    r = evaluate_predictions(Y, P, ["a", "b", "c"], n_boot=50)
    assert r["per_finding"]["b"]["auc"] is None and r["per_finding"]["b"]["auc_ci95"] is None
    assert r["macro"]["findings_with_auc"] == 2
    assert r["macro_auc"] == pytest.approx(np.mean([roc_auc_score(Y[:, j], P[:, j]) for j in (0, 2)]))


def test_fast_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        y[:2] = [0, 1]
        p = np.round(rng.random(40), 1)
        assert fast_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_bootstrap_resamples_patients_and_is_seeded():
    Y, P = _data(n=60)
    groups = np.repeat(np.arange(20), 3)
    a = bootstrap_auc_ci(Y, P, groups=groups, n_boot=200, seed=1)
    b = bootstrap_auc_ci(Y, P, groups=groups, n_boot=200, seed=1)
    assert a == b
    point = evaluate_predictions(Y, P, ["a", "b", "c"], n_boot=0)["macro_auc"]
    lo, hi = a["macro"]
    assert lo < point < hi
    # patients, not images: duplicating every image three times must not narrow the CI
    Y3, P3 = np.repeat(Y, 3, axis=0), np.repeat(P, 3, axis=0)
    g3 = np.repeat(np.arange(60), 3)
    lo3, hi3 = bootstrap_auc_ci(Y3, P3, groups=g3, n_boot=200, seed=1)["macro"]
    naive = bootstrap_auc_ci(Y3, P3, n_boot=200, seed=1)["macro"]
    assert (hi3 - lo3) > (naive[1] - naive[0]) * 1.3


def test_paired_bootstrap_sees_a_better_model():
    Y, P = _data(n=200)
    noise = np.random.default_rng(5).random(P.shape)
    worse = 0.3 * P + 0.7 * noise
    r = paired_bootstrap_auc(Y, worse, P, n_boot=300)
    assert r["difference"] > 0 and r["ci95"][0] > 0 and r["p_b_not_better"] < 0.05


@pytest.mark.parametrize("method", ["f1", "youden", "sensitivity"])
def test_thresholds_from_validation(method):
    Y, P = _data(n=200)
    t = choose_thresholds(Y, P, method=method, target_sensitivity=0.9)
    assert t.shape == (3,) and ((0 <= t) & (t <= 1)).all()
    if method == "sensitivity":
        for j in range(3):
            assert (P[Y[:, j] == 1, j] >= t[j]).mean() >= 0.9
    if method == "f1":
        for j in range(3):
            best = max(f1_score(Y[:, j], P[:, j] >= c) for c in np.unique(P[:, j]))
            assert f1_score(Y[:, j], P[:, j] >= t[j]) == pytest.approx(best)


def test_calibration_of_a_calibrated_predictor_is_small():
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(float)
    assert calibration_bins(y, p)["ece"] < 0.02
    assert calibration_bins(y, np.clip(p + 0.3, 0, 1))["ece"] > 0.2


@pytest.mark.parametrize("method", ["platt", "temperature"])
def test_recalibration_fixes_shifted_probabilities(method):
    from medxfer.metrics import apply_calibration, fit_calibration
    rng = np.random.default_rng(0)
    p = rng.random((4000, 2))
    Y = (rng.random((4000, 2)) < p).astype(float)
    z = np.log(p / (1 - p))
    skewed = 1 / (1 + np.exp(-(3 * z + (1.5 if method == "platt" else 0))))  # overconfident (+ shifted)
    cal = fit_calibration(Y[:2000], skewed[:2000], method)
    fixed = apply_calibration(skewed[2000:], cal)
    assert calibration_bins(Y[2000:], fixed)["ece"] < 0.03 < calibration_bins(Y[2000:], skewed[2000:])["ece"]
    # monotone per finding: AUC unchanged
    for j in range(2):
        assert roc_auc_score(Y[2000:, j], fixed[:, j]) == pytest.approx(roc_auc_score(Y[2000:, j], skewed[2000:, j]))


def test_platt_never_reverses_the_ranking():
    from medxfer.metrics import apply_calibration, fit_calibration
    rng = np.random.default_rng(3)
    p = rng.random((40, 1))
    y = (p < 0.3).astype(float)  # validation says: higher score, fewer positives
    cal = fit_calibration(y, p, "platt")
    assert cal["a"][0] > 0
    test = rng.random((50, 1))
    out = apply_calibration(test, cal)
    assert (np.argsort(out[:, 0], kind="stable") == np.argsort(test[:, 0], kind="stable")).all()


def test_micro_metrics_pool_every_decision():
    Y, P = _data(n=100)
    Y[3, 0] = np.nan
    t = np.array([0.4, 0.5, 0.6])
    r = evaluate_predictions(Y, P, ["a", "b", "c"], t, n_boot=0)
    k = ~np.isnan(Y)
    pred = (P >= t)[k]
    y = Y[k].astype(int)
    assert r["micro"]["f1"] == pytest.approx(f1_score(y, pred))
    assert r["micro"]["auc"] == pytest.approx(roc_auc_score(y, P[k]))
    assert r["micro"]["average_precision"] == pytest.approx(average_precision_score(y, P[k]))
    assert r["micro"]["sensitivity"] == pytest.approx((pred & (y == 1)).sum() / (y == 1).sum())


def test_platt_is_unpenalized_so_small_validation_sets_keep_their_slope():
    from medxfer.metrics import fit_calibration

    rng = np.random.default_rng(0)
    z = rng.normal(0, 0.15, size=(80, 1))  # a strongly shrunk model: true slope 8
    Y = (rng.random((80, 1)) < 1 / (1 + np.exp(-8 * z))).astype(float)
    cal = fit_calibration(Y, 1 / (1 + np.exp(-z)), "platt")
    assert cal["a"][0] > 4  # a C=1 penalty pulled this to about 1 on 80 images


def test_per_finding_ece_and_brier_have_bootstrap_intervals():
    from medxfer.metrics import evaluate_predictions

    rng = np.random.default_rng(1)
    P = rng.random((80, 2))
    Y = (rng.random((80, 2)) < P).astype(float)
    Y[::7, 1] = np.nan
    m = evaluate_predictions(Y, P, ["A", "B"], n_boot=50)
    for name in ("A", "B"):
        f = m["per_finding"][name]
        assert 0 <= f["ece"] <= 1 and 0 <= f["brier"] <= 1
        assert f["ece_ci95"][0] <= f["ece"] + 0.05 and f["brier_ci95"][0] <= f["brier"] <= f["brier_ci95"][1] + 1e-9
    assert m["macro"]["brier"] is not None


def test_fast_ap_equals_sklearn_with_ties():
    from sklearn.metrics import average_precision_score

    from medxfer.metrics import fast_ap

    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(2, 60))
        y = (rng.random(n) < 0.3).astype(float)
        y[0] = 1
        p = np.round(rng.random(n), 1)  # many ties
        assert fast_ap(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)


def test_patient_resamples_keep_whole_patients():
    from medxfer.metrics import bootstrap_metrics

    groups = np.repeat(np.arange(30), 3)
    Y = np.tile([[1.0], [0.0], [0.0]], (30, 1))
    seen = []
    bootstrap_metrics(Y, Y, {"n": lambda Yb, Pb: seen.append(len(Yb)) or 0.0}, groups=groups, n_boot=20)
    assert set(seen[:-1]) == {90}  # 30 patients drawn, 3 rows each, every time


def test_average_precision_interval_covers_the_truth_at_about_its_rate():
    """On simulated data of this project's shape (421 images, 5% positives, weak scores), the
    interval bootstrap_metrics gives average precision covers the population AP in about
    95% of samples; the plain percentile interval, which sits above the point, does worse."""
    from medxfer.metrics import bootstrap_metrics, fast_ap

    rng = np.random.default_rng(1)

    def draw(n):
        y = (rng.random(n) < 0.05).astype(float)
        return y, rng.normal(y * 0.55, 1.0)

    truth = fast_ap(*draw(2_000_000))
    ap = {"ap": lambda Y, P: fast_ap(Y[:, 0], P[:, 0]) if 0 < Y.sum() < len(Y) else None}
    covered = {"bias_corrected": 0, "percentile": 0}
    reps = 0
    for r in range(150):
        y, p = draw(421)
        if y.sum() < 2:
            continue
        reps += 1
        for method, names in (("bias_corrected", ("ap",)), ("percentile", ())):
            res = bootstrap_metrics(y[:, None], p[:, None], ap, n_boot=200, seed=r, bias_corrected=names)
            lo, hi = res["ap"]["ci95"]
            assert res["ap"]["interval"] == method
            covered[method] += lo <= truth <= hi
    rate = {m: c / reps for m, c in covered.items()}
    assert 0.90 <= rate["bias_corrected"] <= 0.99, rate
    assert rate["bias_corrected"] >= rate["percentile"], rate


def test_macro_auc_and_f1_at_once_equal_the_finding_by_finding_numbers():
    """The findings without unknown labels are scored in one call (the bootstrap's hot
    path): the same numbers as fast_auc / F1 finding by finding, with ties, unknown labels,
    one-class findings and a NaN prediction."""
    from medxfer.metrics import _known, fast_auc, macro_auc, macro_f1

    def auc_ref(Y, P):
        out = [fast_auc(*_known(Y[:, j], P[:, j])) for j in range(Y.shape[1])
               if 0 < _known(Y[:, j], P[:, j])[0].sum() < len(_known(Y[:, j], P[:, j])[0])]
        return float(np.mean(out)) if out else None

    def f1_ref(Y, P, thr):
        out = []
        for j in range(Y.shape[1]):
            y, p = _known(Y[:, j], P[:, j])
            if y.sum() > 0:
                pred = p >= thr[j]
                out.append(2 * int((pred & (y == 1)).sum()) / (pred.sum() + y.sum()))
        return float(np.mean(out)) if out else None

    rng = np.random.default_rng(0)
    for trial in range(300):
        n, L = int(rng.integers(2, 60)), int(rng.integers(1, 6))
        Y = (rng.random((n, L)) < rng.random()).astype(float)
        if trial % 3 == 0:
            Y[rng.random((n, L)) < 0.2] = np.nan
        P = np.round(rng.random((n, L)), int(rng.integers(1, 3)))
        if trial % 7 == 0:
            P[0, 0] = np.nan
        a, b = macro_auc(Y, P), auc_ref(Y, P)
        assert (a is None and b is None) or a == b or (np.isnan(a) and np.isnan(b))
        thr = rng.random(L)
        assert macro_f1(Y, P, thr) == f1_ref(Y, P, thr)
