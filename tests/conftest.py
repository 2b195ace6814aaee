import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medxfer.data import bundled_sample, read_chestxray14_table

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "nih14-sample"


def multilabel_data(n=160, d=12, L=3, seed=0):
    """Features X (n, d) and multilabel Y (n, L): finding j is a noisy sign of feature j."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    Y = (X[:, :L] + 0.3 * rng.normal(size=(n, L)) > 0).astype(np.float32)
    return X, Y


@pytest.fixture(scope="session")
def sample_root() -> Path:
    """The bundled sample (medxfer.data imports no torch)."""
    return bundled_sample()


@pytest.fixture(scope="session")
def sample_table(sample_root) -> pd.DataFrame:
    """Rows of the official table for the bundled images, in file-name order (the bundled
    table holds only those rows; the filter keeps this true should it ever hold more)."""
    t = read_chestxray14_table(sample_root / "Data_Entry_2017_v2020.csv.gz")
    present = {p.name for p in (sample_root / "images").glob("*.png")}
    return t[t["image_id"].isin(present)].sort_values("image_id").reset_index(drop=True)


def write_cxr14_folder(dest: Path, image_ids, sample_root: Path, *, layout: str = "flat",
                       version: str = "v2020", gz: bool = True, extra_rows: list[str] = ()) -> Path:
    """A ChestX-ray14-layout folder holding some bundled images and their table rows."""
    src_table = sample_root / "Data_Entry_2017_v2020.csv.gz"
    with gzip.open(src_table, "rt") as f:
        lines = f.read().splitlines()
    header, body = lines[0], lines[1:]
    wanted = set(image_ids)
    rows = [r for r in body if r.split(",", 1)[0] in wanted]
    if version == "2017":
        header = header + ","
        fixed = []
        for r in rows:
            cells = r.split(",")
            cells[4] = f"{int(cells[4]):03d}Y"  # the 2017 table wrote ages like 058Y
            fixed.append(",".join(cells) + ",")
        rows = fixed
    rows += list(extra_rows)
    name = "Data_Entry_2017_v2020.csv" if version == "v2020" else "Data_Entry_2017.csv"
    dest.mkdir(parents=True, exist_ok=True)
    text = "\n".join([header] + rows) + "\n"
    if gz:
        with gzip.open(dest / (name + ".gz"), "wt") as f:
            f.write(text)
    else:
        (dest / name).write_text(text)
    for i, image_id in enumerate(sorted(wanted)):
        sub = dest / ("images" if layout == "flat" else f"images_{1 + i % 2:03d}/images")
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample_root / "images" / image_id, sub / image_id)
    return dest


@pytest.fixture
def make_cxr14(tmp_path, sample_root):
    def make(image_ids, name="cxr", **kw):
        return write_cxr14_folder(tmp_path / name, image_ids, sample_root, **kw)
    return make


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory, sample_root):
    """30 bundled images in ChestX-ray14 layout (``cxr``), their tiny-backbone features
    (``f``) and a model trained on them (``m``), shared read-only by the tests of the
    service, its schema and the fuzzing of model and features files."""
    from medxfer.cli import main

    t = pd.read_csv(sample_root / "Data_Entry_2017_v2020.csv.gz")
    base = tmp_path_factory.mktemp("tiny_trained")
    root = write_cxr14_folder(base / "cxr", sorted(t["Image Index"])[:30], sample_root)
    assert main(["-q", "extract", str(root), "--backbone", "tiny_random_test", "--out", str(base / "f")]) == 0
    assert main(["-q", "train", str(base / "f"), "--out", str(base / "m"), "--no-select", "--max-iter", "50"]) == 0
    return base


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache(tmp_path_factory):
    """Exported backbones (the default onnxruntime engine) go to a temporary cache, not the
    user's ~/.cache/medxfer."""
    import os

    old = os.environ.get("MEDXFER_CACHE")
    os.environ["MEDXFER_CACHE"] = str(tmp_path_factory.mktemp("medxfer-cache"))
    yield
    if old is None:
        os.environ.pop("MEDXFER_CACHE", None)
    else:
        os.environ["MEDXFER_CACHE"] = old
