import logging

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medxfer.data import (CHESTXRAY14_FINDINGS, Dataset, parse_finding_labels, read_chestxray14,
                          read_dataset)
from medxfer.errors import DataError

from .conftest import SHARED

SOURCES_COUNTS = {"Atelectasis": 62, "Cardiomegaly": 38, "Effusion": 56, "Infiltration": 83,
                  "Mass": 49, "Nodule": 60, "Pneumonia": 22, "Pneumothorax": 30,
                  "Consolidation": 55, "Edema": 12, "Emphysema": 28, "Fibrosis": 38,
                  "Pleural_Thickening": 46, "Hernia": 14}


def test_bundled_sample_exact_counts(sample_root, caplog):
    caplog.set_level(logging.DEBUG, logger="medxfer")
    ds = read_chestxray14(sample_root)
    s = ds.summary()
    assert s["images"] == 421 and s["patients"] == 421
    assert s["findings"] == SOURCES_COUNTS
    assert s["no_finding"] == 53
    assert s["view"] == {"PA": 344, "AP": 77}
    assert ds.labels.shape == (421, 14) and ds.label_names == CHESTXRAY14_FINDINGS
    # Its table is trimmed to its own images: nothing is missing, nothing is said.
    assert ds.problems == ()
    assert not [r for r in caplog.records if r.name.startswith("medxfer")]


def test_partial_copy_of_the_release_is_said_once_as_info(make_cxr14, sample_table, caplog):
    ids = sample_table["image_id"].tolist()
    absent = [",".join(r) for r in sample_table.iloc[3:10, :11].astype(str).to_numpy()]
    root = make_cxr14(ids[:3], extra_rows=absent)  # rows 4-10 are listed but not on disk
    caplog.set_level(logging.DEBUG, logger="medxfer")
    ds = read_chestxray14(root)
    assert len(ds) == 3
    (record,) = [r for r in caplog.records if r.name.startswith("medxfer")]
    assert record.levelno == logging.INFO
    assert record.getMessage() == (f"{root} holds 3 of the 10 images in Data_Entry_2017_v2020.csv.gz "
                                   "(a partial copy of the release); reading those")
    (missing,) = [p for p in ds.problems if p.kind == "partial_copy"]
    assert missing.detail.startswith("7 of 10 listed images are not under")


def test_thousands_are_grouped_in_the_partial_copy_line(make_cxr14, sample_table, caplog):
    ids = sample_table["image_id"].tolist()
    first = sample_table.iloc[0, :11].astype(str).tolist()
    fake = [",".join([f"{90000000 + i:08d}_000.png"] + first[1:]) for i in range(1200)]
    caplog.set_level(logging.INFO, logger="medxfer")
    read_chestxray14(make_cxr14(ids[:2], extra_rows=fake))
    (record,) = [r for r in caplog.records if r.name.startswith("medxfer")]
    assert " holds 2 of the 1,202 images in " in record.getMessage()


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/nih14-sample not present")
def test_shared_sample_agrees_with_its_sources():
    s = read_dataset(SHARED).summary()
    assert s["images"] == 421 and s["findings"] == SOURCES_COUNTS
    assert s["view"] == {"PA": 344, "AP": 77}


@pytest.mark.parametrize("layout", ["flat", "release"])
@pytest.mark.parametrize("version,gz", [("v2020", True), ("v2020", False), ("2017", False)])
def test_layouts_and_table_versions(make_cxr14, sample_table, layout, version, gz):
    ids = sample_table["image_id"][:6].tolist()
    root = make_cxr14(ids, layout=layout, version=version, gz=gz)
    ds = read_chestxray14(root)
    assert ds.table["image_id"].tolist() == ids
    assert ds.table["age"].tolist() == pd.to_numeric(sample_table["age"][:6]).tolist()
    assert not [p for p in ds.problems if p.kind == "bad_age"]


def test_unknown_finding_names_row_and_suggests(make_cxr14, sample_table):
    ids = sample_table["image_id"][:2].tolist()
    bad = f"{ids[0]},Pneumothoraks,0,1,50,M,PA,2500,2048,0.14,0.14"
    root = make_cxr14(ids[1:], extra_rows=[bad])
    # the bad row's image must exist for its labels to be parsed
    (root / "images" / ids[0]).write_bytes((root / "images" / ids[1]).read_bytes())
    with pytest.raises(DataError, match=r"row \d+: Unknown finding 'Pneumothoraks'\. Did you mean 'Pneumothorax'\?"):
        read_chestxray14(root)


def test_wrong_columns_name_the_file(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "Data_Entry_2017_v2020.csv").write_text("path,label\na.png,Mass\n")
    with pytest.raises(DataError, match=r"Data_Entry_2017_v2020\.csv' does not have the ChestX-ray14 columns"):
        read_chestxray14(tmp_path)


def test_missing_folder_and_unrecognised_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match="is not a dataset medxfer recognises"):
        read_dataset(tmp_path)


def test_duplicate_rows_are_reported(make_cxr14, sample_table):
    ids = sample_table["image_id"][:3].tolist()
    dup = ",".join(sample_table.iloc[0, :11].astype(str))
    ds = read_chestxray14(make_cxr14(ids, extra_rows=[dup]))
    assert len(ds) == 3
    assert [p.item for p in ds.problems if p.kind == "duplicate_row"] == [ids[0]]


def _toy(n=6):
    t = pd.DataFrame({"image_id": [f"{i}.png" for i in range(n)], "path": [f"/x/{i}.png" for i in range(n)],
                      "patient_id": [str(i // 2) for i in range(n)], "view": ["PA", "AP"] * (n // 2)})
    y = np.array([[1, 0, np.nan], [0, 0, 0], [0, 1, 0], [np.nan, np.nan, 1], [0, 0, np.nan], [1, 1, 1]],
                 dtype=np.float32)[:n]
    return Dataset(t, y, ("A", "B", "C"))


def test_subset_filter_relabel_return_new_datasets():
    ds = _toy()
    pa = ds.filter(view="PA")
    assert len(pa) == 3 and len(ds) == 6
    assert ds.subset([5, 0]).table["image_id"].tolist() == ["5.png", "0.png"]
    merged = ds.relabel({"A": "AB", "B": "AB", "C": None})
    assert merged.label_names == ("AB",)
    # positive if any is; unknown only when no positive and some unknown
    np.testing.assert_array_equal(merged.labels[:, 0], [1, 0, 1, np.nan, 0, 1])
    with pytest.raises(DataError, match="Unknown finding 'D'"):
        ds.relabel({"D": "X"})
    with pytest.raises(DataError, match="Unknown metadata column 'viwe'. Did you mean 'view'"):
        ds.filter(viwe="PA")


names = st.lists(st.sampled_from(CHESTXRAY14_FINDINGS), max_size=5)


@settings(max_examples=60, deadline=None)
@given(st.lists(names, min_size=1, max_size=10))
def test_finding_label_parser_round_trips(rows):
    text = pd.Series(["|".join(r) if r else "No Finding" for r in rows])
    Y = parse_finding_labels(text)
    for i, r in enumerate(rows):
        assert {CHESTXRAY14_FINDINGS[j] for j in np.flatnonzero(Y[i])} == set(r)
