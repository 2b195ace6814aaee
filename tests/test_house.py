"""One source of defaults, a thin CLI that refuses bad values in one line, the head as one
package, and scikit-learn's own estimator checks."""

import warnings
from dataclasses import asdict, fields

import numpy as np
import pytest
import torch

from medxfer.cli import build_parser, main, train_settings
from medxfer.head import BottleneckClassifier, BottleneckNet, HeadLoss, fit_grid, resolve_device
from medxfer.head.net import predict_proba_nets
from medxfer.settings import (ExtractSettings, FinetuneSettings, HeadSettings, PackageSettings,
                              TuneSettings)


def _data(n=160, d=12, L=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    Y = (X[:, :L] + 0.3 * rng.normal(size=(n, L)) > 0).astype(np.float32)
    return X, Y


def test_estimator_and_train_command_resolve_to_the_same_settings():
    args = build_parser().parse_args(["train", "FEATS", "--out", "M"])
    head, packaging = train_settings(args)
    assert asdict(head) == BottleneckClassifier().get_params()
    assert asdict(head) == asdict(HeadSettings())
    assert packaging == PackageSettings()


@pytest.mark.parametrize("command,cls", [("train", HeadSettings), ("train", PackageSettings),
                                         ("extract", ExtractSettings), ("tune", TuneSettings),
                                         ("finetune", FinetuneSettings)])
def test_help_shows_every_option_with_its_default(command, cls, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in fields(cls):
        if f.name == "task":
            continue
        opt = f.metadata.get("cli") or "--" + f.name.replace("_", "-")
        if f.name in ("random_state",) and command != "train":
            continue
        assert opt in text, opt
    assert text.count("(default:") >= len([f for f in fields(cls) if f.name != "task"]) - 1


@pytest.mark.parametrize("argv,needle", [
    (["train", "F", "--out", "M", "--l1", "-1"], "--l1 must be a float in the range [0.0, inf); got -1.0"),
    (["train", "F", "--out", "M", "--cb-beta", "1.0"], "--cb-beta must be a float in the range [0.0, 1.0); got 1.0"),
    (["train", "F", "--out", "M", "--epochs", "0"], "--epochs must be an int in the range [1, inf); got 0"),
    (["train", "F", "--out", "M", "--validation-fraction", "1.5"], "--validation-fraction"),
    (["extract", "D", "--out", "F", "--batch-size", "0"], "--batch-size must be an int"),
    (["finetune", "D", "--out", "M", "--lr-backbone", "0"], "--lr-backbone must be a float"),
    (["cv", "F", "--out", "O", "--folds", "1"], "--folds must be an int in the range [2, inf); got 1"),
    (["evaluate", "M", "D", "--out", "O", "--n-boot", "-5"], "--n-boot must be an int"),
])
def test_bad_values_exit_2_with_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_config_file_both_spellings_unknown_keys_and_bad_values(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nl1 = -0.5\n")
    for argv in (["--config", str(cfg)], [f"--config={cfg}"]):
        assert main(argv + ["train", "F", "--out", "M"]) == 2
        err = capsys.readouterr().err
        assert "[train] l1 must be a float in the range [0.0, inf); got -0.5" in err
    cfg.write_text("[train]\nlambda1 = 0.1\n")
    assert main([f"--config={cfg}", "train", "F", "--out", "M"]) == 2
    assert "[train] has no option 'lambda1'" in capsys.readouterr().err
    cfg.write_text("[trian]\nl1 = 0.1\n")
    assert main(["--config", str(cfg), "train", "F", "--out", "M"]) == 2
    assert "unknown section [trian]" in capsys.readouterr().err
    cfg.write_text("[train]\nepochs = 7\nmax_epochs = 7\n")  # option name or field name
    parser = build_parser()
    from medxfer.cli import apply_config
    apply_config(parser, str(cfg))
    assert train_settings(parser.parse_args(["train", "F", "--out", "M"]))[0].max_epochs == 7


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


def test_grid_setting_equals_the_same_setting_trained_alone():
    X, Y = _data(n=200)
    groups = np.arange(200) // 2
    setting = dict(bottleneck_dim=8, lr=1e-2, l1=1e-3, l2=1e-3, alpha=1e-3, imbalance="pos_weight")
    grid = fit_grid(X, Y, [setting, setting | {"l1": 0.05}], groups=groups, batch_size=32,
                    max_epochs=15, patience=4)
    alone = BottleneckClassifier(**setting, solver="adamw", batch_size=32, max_epochs=15,
                                 patience=4).fit(X, Y, groups=groups)
    assert grid[0].best_epoch_ == alone.best_epoch_
    np.testing.assert_allclose(grid[0].predict_proba(X), alone.predict_proba(X), atol=1e-4)


def test_grid_keeps_trained_weights_when_validation_auc_is_undefined():
    X, Y = _data(n=120)
    groups = np.arange(120)
    Y[:, :] = 0.0
    Y[:60, 0] = 1.0  # training rows hold both classes of finding 0 ...
    from sklearn.model_selection import GroupShuffleSplit
    _, va = next(GroupShuffleSplit(n_splits=1, test_size=0.2, random_state=0).split(X, groups=groups))
    Y[va, 0] = 0.0  # ... but no validation row is positive: AUC undefined everywhere
    ests = fit_grid(X, Y, [dict(bottleneck_dim=4, lr=1e-2)], groups=groups, max_epochs=6, patience=3)
    assert ests[0].best_epoch_ >= 1  # the epoch with the lowest validation loss, not epoch 0
    torch.manual_seed(0)
    init = BottleneckNet(12, 4, 3)
    assert not torch.allclose(ests[0].net_.head.weight, init.head.weight)


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


def test_finetune_validates_on_the_network_device(monkeypatch, make_cxr14, sample_table):
    """Validation batches are scored by the network where it lives (fake CUDA check: the
    device the code resolves is recorded and must be the one every forward pass ran on)."""
    from medxfer.data import read_chestxray14
    from medxfer.finetune import finetune

    ds = read_chestxray14(make_cxr14(sample_table["image_id"][:30].tolist()))
    seen = []
    original = BottleneckNet.forward

    def spy(self, x):
        seen.append((x.device, self.head.weight.device))
        return original(self, x)
    monkeypatch.setattr(BottleneckNet, "forward", spy)
    model = finetune(ds, settings=FinetuneSettings(backbone="tiny_random_test", max_steps=2,
                                                   batch_size=8, device="auto"), progress=False)
    assert seen and all(a == b for a, b in seen)
    assert model.config["finetune"]["device"] == "cpu"


def test_bottleneck_classifier_passes_sklearn_check_estimator():
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(BottleneckClassifier(8, max_epochs=30, patience=5, lr=1e-2),
                                  on_fail=None)
    failed = [(r["check_name"], repr(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert len(results) > 50 and failed == []


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


def test_lbfgs_solver_trains_full_batch_and_reports_loss_terms():
    X, Y = _data(n=200)
    m = BottleneckClassifier(8, solver="lbfgs", alpha=0.01, l1=1e-3, l2=1e-3,
                             validation_fraction=0.0).fit(X, Y)
    assert m.score(X, Y) > 0.85
    assert set(m.loss_terms_) >= {"ce", "code_l1", "code_l2", "weight_penalty"}
    assert m.loss_terms_["code_l1"] > 0 and m.loss_terms_["weight_penalty"] > 0
    with pytest.raises(ValueError, match="balanced_sampler"):
        BottleneckClassifier(4, solver="lbfgs", imbalance="balanced_sampler").fit(X, Y, groups=np.arange(200))


def test_config_checks_follow_the_command_and_map_zero_to_none(tmp_path):
    from medxfer.cli import apply_config, resolve_settings

    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nbottleneck-dim = 0\nvalidation_fraction = 0.0\n")
    parser = build_parser()
    apply_config(parser, str(cfg))
    head = resolve_settings(parser.parse_args(["train", "F", "--out", "M"]))[HeadSettings]
    assert head.bottleneck_dim is None and head.validation_fraction == 0.0


def test_bad_device_is_one_line(capsys):
    from medxfer.head import resolve_device

    with pytest.raises(ValueError, match="device must be auto, cpu, cuda"):
        resolve_device("gpu")


def test_train_refuses_refit_and_ensemble_with_selection(tmp_path):
    from medxfer.errors import DataError
    from medxfer.features import FeatureSet
    from medxfer.data import Dataset
    from medxfer.pipeline import train_from_features
    import pandas as pd

    X, Y = _data(n=40)
    table = pd.DataFrame({"image_id": [f"{i}.png" for i in range(40)], "patient_id": [str(i) for i in range(40)],
                          "path": [f"{i}.png" for i in range(40)]})
    fs = FeatureSet(X, Dataset(table, Y, ("A", "B", "C"), name="t"), {"backbone": {"name": "x"}})
    with pytest.raises(DataError, match="refit retrains on the validation patients"):
        train_from_features(fs, head={"refit": True})
    with pytest.raises(DataError, match="--ensemble applies without selection"):
        train_from_features(fs, head={"n_ensemble": 3})


def test_model_folder_files_share_one_permission_mode(tmp_path):
    from medxfer.model_io import TrainedModel

    X, Y = _data(n=60)
    m = BottleneckClassifier(4, validation_fraction=0.0).fit(X, Y)
    folder = TrainedModel(m, ["A", "B", "C"], np.full(3, 0.5), {"name": "x"}).save(tmp_path / "m")
    modes = {(folder / n).stat().st_mode & 0o777 for n in ("model.json", "model.safetensors")}
    assert len(modes) == 1


def test_bottleneck_cv_refit_starts_clean():
    from medxfer.head import BottleneckCV

    X, Y = _data(n=120)
    groups = np.arange(120)
    cv = BottleneckCV([dict(bottleneck_dim=4, alpha=0.05), dict(bottleneck_dim=None, alpha=1.0)],
                      n_splits=3).fit(X, Y, groups=groups)
    assert hasattr(cv, "blend_score_")
    cv.set_params(grid=[dict(bottleneck_dim=None, alpha=1.0)]).fit(X, Y, groups=groups)
    assert not hasattr(cv, "blend_score_")  # no bottleneck setting to blend with this time
