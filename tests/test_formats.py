import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from medxfer.cli import main
from medxfer.data import (detect_format, get_reader, parse_label_cell, read_chestxray14,
                          read_csv_dataset, read_dataset, read_dicom_folder, readers,
                          register_reader)
from medxfer.errors import DataError
from medxfer.splits import official_split, split_from_file

from .test_images import _write_dicom
from .test_public_readers import public_layouts


def _png(path, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((32, 32), value, np.uint8)).save(path)
    return path


def test_csv_one_column_per_label_blank_is_unknown(tmp_path):
    for i in range(4):
        _png(tmp_path / "img" / f"{i}.png")
    (tmp_path / "d.csv").write_text(
        "path,patient_id,Mass,Nodule,age\n"
        "img/0.png,p1,1,,40\nimg/1.png,p1,0,1,41\nimg/2.png,p2,,0,abc\nimg/3.png,p3,1.0,0.0,50\n"
        "img/missing.png,p4,1,1,60\n")
    ds = read_dataset(tmp_path / "d.csv")
    assert ds.label_names == ("Mass", "Nodule") and len(ds) == 4
    np.testing.assert_array_equal(ds.labels, [[1, np.nan], [0, 1], [np.nan, 0], [1, 0]])
    assert ds.patient_ids.tolist() == ["p1", "p1", "p2", "p3"]
    kinds = {p.kind: p for p in ds.problems}
    assert "missing.png" in kinds["missing_image"].item
    assert "age 'abc' is not a number" in kinds["bad_age"].detail
    assert np.isnan(ds.table["age"].iloc[2])


def test_csv_delimited_labels_column(tmp_path):
    for i in range(3):
        _png(tmp_path / f"{i}.png")
    (tmp_path / "d.csv").write_text("image,patient,labels\n0.png,a,Mass;Nodule\n1.png,b,No Finding\n2.png,c,Nodule\n")
    ds = read_csv_dataset(tmp_path / "d.csv", separator=";")
    assert ds.label_names == ("Mass", "Nodule")
    np.testing.assert_array_equal(ds.labels, [[1, 1], [0, 0], [0, 1]])


@pytest.mark.parametrize("csv,msg", [
    ("file,Mass\na.png,1\n", r"no image path column; name one with path_column=.*found file, Mass"),
    ("path,patient_id,Mass\na.png,p,-1\n", r"d\.csv line 2, column 'Mass': label '-1' is not 1, 0 or blank"),
    ("path,patient_id,Mass\na.png,p,1\na.png,p,0\n", r"image 'a\.png' is listed 2 times with different labels \(lines 2, 3\)"),
])
def test_csv_bad_input_names_the_problem(tmp_path, csv, msg):
    _png(tmp_path / "a.png")
    (tmp_path / "d.csv").write_text(csv)
    with pytest.raises(DataError, match=msg):
        read_csv_dataset(tmp_path / "d.csv")


def test_csv_identical_duplicate_is_recorded_not_doubled(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "d.csv").write_text("path,patient_id,Mass\na.png,p,1\na.png,p,1\n")
    ds = read_csv_dataset(tmp_path / "d.csv")
    assert len(ds) == 1 and [p.kind for p in ds.problems] == ["duplicate_row"]


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.sampled_from(["", " ", "0", "1", "0.0", "1.0", "nan"]), st.text(max_size=4)))
def test_label_cell_parser_accepts_only_0_1_blank(text):
    try:
        v = parse_label_cell(text, row=0, column="c", source="s")
    except DataError as exc:
        assert "is not 1, 0 or blank" in str(exc)
        return
    assert v in (0.0, 1.0) or np.isnan(v)


def test_class_folder_is_single_label_and_trains_softmax(tmp_path):
    for c, v in (("normal", 20), ("pneumonia", 230)):
        for i in range(12):
            _png(tmp_path / "cls" / c / f"{c}{i}.png", value=v + i)
    ds = read_dataset(tmp_path / "cls")
    assert ds.task == "multiclass" and ds.label_names == ("normal", "pneumonia")
    assert (ds.labels.sum(1) == 1).all()
    feats, model = tmp_path / "f", tmp_path / "m"
    assert main(["-q", "extract", str(tmp_path / "cls"), "--backbone", "tiny_random_test", "--out", str(feats)]) == 0
    assert main(["-q", "train", str(feats), "--out", str(model), "--max-iter", "50"]) == 0
    assert main(["-q", "evaluate", str(model), str(feats), "--out", str(tmp_path / "e"), "--n-boot", "20", "--allow-training-patients"]) == 0
    preds = pd.read_csv(tmp_path / "e" / "predictions.csv")
    np.testing.assert_allclose(preds["prob_normal"] + preds["prob_pneumonia"], 1.0, atol=1e-4)


