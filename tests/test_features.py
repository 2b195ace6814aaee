import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import medxfer.features as features_mod
from medxfer.backbones import create_backbone
from medxfer.cli import main
from medxfer.data import read_chestxray14
from medxfer.errors import FeatureCacheError
from medxfer.features import FeatureSet, extract_features, read_manifest

from .test_images import _png_header_only


@pytest.fixture
def small(make_cxr14, sample_table):
    return read_chestxray14(make_cxr14(sample_table["image_id"][:20].tolist()))


def test_round_trip_keeps_rows_labels_and_manifest(small, tmp_path):
    bb = create_backbone("tiny_random_test")
    fs = extract_features(small, bb, tmp_path / "f", shard_size=8, num_workers=0, progress=False)
    assert fs.features.shape == (20, 32) and fs.features.dtype == np.float16
    again = FeatureSet.load(tmp_path / "f")
    np.testing.assert_array_equal(again.features, fs.features)
    np.testing.assert_array_equal(again.Y, small.labels)
    assert again.dataset.table["image_id"].tolist() == small.table["image_id"].tolist()
    m = again.manifest
    assert m["backbone"]["name"] == "tiny_random_test" and m["n_rows"] == 20
    assert m["dataset_fingerprint"] == small.fingerprint()
    assert len(list((tmp_path / "f" / "shards").glob("*.npy"))) == 3


def test_stale_features_are_never_reused(small, tmp_path):
    extract_features(small, create_backbone("tiny_random_test"), tmp_path / "f", num_workers=0,
                     progress=False)
    other = create_backbone("tiny_random_test", input_size=96)
    with pytest.raises(FeatureCacheError, match=r"was made differently \(backbone preprocessing differ\).*--overwrite"):
        extract_features(small, other, tmp_path / "f", num_workers=0, progress=False)
    with pytest.raises(FeatureCacheError, match="dataset_fingerprint"):
        extract_features(small.subset(range(10)), create_backbone("tiny_random_test"), tmp_path / "f",
                         num_workers=0, progress=False)
    fs = extract_features(small, other, tmp_path / "f", num_workers=0, progress=False, overwrite=True)
    assert fs.manifest["backbone"]["preprocessing"]["size"] == 96


def test_corrupt_or_missing_shard_is_recomputed_identically(small, tmp_path):
    bb = create_backbone("tiny_random_test")
    ref = extract_features(small, bb, tmp_path / "f", shard_size=8, num_workers=0, progress=False)
    shard = tmp_path / "f" / "shards" / "00001.npy"
    shard.write_bytes(shard.read_bytes()[:-16] + b"\0" * 16)  # silent corruption
    (tmp_path / "f" / "shards" / "00002.json").unlink()  # killed before the marker
    with pytest.raises(FeatureCacheError, match=r"shard 1 \(00001.npy\) is missing or corrupt"):
        FeatureSet.load(tmp_path / "f")
    again = extract_features(small, bb, tmp_path / "f", shard_size=8, num_workers=0, progress=False)
    np.testing.assert_array_equal(again.features, ref.features)


def test_unreadable_image_is_skipped_and_recorded(small, tmp_path):
    bad = small.table["path"].iloc[3]
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n garbage")
    fs = extract_features(small, create_backbone("tiny_random_test"), tmp_path / "f",
                          num_workers=0, progress=False)
    assert len(fs) == 19
    assert small.table["image_id"].iloc[3] not in fs.dataset.table["image_id"].tolist()
    (p,) = fs.skipped
    assert p.kind == "unreadable_image" and p.item == bad and "cannot read image" in p.detail
    assert not np.isnan(fs.features.astype(float)).any()


