"""Bad input a user meets: oversized images, interrupted extractions, damaged files."""

import json
import struct
import zlib

import numpy as np
import pytest

import medxfer.features as features_mod
from medxfer.backbones import create_backbone
from medxfer.cli import main
from medxfer.data import read_chestxray14
from medxfer.errors import FeatureCacheError, ImageReadError, ModelError
from medxfer.features import FeatureSet, extract_features
from medxfer.images import load_image
from medxfer.model_io import TrainedModel


def _png_header_only(path, w, h):
    """A PNG whose header claims w x h pixels (a decompression bomb's header) and no pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_oversized_images_are_refused_before_decoding(tmp_path):
    bomb = _png_header_only(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(ImageReadError, match="20000 x 20000 = 400,000,000 pixels, above the limit"):
        load_image(bomb)
    big = _png_header_only(tmp_path / "big.png", 5000, 5000)
    with pytest.raises(ImageReadError, match="--max-pixels"):
        load_image(big, max_pixels=1000 * 1000)
    with pytest.raises(ImageReadError, match="400,000,000 pixels, above the limit of 178,956,970"):
        load_image(bomb, max_pixels=None)  # Pillow's own guard, named and explained the same way


def test_a_bomb_in_a_dataset_is_skipped_and_recorded(make_cxr14, sample_table, tmp_path):
    root = make_cxr14(sample_table["image_id"][:6].tolist())
    victim = sorted((root / "images").glob("*.png"))[2]
    _png_header_only(victim, 20000, 20000)
    fs = extract_features(read_chestxray14(root), create_backbone("tiny_random_test"), tmp_path / "f",
                          num_workers=1, progress=False)
    assert len(fs) == 5 and len(fs.skipped) == 1
    assert victim.name in fs.skipped[0].item and "above the limit" in fs.skipped[0].detail


def test_an_interrupted_extraction_never_looks_like_a_cache_and_resumes(make_cxr14, sample_table,
                                                                         tmp_path, monkeypatch):
    ds = read_chestxray14(make_cxr14(sample_table["image_id"][:12].tolist()))
    bb, out = create_backbone("tiny_random_test"), tmp_path / "f"
    real = features_mod._write_shard
    calls = []

    def dies_after_one(*a, **k):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(features_mod, "_write_shard", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        extract_features(ds, bb, out, shard_size=4, num_workers=0, progress=False)
    assert not (out / "manifest.json").exists() and (out / "manifest.partial.json").is_file()
    with pytest.raises(FeatureCacheError, match="did not finish; run the same `medxfer extract`"):
        FeatureSet.load(out)
    assert main(["-q", "train", str(out), "--out", str(tmp_path / "m")]) == 2
    monkeypatch.setattr(features_mod, "_write_shard", real)
    fs = extract_features(ds, bb, out, shard_size=4, num_workers=0, progress=False)
    assert len(fs) == 12 and (out / "manifest.json").is_file() and not (out / "manifest.partial.json").exists()
    # a damaged shard is named, with what to do, and no "will be recomputed" promise
    shard = out / "shards" / "00001.npy"
    shard.write_bytes(shard.read_bytes()[:40])
    with pytest.raises(FeatureCacheError, match="00001.npy.*Run `medxfer extract` again"):
        FeatureSet.load(out)


@pytest.fixture
def model_dir(make_cxr14, sample_table, tmp_path):
    root = make_cxr14(sample_table["image_id"][:30].tolist())
    main(["-q", "extract", str(root), "--backbone", "tiny_random_test", "--out", str(tmp_path / "f")])
    assert main(["-q", "train", str(tmp_path / "f"), "--out", str(tmp_path / "m"), "--no-select",
                 "--epochs", "3"]) == 0
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


def test_damaged_features_files_are_named(make_cxr14, sample_table, tmp_path):
    ds = read_chestxray14(make_cxr14(sample_table["image_id"][:8].tolist()))
    out = tmp_path / "f"
    extract_features(ds, create_backbone("tiny_random_test"), out, num_workers=0, progress=False)
    (out / "labels.npy").write_bytes(b"junk")
    with pytest.raises(FeatureCacheError, match="labels.npy cannot be read"):
        FeatureSet.load(out)
    (out / "manifest.json").write_text("{broken")
    with pytest.raises(FeatureCacheError, match="manifest.json' is not readable JSON"):
        FeatureSet.load(out)
    np.save(out / "labels.npy", ds.labels)
    (out / "manifest.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(FeatureCacheError, match="lacks or garbles"):
        FeatureSet.load(out)


def test_inspect_check_images_names_every_problem(sample_root, tmp_path, capsys):
    from PIL import Image

    src = sorted((sample_root / "images").glob("*.png"))[:2]
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "a.png").write_bytes(src[0].read_bytes())
    (d / "a_copy.png").write_bytes(src[0].read_bytes())          # duplicate pixels
    (d / "b.png").write_bytes(src[1].read_bytes()[:300])          # truncated
    Image.new("RGBA", (64, 64), (10, 20, 30, 255)).save(d / "c.png")   # unusual mode
    Image.fromarray(np.full((64, 64), 200, np.uint16)).save(d / "e.png")  # 8-bit data in 16 bits
    _png_header_only(d / "f.png", 20000, 20000)                   # oversized
    rows = ["path,patient_id,Effusion"] + [f"{d / n},{i},0" for i, n in enumerate(
        ["a.png", "a_copy.png", "b.png", "c.png", "e.png", "f.png"])]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    assert main(["inspect", str(tmp_path / "t.csv"), "--check-images", "--workers", "2", "--json"]) == 1
    found = json.loads(capsys.readouterr().out)["image_checks"]["problems"]
    kinds = {(p["kind"], p["path"].rsplit("/", 1)[-1]) for p in found}
    assert kinds == {("duplicate", "a.png"), ("duplicate", "a_copy.png"), ("unreadable", "b.png"),
                     ("unusual_mode", "c.png"), ("bit_depth", "e.png"), ("oversized", "f.png")}
    assert main(["inspect", str(tmp_path / "t.csv"), "--check-images", "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "image check: 6 images decoded; 1 bit_depth, 2 duplicate, 1 oversized" in out


def test_default_shards_are_small_enough_for_a_resume_to_keep_work(make_cxr14, sample_table, tmp_path):
    from medxfer.features import auto_shard_size

    assert auto_shard_size(421) == 32 and auto_shard_size(112120) == 1024 and auto_shard_size(5) == 32
    ds = read_chestxray14(make_cxr14(sample_table["image_id"][:40].tolist()))
    extract_features(ds, create_backbone("tiny_random_test"), tmp_path / "f", num_workers=0, progress=False)
    assert len(list((tmp_path / "f" / "shards").glob("*.npy"))) == 2


def _pydicom_files():
    import pydicom
    from pathlib import Path

    return sorted((Path(pydicom.__file__).parent / "data").rglob("*.dcm"))


def test_every_dicom_file_shipped_with_pydicom_decodes_or_is_refused_clearly():
    """pydicom's own test corpus (104 files: compressed transfer syntaxes, colour, multi-frame,
    files without pixels, broken headers): each gives a 2-D image in [0, 1] or an
    ImageReadError naming the file, never another exception."""
    from medxfer.errors import MedxferError

    files = _pydicom_files()
    assert len(files) >= 100
    decoded = 0
    for f in files:
        try:
            arr = load_image(f)
        except MedxferError as exc:
            assert f.name in str(exc)
            continue
        assert arr.ndim == 2 and arr.dtype == np.float32 and np.isfinite(arr).all(), f.name
        assert 0 <= arr.min() and arr.max() <= 1, f.name
        decoded += 1
    assert decoded >= 65  # JPEG lossless, JPEG-LS, JPEG 2000 and colour decode (GDCM)


def test_compressed_and_colour_dicom_decode_to_the_same_pixels():
    import pydicom
    from pathlib import Path

    d = Path(pydicom.__file__).parent / "data" / "test_files"
    plain = load_image(d / "MR_small.dcm")
    for name in ("MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"):
        np.testing.assert_allclose(load_image(d / name), plain, atol=1e-6, err_msg=name)
    rgb = load_image(d / "SC_rgb_rle.dcm")  # colour -> luminance, as for a colour PNG
    assert rgb.shape == (100, 100)
    for name in ("SC_rgb_rle_16bit.dcm", "SC_ybr_full_422_uncompressed.dcm", "SC_rgb_jpeg_dcmtk.dcm"):
        np.testing.assert_allclose(load_image(d / name), rgb, atol=0.01, err_msg=name)
    assert load_image(d / "SC_rgb_rle_2frame.dcm").shape == (100, 100)  # the first frame
    with pytest.raises(ImageReadError, match="holds no image"):
        load_image(d / "rtplan.dcm")


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
                 "--epochs", "3"]) == 0
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
    assert "may not be a chest radiograph" in capsys.readouterr().err