def test_dicom_folder_patient_ids_from_headers(tmp_path, capsys):
    (tmp_path / "dcm").mkdir()
    for i in range(3):
        _write_dicom(tmp_path / "dcm" / f"s{i}.dcm", np.arange(16, dtype=np.uint16).reshape(4, 4) * 100, "MONOCHROME2")
    ds = read_dicom_folder(tmp_path / "dcm")
    assert len(ds) == 3 and set(ds.patient_ids) == {"P123"}
    assert main(["inspect", str(tmp_path / "dcm"), "--json"]) == 0
    import json
    s = json.loads(capsys.readouterr().out)
    assert s["images"] == 3 and s["patients"] == 1


def test_official_split_refuses_without_lists_and_uses_them(make_cxr14, sample_table):
    ids = sample_table["image_id"][:6].tolist()
    root = make_cxr14(ids)
    ds = read_chestxray14(root)
    with pytest.raises(DataError, match=r"official split needs '.*train_val_list\.txt', which is missing"):
        official_split(ds, root)
    (root / "train_val_list.txt").write_text("\n".join(ids[:4]) + "\n")
    (root / "test_list.txt").write_text("\n".join(ids[4:]) + "\n")
    tr, te = official_split(ds, root)
    assert tr.tolist() == [0, 1, 2, 3] and te.tolist() == [4, 5]


def test_split_from_file(make_cxr14, sample_table, tmp_path):
    ids = sample_table["image_id"][:4].tolist()
    ds = read_chestxray14(make_cxr14(ids))
    f = tmp_path / "split.csv"
    f.write_text("image_id,split\n" + "\n".join(f"{i},{'train' if k < 3 else 'test'}" for k, i in enumerate(ids)))
    parts = split_from_file(ds, f)
    assert parts["train"].tolist() == [0, 1, 2] and parts["test"].tolist() == [3]
    f.write_text("image_id,split\n" + ids[0] + ",train\n")
    with pytest.raises(DataError, match="does not assign 3 image"):
        split_from_file(ds, f)


def test_chestxray14_duplicate_with_different_labels_is_an_error(make_cxr14, sample_table):
    ids = sample_table["image_id"][:2].tolist()
    row = sample_table.iloc[0, :11].astype(str).tolist()
    row[1] = "Hernia" if row[1] != "Hernia" else "Mass"
    root = make_cxr14(ids, extra_rows=[",".join(row)])
    with pytest.raises(DataError, match=rf"image '{ids[0]}' is listed 2 times with different labels"):
        read_chestxray14(root)


def test_official_boxes_are_attached(sample_root):
    ds = read_chestxray14(sample_root)
    # SOURCES.md says 12; the file itself has 10 rows whose image is one of these 421.
    assert len(ds.boxes) == 10
    assert set(ds.boxes["image_id"]) <= set(ds.table["image_id"])
    sub = ds.subset(np.flatnonzero(ds.table["image_id"].isin(ds.boxes["image_id"].iloc[:1])))
    assert len(sub.boxes) >= 1 and set(sub.boxes["image_id"]) == set(sub.table["image_id"])