@pytest.mark.slow
def test_killed_extraction_resumes_to_identical_result(make_cxr14, sample_table, tmp_path):
    root = make_cxr14(sample_table["image_id"][:160].tolist(), name="k")
    cmd = [sys.executable, "-m", "medxfer", "-q", "extract", str(root), "--backbone",
           "efficientnet_lite0", "--shard-size", "16", "--batch-size", "16", "--workers", "0"]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "killed")], env=env)
    shards = tmp_path / "killed" / "shards"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shards.glob("*.json"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(shards.glob("*.json")))
    assert 2 <= done_before < 10, "the run finished before it could be killed"
    subprocess.run(cmd + ["--out", str(tmp_path / "killed")], check=True, env=env)
    subprocess.run(cmd + ["--out", str(tmp_path / "clean")], check=True, env=env)
    a, b = FeatureSet.load(tmp_path / "killed"), FeatureSet.load(tmp_path / "clean")
    np.testing.assert_array_equal(a.features, b.features)
    assert json.loads((shards / "00000.json").read_text())["rows"] == [0, 16]


def test_image_cache_gives_identical_features_and_skips_decoding(small, tmp_path, monkeypatch):
    bb = create_backbone("tiny_random_test")
    plain = extract_features(small, bb, tmp_path / "a", num_workers=0, progress=False)
    cached = extract_features(small, bb, tmp_path / "b", num_workers=0, progress=False,
                              image_cache=tmp_path / "cache")
    np.testing.assert_array_equal(plain.features, cached.features)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 20

    import medxfer.features as features_module

    def no_decoding(path):
        raise AssertionError("decoded although cached")
    monkeypatch.setattr(features_module, "load_image", no_decoding)
    again = extract_features(small, bb, tmp_path / "c", num_workers=0, progress=False,
                             image_cache=tmp_path / "cache")
    np.testing.assert_array_equal(again.features, plain.features)


@pytest.mark.slow
def test_float16_storage_keeps_features_equivalent(small, tmp_path):
    bb = create_backbone("efficientnet_lite0")
    f16 = extract_features(small, bb, tmp_path / "h", num_workers=0, progress=False)
    f32 = extract_features(small, bb, tmp_path / "s", num_workers=0, progress=False, dtype="float32")
    a, b = f16.features.astype(np.float32), f32.features
    assert np.abs(a - b).max() <= 2e-3 * max(1.0, np.abs(b).max())
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99999


def test_ranks_write_disjoint_shards_into_one_folder(small, tmp_path):
    bb = create_backbone("tiny_random_test")
    kw = dict(shard_size=4, num_workers=0, progress=False)
    assert extract_features(small, bb, tmp_path / "r", rank=1, world_size=2, **kw) is None
    assert sorted(p.stem for p in (tmp_path / "r" / "shards").glob("*.json")) == ["00001", "00003"]
    fs = extract_features(small, bb, tmp_path / "r", rank=0, world_size=2, **kw)
    ref = extract_features(small, bb, tmp_path / "one", **kw)
    np.testing.assert_array_equal(fs.features, ref.features)


