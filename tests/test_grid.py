import numpy as np
import pytest
import torch

from medxfer.head import BottleneckClassifier, BottleneckNet, fit_grid

from .conftest import multilabel_data


def _data(n=400, d=30, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    Y = (X[:, :3] > 0).astype(np.float32)
    Y[::9, 1] = np.nan
    return X, Y


GRID = [dict(bottleneck_dim=8, lr=1e-2, l1=0.0, l2=0.0, imbalance="none"),
        dict(bottleneck_dim=16, lr=1e-2, l1=0.05, l2=0.0, imbalance="pos_weight"),
        dict(bottleneck_dim=8, lr=1e-3, alpha=1e-2, imbalance="focal"),
        dict(bottleneck_dim=4, lr=1e-2, imbalance="class_balanced")]


@pytest.mark.slow
def test_grid_trains_every_setting_independently_in_one_pass():
    X, Y = _data()
    ests = fit_grid(X, Y, GRID, batch_size=64, max_epochs=40, patience=5)
    assert [e.bottleneck_dim for e in ests] == [8, 16, 8, 4]
    Xt, Yt = _data(seed=1)
    for e in ests:
        assert e.score(Xt, Yt) > 0.85  # every setting learned the separable problem
        assert e.transform(Xt).shape == (400, e.bottleneck_dim)
    # the strong-l1 setting has sparser codes than the unregularized one
    def near_zero(e):
        h = np.abs(e.transform(Xt))
        return (h < 1e-2 * h.max()).mean()
    assert near_zero(ests[1]) > near_zero(ests[0])
    # a setting's result does not depend on the other settings in the grid
    for i in (0, 2):
        alone = fit_grid(X, Y, [GRID[i]], batch_size=64, max_epochs=40, patience=5)[0]
        np.testing.assert_allclose(alone.predict_proba(Xt), ests[i].predict_proba(Xt), atol=1e-4)


def test_grid_rejects_what_it_cannot_share():
    X, Y = _data(n=50)
    with pytest.raises(ValueError, match="fit_grid supports bottleneck settings"):
        fit_grid(X, Y, [dict(imbalance="balanced_sampler")])
    with pytest.raises(ValueError, match="validation_fraction must be in"):
        fit_grid(X, Y, GRID[:1], validation_fraction=0.0)


@pytest.mark.slow
def test_tune_cli_picks_the_best_setting_and_saves_a_usable_model(make_cxr14, sample_table, tmp_path, capsys):
    import json

    from medxfer.cli import main
    from medxfer.model_io import TrainedModel

    root = make_cxr14(sample_table["image_id"][:60].tolist())
    main(["-q", "extract", str(root), "--backbone", "tiny_random_test", "--out", str(tmp_path / "f")])
    (tmp_path / "grid.json").write_text(json.dumps(GRID[:3]))
    capsys.readouterr()
    assert main(["-q", "tune", str(tmp_path / "f"), "--out", str(tmp_path / "m"), "--grid",
                 str(tmp_path / "grid.json"), "--epochs", "10", "--patience", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    table = json.loads((tmp_path / "m" / "tune.json").read_text())
    assert len(table) == 3 and r["best"]["val_macro_auc"] == max(t["val_macro_auc"] for t in table)
    model = TrainedModel.load(tmp_path / "m")
    assert model.estimator.bottleneck_dim == r["best"]["bottleneck_dim"]
    assert main(["-q", "evaluate", str(tmp_path / "m"), str(tmp_path / "f"), "--out", str(tmp_path / "e"),
                 "--n-boot", "20", "--allow-training-patients"]) == 0


@pytest.mark.slow
def test_grid_setting_equals_the_same_setting_trained_alone():
    X, Y = multilabel_data(n=200)
    groups = np.arange(200) // 2
    setting = dict(bottleneck_dim=8, lr=1e-2, l1=1e-3, l2=1e-3, alpha=1e-3, imbalance="pos_weight")
    grid = fit_grid(X, Y, [setting, setting | {"l1": 0.05}], groups=groups, batch_size=32,
                    max_epochs=15, patience=4)
    alone = BottleneckClassifier(**setting, solver="adamw", batch_size=32, max_epochs=15,
                                 patience=4).fit(X, Y, groups=groups)
    assert grid[0].best_epoch_ == alone.best_epoch_
    np.testing.assert_allclose(grid[0].predict_proba(X), alone.predict_proba(X), atol=1e-4)


def test_grid_keeps_trained_weights_when_validation_auc_is_undefined():
    X, Y = multilabel_data(n=120)
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