def test_inspect_reports_cooccurrence_and_age(sample_root, capsys):
    import json
    assert main(["inspect", str(sample_root), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["cooccurrence"]["Effusion"]["Atelectasis"] > 0
    assert sum(s["age"]["histogram"].values()) == 421 and s["sex"] == {"M": 223, "F": 198}
    assert s["boxes"] == 10


def test_unrecognised_input_lists_every_format(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="is not a dataset medxfer recognises") as err:
        read_dataset(tmp_path)
    for r in readers():
        assert f"{r.name}: {r.description}" in str(err.value)
    assert "a CSV of paths and labels" in str(err.value)
    assert "a folder with one subfolder of images per class" in str(err.value)


def _layouts(root, sample_root):
    """format -> a tiny folder or file in that format."""
    img = sample_root / "images" / "00000075_000.png"
    (root / "cxr").mkdir()
    (root / "cxr" / "Data_Entry_2017.csv").write_text("Image Index\n")
    for c in ("a", "b"):
        _png(root / "cls" / c / "x.png")
    (root / "dcm" / "study1").mkdir(parents=True)
    _write_dicom(root / "dcm" / "study1" / "s.dcm", np.zeros((4, 4), np.uint16), "MONOCHROME2")
    (root / "t.csv.gz").write_bytes(b"")
    return {"chestxray14": root / "cxr", "class_folder": root / "cls",
            "dicom_folder": root / "dcm", "csv": root / "t.csv.gz", None: img,
            **public_layouts(root / "public")}


def test_each_reader_detects_only_its_own_layout(tmp_path, sample_root):
    layouts = _layouts(tmp_path, sample_root)
    assert {r.name for r in readers()} == {n for n in layouts if n}
    for name, path in layouts.items():
        said = {r.name: r.detect(path) for r in readers()}
        assert [n for n, why in said.items() if why] == ([name] if name else []), path
        if name:
            assert detect_format(path) == (name, said[name])
    assert "Data_Entry_2017.csv" in get_reader("chestxray14").detect(layouts["chestxray14"])
    assert get_reader("dicom_folder").detect(layouts["dicom_folder"]).endswith("study1/s.dcm")
    assert get_reader("csv").detect(tmp_path / "x.gz") is None  # only .csv and .csv.gz
    with pytest.raises(DataError, match="'csv' is registered twice"):
        register_reader("csv", description="x", read=read_csv_dataset, priority=0)(lambda p: None)


def test_a_chestxray14_folder_with_dicom_files_is_chestxray14(make_cxr14, sample_table):
    root = make_cxr14(sample_table["image_id"][:3].tolist())
    _write_dicom(root / "extra.dcm", np.zeros((4, 4), np.uint16), "MONOCHROME2")
    assert get_reader("dicom_folder").detect(root) is not None
    assert detect_format(root)[0] == "chestxray14"
    ds = read_dataset(root)
    assert len(ds) == 3 and ds.format == "chestxray14" and "metadata table" in ds.format_reason
    assert ds.subset([0]).format == "chestxray14"


def test_an_option_the_format_does_not_take_is_refused_by_name(make_cxr14, sample_table, tmp_path, capsys):
    root = make_cxr14(sample_table["image_id"][:2].tolist())
    with pytest.raises(DataError, match="option 'path_column' does not apply to the chestxray14 format"):
        read_dataset(root, path_column="file")
    assert main(["inspect", str(root), "--patient-column", "p"]) == 2
    assert "'patient_column' does not apply to the chestxray14 format" in capsys.readouterr().err
    assert len(read_dataset(root, table=root / "Data_Entry_2017_v2020.csv.gz")) == 2


def test_inspect_prints_the_format_and_why(tmp_path, capsys):
    import json
    (tmp_path / "dcm").mkdir()
    _write_dicom(tmp_path / "dcm" / "s.dcm", np.zeros((4, 4), np.uint16), "MONOCHROME2")
    assert main(["inspect", str(tmp_path / "dcm")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "format: dicom_folder (holds DICOM files, e.g. s.dcm)"
    assert main(["inspect", str(tmp_path / "dcm"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["format"], s["format_reason"]) == ("dicom_folder", "holds DICOM files, e.g. s.dcm")


def test_cli_inspect_csv_with_named_columns(tmp_path, capsys):
    import json
    for i in range(2):
        _png(tmp_path / f"{i}.png")
    (tmp_path / "d.csv").write_text("file,subject,findings\n0.png,s1,Mass;Edema\n1.png,s2,\n")
    assert main(["inspect", str(tmp_path / "d.csv"), "--json", "--path-column", "file",
                 "--patient-column", "subject", "--labels-column", "findings", "--separator", ";"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["findings"] == {"Edema": 1, "Mass": 1} and s["patients"] == 2
