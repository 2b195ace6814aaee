"""What lets training scale to ChestX-ray14's full size (benchmarks/full_scale.py measures it):
float16 features used as stored, chunked products, settings sharing each pass over the
features, the holdout selection, and the out-of-distribution score from moments."""

import tracemalloc

import numpy as np
import pytest
import torch

from medxfer.head import BottleneckClassifier, BottleneckCV
from medxfer.head.joint import fit_lbfgs_shared
from medxfer.head.net import BottleneckNet, StandardizedProduct, column_moments, predict_proba_nets
from medxfer.settings import DEFAULT_CV_GRID, HeadSettings, defaults

from .conftest import multilabel_data


def test_standardized_product_equals_the_float32_formula_and_its_gradient():
    rng = np.random.default_rng(0)
    x = torch.from_numpy((rng.standard_normal((9000, 50)) * 2 + 3).astype(np.float16))
    mean, scale = x.float().mean(0), x.float().std(0) + 1e-6
    w = torch.randn(6, 50, requires_grad=True)
    g = torch.randn(9000, 6)  # 9,000 rows: three chunks of 4,096
    out = StandardizedProduct.apply(x, mean, scale, w)
    (out * g).sum().backward()
    grad, w.grad = w.grad.clone(), None
    ref = ((x.float() - mean) / scale) @ w.T
    (ref * g).sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad, w.grad, rtol=1e-4, atol=1e-2)


def test_column_moments_equal_numpys():
    X = (np.random.default_rng(1).standard_normal((10000, 7)) * 3 + 100).astype(np.float16)
    mean, var = column_moments(X, chunk=999)
    Xf = X.astype(np.float64)
    np.testing.assert_allclose(mean, Xf.mean(0), rtol=1e-12)
    np.testing.assert_allclose(var, Xf.var(0), rtol=1e-9)


def test_float16_features_train_as_their_float32_values_without_a_float32_copy():
    """The stored float16 matrix is used as it is: the fitted model equals the one fitted on
    its float32 values, and numpy never holds a float32 (or wider) copy of the whole matrix."""
    rng = np.random.default_rng(0)
    X16 = rng.standard_normal((40000, 200)).astype(np.float16)
    Y = (rng.random((40000, 3)) < 0.2).astype(np.float32)
    params = dict(bottleneck_dim=4, solver="lbfgs", max_iter=5, validation_fraction=0.0)
    BottleneckClassifier(**params).fit(X16[:100], Y[:100])  # imports done before tracing
    tracemalloc.start()
    m16 = BottleneckClassifier(**params).fit(X16, Y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 0.5 * X16.size * 4, f"numpy peak {peak / 1e6:.0f} MB: a float32 copy was made"
    m32 = BottleneckClassifier(**params).fit(X16.astype(np.float32), Y)
    np.testing.assert_allclose(m16.predict_proba(X16[:500]), m32.predict_proba(X16[:500]),
                               atol=1e-5)


def test_settings_sharing_passes_reach_what_each_reaches_alone():
    """Each setting runs its own L-BFGS; they only share the passes over the features, so each
    model equals the one trained alone (up to the rounding of a wider product), in fewer
    passes than the settings' evaluations summed."""
    X, Y = multilabel_data(n=300)
    base = defaults(HeadSettings) | {"solver": "lbfgs", "validation_fraction": 0.0}
    settings = [base | g for g in DEFAULT_CV_GRID[:2] + DEFAULT_CV_GRID[-3:]]
    nets, iters, passes = fit_lbfgs_shared(X, Y, settings, seed=3)
    alone = [BottleneckClassifier(**(s | {"random_state": 3})).fit(X, Y) for s in settings]
    for net, m, it in zip(nets, alone, iters):
        assert isinstance(net, BottleneckNet)
        np.testing.assert_allclose(predict_proba_nets([net], X, "multilabel"), m.predict_proba(X),
                                   atol=2e-3)
        assert abs(it - m.n_iter_) <= max(3, 0.1 * m.n_iter_)
    assert max(iters) <= passes < sum(iters)


def test_holdout_selection_picks_what_the_inner_cv_picks_on_a_subsample():
    """From ``holdout_from`` rows on, one patient-wise validation part replaces the inner folds:
    on data where the grid has a clear best setting, both pick the same one; the holdout model
    is calibrated on that part only."""
    rng = np.random.default_rng(0)
    n, d = 3000, 40
    X = rng.standard_normal((n, d)).astype(np.float32)
    W = rng.standard_normal((d, 4)) / np.sqrt(d)
    Y = (rng.random((n, 4)) < 1 / (1 + np.exp(-(X @ W * 3 - 1.5)))).astype(np.float32)
    groups = np.arange(n) // 3
    grid = [dict(bottleneck_dim=8, alpha=0.03)] + [dict(bottleneck_dim=None, alpha=a)
                                                   for a in (1.0, 30.0, 1000.0)]
    full = BottleneckCV(grid, holdout_from=None, blend=False).fit(X, Y, groups=groups)
    hold = BottleneckCV(grid, holdout_from=1000, blend=False).fit(X, Y, groups=groups)
    assert full.selection_ == "inner_cv" and hold.selection_ == "holdout"
    assert hold.best_params_ == full.best_params_
    assert len(hold.best_estimator_.members_) == 1 and len(full.best_estimator_.members_) == 5
    Xv, Yv, Pv = hold.validation_
    idx = hold.validation_index_
    assert 0.15 < len(idx) / n < 0.25 and len(Pv) == len(idx)
    # patient-wise: no validation patient among the deployed model's training rows
    assert not set(groups[idx]) & set(np.delete(groups, idx))
    np.testing.assert_allclose(Pv, hold.predict_proba(X[idx]), atol=1e-6)


def test_feature_distance_from_moments_equals_the_direct_fit():
    """Tall features (more rows than columns): the score's parts come from per-fold sums and
    Gram matrices in one pass; they equal the parts fitted on the rows directly."""
    import medxfer.ood as O

    rng = np.random.default_rng(0)
    X = (rng.standard_normal((600, 10)) @ rng.standard_normal((10, 30))
         + rng.standard_normal((600, 30)) * 0.3 + 5).astype(np.float16)
    fold = rng.integers(0, 3, 600)
    mom = O._fold_moments(X, fold, 3)
    for k in (0, None):
        rows = fold != k if k is not None else None
        direct = O._fit_parts(X[rows if rows is not None else slice(None)].astype(np.float32), 8)
        moments = O._parts_from_moments(O._without(mom, k), 8, X, rows)
        for name, a, b in zip(("mean", "scale", "components", "variances", "residual"), direct, moments):
            if name == "components":  # up to sign
                np.testing.assert_allclose(np.abs((np.asarray(a) * b).sum(1)), 1, atol=1e-4)
            else:
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)


