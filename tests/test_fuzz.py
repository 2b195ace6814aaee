"""Random and mutated bytes fed to every reader: each input gives a result or a MedxferError
naming the problem, never another exception. A fixed, seeded corpus (fast, reproducible)."""

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medxfer.data import read_dataset
from medxfer.errors import MedxferError
from medxfer.features import FeatureSet
from medxfer.images import load_image
from medxfer.model_io import TrainedModel

N = 40


def mutations(data: bytes, seed: int, n: int = N):
    """Truncations, byte flips, inserted junk and pure noise of ``data``."""
    rng = np.random.default_rng(seed)
    out = [b"", data[:1], data[: len(data) // 2], rng.bytes(len(data))]
    for _ in range(n):
        b = bytearray(data)
        kind = rng.integers(4)
        if kind == 0:
            b = b[: rng.integers(1, len(b))]
        elif kind == 1:
            for i in rng.integers(0, len(b), rng.integers(1, 20)):
                b[i] = rng.integers(256)
        elif kind == 2:
            at = rng.integers(0, len(b))
            b[at:at] = rng.bytes(int(rng.integers(1, 64)))
        else:
            at = rng.integers(0, len(b))
            b[at:at + 16] = b"\xff" * 16
        out.append(bytes(b))
    return out


def _image_seeds(sample_root):
    import pydicom

    png = sorted((sample_root / "images").glob("*.png"))[0].read_bytes()
    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).save(buf, "JPEG", quality=80)
    d = Path(pydicom.__file__).parent / "data" / "test_files"
    return [("png", png), ("jpg", buf.getvalue()), ("dcm", (d / "CT_small.dcm").read_bytes()),
            ("dcm", (d / "MR_small_jpeg_ls_lossless.dcm").read_bytes())]


def test_mutated_images_decode_or_raise_a_medxfer_error(sample_root, tmp_path):
    checked = 0
    for k, (suffix, data) in enumerate(_image_seeds(sample_root)):
        for i, blob in enumerate(mutations(data, seed=k)):
            path = tmp_path / f"m{k}_{i}.{suffix}"
            path.write_bytes(blob)
            try:
                arr = load_image(path)
            except MedxferError as exc:
                assert path.name in str(exc)
            else:
                assert arr.ndim == 2 and np.isfinite(arr).all() and 0 <= arr.min() and arr.max() <= 1
            checked += 1
    assert checked == 4 * (N + 4)


def test_mutated_csv_tables_read_or_raise_a_medxfer_error(sample_root, tmp_path):
    img = sorted((sample_root / "images").glob("*.png"))[0]
    shutil.copy(img, tmp_path / "a.png")
    text = "path,patient_id,Effusion,Mass\na.png,1,1,0\na.png,2,0,\n".encode()
    for i, blob in enumerate(mutations(text, seed=7)):
        path = tmp_path / f"t{i}.csv"
        path.write_bytes(blob)
        try:
            ds = read_dataset(path)
        except MedxferError as exc:
            assert path.name in str(exc)
            continue
        # a table that reads is a whole dataset: rows of a.png, each label 1, 0 or unknown
        assert 1 <= len(ds) <= 2 and ds.labels.shape == (len(ds), len(ds.label_names))
        assert set(np.unique(ds.labels[~np.isnan(ds.labels)])) <= {0.0, 1.0}
        assert {Path(p).name for p in ds.table["path"]} == {"a.png"}


def mutated_copies(src, name, tmp_path, seed):
    """Copies of the folder ``src``, each with its file ``name`` replaced by one mutation."""
    for i, blob in enumerate(mutations((src / name).read_bytes(), seed=seed, n=15)):
        folder = tmp_path / f"{src.name}{i}"
        shutil.copytree(src, folder)
        (folder / name).write_bytes(blob)
        yield folder


@pytest.mark.parametrize("name", ["model.json", "model.safetensors", "ood.safetensors"])
def test_mutated_model_files_load_or_raise_a_model_error(tiny_trained, tmp_path, name):
    X = FeatureSet.load(tiny_trained / "f").X
    for folder in mutated_copies(tiny_trained / "m", name, tmp_path, seed=len(name)):
        try:
            model = TrainedModel.load(folder)
        except MedxferError as exc:
            assert str(folder) in str(exc) or name in str(exc)
            continue
        # a model that loads is usable: one probability per image and label, one threshold
        # per label, one distance per image (damaged numbers may overflow: no warnings)
        with np.errstate(all="ignore"):
            P = model.predict_proba(X)
            assert P.shape == (len(X), len(model.label_names)) == (len(X), len(model.thresholds))
            if model.ood is not None:
                assert model.ood.score(X).shape == (len(X),)


@pytest.mark.parametrize("name", ["manifest.json", "rows.csv", "labels.npy", "shards/00000.npy",
                                  "shards/00000.json"])
def test_mutated_features_files_load_or_raise_a_cache_error(tiny_trained, tmp_path, name):
    for folder in mutated_copies(tiny_trained / "f", name, tmp_path, seed=len(name)):
        try:
            fs = FeatureSet.load(folder)
        except MedxferError as exc:
            assert str(folder) in str(exc) or name.rsplit("/", 1)[-1] in str(exc)
            continue
        # a load that succeeds must be whole: every row's features present and finite
        assert len(fs.features) == len(fs.dataset) and np.isfinite(fs.X).all()
