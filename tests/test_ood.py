"""Out-of-distribution flags: feature distance and DICOM headers."""

import json

import numpy as np
import pytest

from medxfer.cli import main
from medxfer.model_io import TrainedModel


def test_feature_distance_flags_shifted_inputs_at_its_stated_rate():
    from medxfer.ood import FeatureDistance

    rng = np.random.default_rng(0)
    A = rng.normal(size=(40, 8))
    X = rng.normal(size=(400, 8)) @ A.T + rng.normal(scale=0.1, size=(400, 40))
    od = FeatureDistance.fit(X[:300], quantile=0.99)
    assert od.flag(X[300:]).mean() <= 0.05  # new images like the training ones: ~1% flagged
    assert od.flag(X[300:] + 3.0).all()  # far away: all flagged
    assert od.flag(rng.normal(size=(50, 40)) * 3).all()  # unlike the training structure
    back = FeatureDistance.from_state(*od.to_state())
    np.testing.assert_allclose(back.score(X[:5]), od.score(X[:5]), rtol=1e-5)


def test_principal_components_of_a_tall_matrix_equal_the_svd():
    from medxfer.ood import _top_components

    rng = np.random.default_rng(1)
    Z = (rng.normal(size=(500, 6)) @ rng.normal(size=(6, 30)) + 0.1 * rng.normal(size=(500, 30))).astype(np.float32)
    _, s, vt = np.linalg.svd(Z, full_matrices=False)
    s2, v2 = _top_components(Z, 8)  # 500 > 30 rows: the Gram-matrix path
    np.testing.assert_allclose(s2, s[:8], rtol=1e-4)
    np.testing.assert_allclose(np.abs(np.sum(v2 * vt[:8], axis=1)), 1.0, atol=1e-3)  # same axes up to sign
    s3, v3 = _top_components(Z[:20], 8)  # wide: the thin SVD
    np.testing.assert_allclose(s3, np.linalg.svd(Z[:20], compute_uv=False)[:8], rtol=1e-5)
    # rank 6 asked for 12 axes: the 6 beyond the rank keep (near) zero variance, as in the SVD
    R = (rng.normal(size=(2000, 6)) @ rng.normal(size=(6, 40))).astype(np.float32)
    s4, _ = _top_components(R, 12)
    assert (s4[6:] ** 2 / 1999).max() < 1e-8 < (s4[:6] ** 2 / 1999).min()


def test_predict_flags_a_brain_mr_by_header_and_saves_the_score(make_cxr14, sample_table, tmp_path, capsys):
    import pydicom
    from pathlib import Path

    root = make_cxr14(sample_table["image_id"][:40].tolist())
    main(["-q", "extract", str(root), "--backbone", "tiny_random_test", "--out", str(tmp_path / "f")])
    assert main(["-q", "train", str(tmp_path / "f"), "--out", str(tmp_path / "m"), "--no-select",
                 "--max-iter", "50"]) == 0
    model = TrainedModel.load(tmp_path / "m")
    assert model.ood is not None and model.ood.threshold > 0 and (tmp_path / "m" / "ood.safetensors").is_file()
    mr = Path(pydicom.__file__).parent / "data" / "test_files" / "MR_small_jpeg_ls_lossless.dcm"
    chest = root / "images" / sample_table["image_id"][5]
    capsys.readouterr()
    assert main(["-q", "predict", str(tmp_path / "m"), str(mr), str(chest), "--json"]) == 0
    rows = {Path(r["image"]).name: r["out_of_distribution"] for r in json.loads(capsys.readouterr().out)["predictions"]}
    assert rows[mr.name]["flag"] and "Modality is MR" in rows[mr.name]["reason"]
    assert rows[chest.name]["threshold"] == pytest.approx(model.ood.threshold, abs=1e-3)
    assert main(["-q", "predict", str(tmp_path / "m"), str(mr)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"{mr.name}: findings withheld (out of distribution: DICOM Modality is MR")