def test_train_with_the_holdout_says_so_in_metrics_card_and_output(tiny_trained, tmp_path, capsys):
    """`medxfer train --holdout-from N` on more than N images: the model records that one
    validation part chose it and is calibrated on that part alone; the command and the card
    say so (not "fold models averaged")."""
    import json

    from medxfer.card import build_card, card_markdown
    from medxfer.cli import main

    feats = tiny_trained / "f"  # 30 bundled images, tiny backbone
    assert main(["train", str(feats), "--out", str(tmp_path / "m"), "--holdout-from", "20",
                 "--max-iter", "30"]) == 0
    printed = capsys.readouterr().out
    assert "one patient-wise validation part" in printed and "fold models averaged" not in printed
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    found = dict(_walk(meta))
    assert found.get("selected_by") == "holdout"
    assert 3 <= found["validation_images"] <= 10  # the part (1/5 of the patients), not all 30
    assert found["members"] in (1, 2)
    assert "one patient-wise validation part" in card_markdown(build_card(tmp_path / "m"))


def _walk(obj, key=None):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v, key)
    else:
        yield key, obj


def test_study_all_benchmark_collects_a_run_for_the_docs(tmp_path):
    """benchmarks/study_all.py: GNU time's summary read, each finished study's tables,
    result.json and figures copied, the times recorded; an unfinished study is None."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "study_all.py"
    spec = importlib.util.spec_from_file_location("study_all_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    log = ("\tElapsed (wall clock) time (h:mm:ss or m:ss): 0:27:41.52\n"
           "\tMaximum resident set size (kbytes): 2345678\n")
    assert bench.parse_time_log(log) == {"wall_seconds": 1661.5, "peak_rss_gb": 2.35}
    with pytest.raises(SystemExit, match="GNU time"):
        bench.parse_time_log("no summary here")
    run = tmp_path / "run" / "compare"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"seconds": 12.5, "images_used": 421}))
    (run / "compare.md").write_text("| a |\n|---|\n| 1 |\n")
    (run / "compare_auc.png").write_bytes(b"\x89PNG")
    docs = tmp_path / "docs"
    out = bench.collect(tmp_path / "run", {"wall_seconds": 20.0, "peak_rss_gb": 1.0}, {"commit": "x"},
                        docs=docs)
    assert out["studies"]["compare"] == {"seconds": 12.5, "images_used": 421}
    assert out["studies"]["efficiency"] is None and out["sum_of_study_seconds"] == 12.5
    assert (docs / "results" / "studies" / "compare" / "compare.md").is_file()
    assert (docs / "img" / "studies" / "compare_auc.png").is_file()
    assert json.loads((docs / "results" / "studies" / "study_all.json").read_text())["wall_seconds"] == 20.0
