import json

import numpy as np
import pytest

from medxfer.backbones import create_backbone
from medxfer.cli import main
from medxfer.data import read_chestxray14
from medxfer.experiments import cross_validate, cv_table
from medxfer.features import extract_features

pytestmark = pytest.mark.slow  # nested cross-validation of every model


def test_cv_runs_every_model_on_the_same_patient_wise_folds(make_cxr14, sample_table, tmp_path):
    ds = read_chestxray14(make_cxr14(sample_table["image_id"][:60].tolist()))
    fs = extract_features(ds, create_backbone("tiny_random_test"), tmp_path / "f", num_workers=0,
                          progress=False)
    res = cross_validate(fs, n_splits=3, n_boot=30, progress=lambda k, n, line: None)
    names = {"logistic_regression", "linear_head", "bottleneck_cv", "medxfer_train", "bottleneck_cv_code_penalty",
             "bottleneck_adamw_es"}
    assert set(res["models"]) == names
    for name, m in res["models"].items():
        assert len(m["per_fold_macro_auc"]) == 3
        assert not np.isnan(res["oof"][name]).any()  # every row predicted exactly once, out of fold
        assert 0 <= m["pooled_macro_auc"] <= 1
    assert set(res["paired_vs_logistic_regression"]) == names - {"logistic_regression"}
    assert "| bottleneck_cv |" in cv_table(res)
    assert {c["model"] for c in res["tuned_choices"]} == names - {"logistic_regression", "bottleneck_adamw_es"}


def test_cv_cli_writes_table_and_json(make_cxr14, sample_table, tmp_path, capsys):
    root = make_cxr14(sample_table["image_id"][:45].tolist())
    main(["-q", "extract", str(root), "--backbone", "tiny_random_test", "--out", str(tmp_path / "f")])
    capsys.readouterr()
    assert main(["-q", "cv", str(tmp_path / "f"), "--out", str(tmp_path / "cv"), "--folds", "3",
                 "--n-boot", "20", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["bottleneck_cv"]["per_fold_macro_auc"]
    assert (tmp_path / "cv" / "cv.md").read_text().startswith("# 3-fold patient-wise CV")
    assert set(np.load(tmp_path / "cv" / "oof_predictions.npz").files) == set(printed)


def test_paired_comparisons_of_models_and_of_feature_sets(make_cxr14, sample_table, tmp_path, capsys):
    from medxfer.experiments import compare_feature_sets, paired_differences
    from medxfer.metrics import paired_bootstrap_auc

    root = make_cxr14(sample_table["image_id"][:45].tolist())
    ds = read_chestxray14(root)
    a = extract_features(ds, create_backbone("tiny_random_test"), tmp_path / "a", num_workers=0, progress=False)
    b = extract_features(ds, create_backbone("tiny_random_test", pooling="multistage"), tmp_path / "b",
                         num_workers=0, progress=False)
    from medxfer.baselines import TunedLogisticRegression

    fixed = lambda c: (lambda seed: TunedLogisticRegression((c,), random_state=seed))  # noqa: E731
    models = {"lr_weak": fixed(1e-4), "lr_strong": fixed(1e-1)}
    res = cross_validate(a, n_splits=2, n_boot=20, models=models)
    pairs = paired_differences(res, a.Y, a.dataset.patient_ids, n_boot=20)
    d = pairs["lr_strong - lr_weak"]
    same = paired_bootstrap_auc(a.Y, res["oof"]["lr_weak"], res["oof"]["lr_strong"],
                                groups=a.dataset.patient_ids, n_boot=20)
    assert d["difference"] == pytest.approx(same["difference"]) and d["ci95"] == same["ci95"]
    models = {"lr_weak": models["lr_weak"]}
    both = compare_feature_sets(a, b, models=models, n_splits=2, n_boot=20)
    for m in models:
        p = both["paired"][m]
        assert p["macro_auc_a"] == pytest.approx(both["a"]["models"][m]["pooled_macro_auc"])
        assert p["macro_auc_b"] == pytest.approx(both["b"]["models"][m]["pooled_macro_auc"])
        assert p["difference"] == pytest.approx(p["macro_auc_b"] - p["macro_auc_a"])
    # the CLI: medxfer cv A --against B, and its refusals
    assert main(["-q", "cv", str(tmp_path / "a"), "--against", str(tmp_path / "b"), "--out",
                 str(tmp_path / "cmp"), "--folds", "2", "--n-boot", "20",
                 "--models", "logistic_regression"]) == 0
    assert "| logistic_regression |" in capsys.readouterr().out
    assert set(json.loads((tmp_path / "cmp" / "cv_against.json").read_text())["paired"]) == {"logistic_regression"}
    assert main(["-q", "cv", str(tmp_path / "a"), "--against", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "x")]) == 2
    assert "is not a features folder" in capsys.readouterr().err
    assert main(["-q", "cv", str(tmp_path / "a"), "--models", "ridge", "--out", str(tmp_path / "x")]) == 2
