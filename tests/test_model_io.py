"""The model folder: saved, loaded, and named with the fix when damaged."""

import json

import numpy as np
import pytest

from medxfer.cli import main
from medxfer.errors import ModelError
from medxfer.head import BottleneckClassifier
from medxfer.model_io import TrainedModel

from .conftest import multilabel_data as _data


def _separable(n=200, d=20, L=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    Y = (X[:, :L] > 0).astype(np.float32)  # finding j is the sign of feature j
    return X, Y


def test_save_load_round_trip_identical(tmp_path):
    X, Y = _separable()
    m = BottleneckClassifier(8, max_epochs=20).fit(X, Y)
    backbone = {"name": "tiny_random_test", "weights_sha256": None, "pooling": "avg",
                "feature_dim": 20, "preprocessing": {"size": 64}}
    tm = TrainedModel(m, ["A", "B", "C"], np.array([0.3, 0.5, 0.7]), backbone)
    tm.save(tmp_path / "model")
    assert not list((tmp_path / "model").glob("*.pt*")) and not list((tmp_path / "model").glob("*.pkl"))
    back = TrainedModel.load(tmp_path / "model")
    np.testing.assert_array_equal(back.predict_proba(X), m.predict_proba(X))
    np.testing.assert_array_equal(back.thresholds, [0.3, 0.5, 0.7])
    assert back.label_names == ["A", "B", "C"]
    with pytest.raises(ModelError, match="they differ in name, feature_dim"):
        back.check_features({"backbone": backbone | {"name": "efficientnet_lite0", "feature_dim": 1280}})
    with pytest.raises(ModelError, match="is not a medxfer model folder"):
        TrainedModel.load(tmp_path)


def test_model_folder_files_share_one_permission_mode(tmp_path):
    from medxfer.model_io import TrainedModel

    X, Y = _data(n=60)
    m = BottleneckClassifier(4, validation_fraction=0.0).fit(X, Y)
    folder = TrainedModel(m, ["A", "B", "C"], np.full(3, 0.5), {"name": "x"}).save(tmp_path / "m")
    modes = {(folder / n).stat().st_mode & 0o777 for n in ("model.json", "model.safetensors")}
    assert len(modes) == 1


@pytest.fixture
def model_dir(make_cxr14, sample_table, tmp_path):
    root = make_cxr14(sample_table["image_id"][:30].tolist())
    main(["-q", "extract", str(root), "--backbone", "tiny_random_test", "--out", str(tmp_path / "f")])
    assert main(["-q", "train", str(tmp_path / "f"), "--out", str(tmp_path / "m"), "--no-select",
                 "--max-iter", "50"]) == 0
    return tmp_path / "m"


@pytest.mark.parametrize("damage", ["truncate_weights", "junk_weights", "junk_json", "json_list",
                                    "json_missing_keys"])
def test_a_damaged_model_folder_names_the_file_and_the_fix(model_dir, damage, capsys):
    w, j = model_dir / "model.safetensors", model_dir / "model.json"
    if damage == "truncate_weights":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif damage == "junk_weights":
        w.write_bytes(b"\x00junk" * 10)
    elif damage == "junk_json":
        j.write_bytes(b"{not json")
    elif damage == "json_list":
        j.write_text("[1, 2]")
    else:
        meta = json.loads(j.read_text())
        del meta["thresholds"]
        j.write_text(json.dumps(meta))
    with pytest.raises(ModelError) as exc:
        TrainedModel.load(model_dir)
    msg = str(exc.value)
    assert "model." in msg and ("again" in msg or "format" in msg)
    capsys.readouterr()
    assert main(["-q", "predict", str(model_dir), str(model_dir / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "model." in err


def test_packaging_fallbacks_are_recorded_by_name_and_said(caplog):
    from medxfer.metrics import fit_calibration
    from medxfer.model_io import fallback_record

    rng = np.random.default_rng(0)
    Y = (rng.random((60, 3)) < 0.3).astype(float)
    Y[:, 1] = 0.0  # no positives among the validation labels
    P = np.clip(rng.random((60, 3)), 0.01, 0.99)
    P[:, 2] = np.where(Y[:, 2] == 1, 0.2, 0.8)  # reversed: Platt's slope would be negative
    with caplog.at_level("WARNING", logger="medxfer.model_io"):
        rec = fallback_record(Y, fit_calibration(Y, P), ["A", "B", "C"])
    assert rec == {"threshold_0.5_no_both_classes": ["B"],
                   "calibration_identity_no_both_classes": ["B"], "calibration_shift_only": ["C"]}
    assert "B: threshold kept at 0.5" in caplog.text and "C: calibration reduced to a shift" in caplog.text