@pytest.mark.slow
def test_torchrun_with_two_ranks_writes_the_same_cache_as_one_process(make_cxr14, sample_table, tmp_path):
    """`torchrun --nproc-per-node=2 -m medxfer extract ...`: two CPU processes write the
    shards of one folder; the result is byte for byte the single-process cache."""
    import os
    import subprocess
    import sys

    root = make_cxr14(sample_table["image_id"][:40].tolist())
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    args = ["-m", "medxfer", "-q", "extract", str(root), "--backbone", "tiny_random_test",
            "--shard-size", "8", "--workers", "0"]
    subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], env=env, check=True,
                   capture_output=True)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        *args, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    one, two = sorted((tmp_path / "one" / "shards").glob("*.npy")), sorted((tmp_path / "two" / "shards").glob("*.npy"))
    assert len(one) == len(two) == 5
    for x, y in zip(one, two):
        assert x.read_bytes() == y.read_bytes(), x.name
    for name in ("rows.csv", "labels.npy"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert (tmp_path / "two" / "manifest.json").is_file() and not (tmp_path / "two" / "manifest.partial.json").exists()
    m1 = json.loads((tmp_path / "one" / "manifest.json").read_text())
    m2 = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert {k: m1[k] for k in m1 if k != "created"} == {k: m2[k] for k in m2 if k != "created"}


def test_batches_never_span_shards_and_the_manifest_names_every_engine(small, tmp_path, monkeypatch):
    """Shards of 8 rows in batches of 3: 3+3+2, 3+3+2, 3+1 (a shard is computed in the same
    batches whichever process or run makes it). A run resumed with another engine is
    recorded as both."""
    bb = create_backbone("tiny_random_test")
    sizes = []
    hook = bb.register_forward_hook(lambda _m, inp, _o: sizes.append(inp[0].shape[0]))
    extract_features(small, bb, tmp_path / "f", shard_size=8, batch_size=3, num_workers=0,
                     progress=False, engine="torch", device="cpu")
    hook.remove()
    assert sizes == [3, 3, 2, 3, 3, 2, 3, 1]
    m = read_manifest(tmp_path / "f")
    assert (m["engine"], m["device"]) == ("torch", "cpu")
    (tmp_path / "f" / "manifest.json").unlink()
    for p in (tmp_path / "f" / "shards").glob("*00001.*"):
        p.unlink()
    monkeypatch.setenv("MEDXFER_CACHE", str(tmp_path / "cache"))
    fs = extract_features(small, bb, tmp_path / "f", shard_size=8, batch_size=3, num_workers=0,
                          progress=False, engine="onnxruntime")
    assert fs.manifest["engine"] == "onnxruntime+torch"


def test_each_launcher_process_gets_its_own_gpu(monkeypatch):
    import torch

    from medxfer.engine import decode_workers, process_gpu

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert process_gpu() == torch.device("cuda:1")
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("RANK", "2")  # a launcher that sets only RANK and WORLD_SIZE
    assert process_gpu() == torch.device("cuda:0")
    # the decoding workers of one node are shared by its processes
    monkeypatch.setattr("medxfer.engine.usable_cores", lambda: 16)
    assert decode_workers(torch.device("cuda")) == 15
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert decode_workers(torch.device("cuda")) == 3


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


def test_default_shards_are_small_enough_for_a_resume_to_keep_work(make_cxr14, sample_table, tmp_path):
    from medxfer.features import auto_shard_size

    assert auto_shard_size(421) == 32 and auto_shard_size(112120) == 1024 and auto_shard_size(5) == 32
    ds = read_chestxray14(make_cxr14(sample_table["image_id"][:40].tolist()))
    extract_features(ds, create_backbone("tiny_random_test"), tmp_path / "f", num_workers=0, progress=False)
    assert len(list((tmp_path / "f" / "shards").glob("*.npy"))) == 2


def test_a_decode_bound_engine_gets_every_core_and_torch_leaves_the_decoders_theirs(small, tmp_path,
                                                                                   monkeypatch):
    """onnxruntime's forward pass is sized to every core of the node (its idle threads sleep
    while decoders work; with decoding cached it is the wall), torch's to what the decoding
    workers leave."""
    import medxfer.features as features
    from medxfer.engine import get_engine

    bb = create_backbone("tiny_random_test")
    given = {}
    real = features.prepare

    def recording(backbone, engine, device, *, asked):
        used, make = real(backbone, engine, device, asked=asked)
        return used, lambda threads: given.setdefault(used, threads) and make(threads)

    monkeypatch.setattr(features, "prepare", recording)
    monkeypatch.setattr(features, "node_cores", lambda: 4)
    monkeypatch.setenv("MEDXFER_CACHE", str(tmp_path / "cache"))
    for engine in ("torch", "onnxruntime"):
        extract_features(small, bb, tmp_path / engine, batch_size=4, num_workers=1, progress=False,
                         engine=engine, device="cpu" if engine == "torch" else "auto")
    assert get_engine("onnxruntime").decode_bound and not get_engine("torch").decode_bound
    assert given == {"torch": 3, "onnxruntime": 4}
