"""The public chest X-ray sets as released: real label-table excerpts (tests/data/public_labels,
see SOURCES.md there) with tiny images made at the paths the tables name."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medxfer.data import (CHESTXRAY14_FINDINGS, CHEXPERT_OBSERVATIONS, Dataset, common_vocabulary,
                          detect_format, harmonise, normalise_patient_ids, read_chexpert,
                          read_class_folder, read_csv_dataset, read_dataset, read_image_paths,
                          read_jsrt, read_mimic_cxr, read_padchest,
                          read_shenzhen, read_vindr_cxr, vocabulary_table)
from medxfer.errors import DataError

LABELS = Path(__file__).parent / "data" / "public_labels"


def _img(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), 120, np.uint8)).save(path)
    return path


def _copy(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest


def _counts(ds: Dataset, value: float) -> dict:
    return {n: int((ds.labels[:, j] == value).sum()) for j, n in enumerate(ds.label_names)
            if (ds.labels[:, j] == value).any()}


def public_layouts(root: Path) -> dict:
    """format -> the smallest folder each public reader recognises (for test_formats)."""
    (root / "chexpert").mkdir(parents=True)
    _copy(LABELS / "chexpert" / "train.csv", root / "chexpert" / "train.csv")
    _copy(LABELS / "mimic_cxr" / "mimic-cxr-2.0.0-metadata.csv", root / "mimic" / "mimic-cxr-2.0.0-metadata.csv")
    _copy(LABELS / "padchest" / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
          root / "padchest" / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv")
    _copy(LABELS / "vindr_physionet" / "annotations" / "image_labels_train.csv",
          root / "vindr" / "annotations" / "image_labels_train.csv")
    _copy(LABELS / "rsna" / "stage_2_train_labels.csv", root / "rsna" / "stage_2_train_labels.csv")
    _img(root / "shenzhen" / "CXR_png" / "CHNCXR_0001_0.png")
    _img(root / "montgomery" / "CXR_png" / "MCUCXR_0001_0.png")
    _img(root / "jsrt" / "JPCLN001.png")
    return {"chexpert": root / "chexpert", "mimic_cxr": root / "mimic", "padchest": root / "padchest",
            "vindr_cxr": root / "vindr", "rsna_pneumonia": root / "rsna",
            "shenzhen_tb": root / "shenzhen", "montgomery_tb": root / "montgomery", "jsrt": root / "jsrt"}


# ---------------------------------------------------------------- CheXpert (format replica)
# Invented rows (tests/data/public_labels/chexpert/make_replica.py): the research-use
# agreement does not permit redistributing the real table.

CHEXPERT_POSITIVE = {"Enlarged Cardiomediastinum": 3, "Cardiomegaly": 5, "Lung Opacity": 6,
                     "Lung Lesion": 3, "Edema": 4, "Consolidation": 4, "Pneumonia": 5,
                     "Atelectasis": 12, "Pneumothorax": 5, "Pleural Effusion": 8, "Pleural Other": 7,
                     "Fracture": 6, "Support Devices": 7}
CHEXPERT_UNCERTAIN = {"Enlarged Cardiomediastinum": 2, "Lung Opacity": 3, "Lung Lesion": 3,
                      "Edema": 1, "Consolidation": 3, "Pneumonia": 1, "Pneumothorax": 3,
                      "Pleural Effusion": 1, "Pleural Other": 4, "Fracture": 7, "Support Devices": 3}


@pytest.fixture
def chexpert(tmp_path):
    """The release's folder: train.csv inside CheXpert-v1.0-small/, whose paths start with it."""
    root = tmp_path / "CheXpert-v1.0-small"
    _copy(LABELS / "chexpert" / "train.csv", root / "train.csv")
    for rel in pd.read_csv(root / "train.csv")["Path"]:
        _img(tmp_path / rel)
    (root / "valid").mkdir()  # the release's other folder: with train/ it looks like classes
    _img(root / "valid" / "patient64541" / "study1" / "view1_frontal.jpg")
    return root


def test_chexpert_counts_patients_views(chexpert):
    assert detect_format(chexpert) == ("chexpert", "holds train.csv with CheXpert's columns "
                                                   "(Path, Frontal/Lateral, AP/PA)")
    ds = read_dataset(chexpert)
    s = ds.summary()
    assert ds.label_names == CHEXPERT_OBSERVATIONS and ds.format == "chexpert"
    assert s["images"] == 30 and s["patients"] == 11 and s["patient_ids_from"] == "metadata"
    assert ds.table["patient_id"].iloc[0] == "patient90001"
    assert ds.table["image_id"].iloc[0] == "train/patient90001/study1/view1_frontal.jpg"
    assert s["view"] == {"AP": 15, "LATERAL": 8, "PA": 7} and s["sex"] == {"M": 17, "F": 13}
    assert s["findings"] == {n: CHEXPERT_POSITIVE.get(n, 0) for n in CHEXPERT_OBSERVATIONS}
    assert s["uncertain_policy"] == "ignore" and s["uncertain_labels"] == CHEXPERT_UNCERTAIN
    assert (ds.table["split"] == "train").all() and ds.problems == ()


@pytest.mark.parametrize("policy", ["ignore", "zeros", "ones"])
def test_chexpert_uncertain_policies(chexpert, policy):
    ds = read_chexpert(chexpert, uncertain=policy)
    ref = read_chexpert(chexpert, uncertain="ignore")
    assert ds.uncertain_policy == policy and ds.uncertain_counts == CHEXPERT_UNCERTAIN
    pos, neg = _counts(ds, 1), _counts(ds, 0)
    ref_neg = _counts(ref, 0)
    if policy == "ones":
        assert pos == {n: CHEXPERT_POSITIVE.get(n, 0) + CHEXPERT_UNCERTAIN.get(n, 0)
                       for n in CHEXPERT_OBSERVATIONS if n in CHEXPERT_POSITIVE or n in CHEXPERT_UNCERTAIN}
    else:
        assert pos == CHEXPERT_POSITIVE
    if policy == "zeros":
        assert neg == {n: ref_neg.get(n, 0) + CHEXPERT_UNCERTAIN.get(n, 0) for n in set(ref_neg) | set(CHEXPERT_UNCERTAIN)}
    else:
        assert neg == ref_neg
    # uncertain is never negative unless asked: under "ignore" it is unknown
    assert np.isnan(ref.labels[ref.uncertain_mask]).all()
    assert ds.fingerprint() != ref.fingerprint() or policy == "ignore"


def test_chexpert_no_finding_makes_blank_pathologies_negative(chexpert):
    first = read_chexpert(chexpert).labels[0]  # No Finding 1, Pneumothorax 0, Support Devices 1
    assert first.tolist() == [0.0] * 12 + [1.0]
    raw = read_chexpert(chexpert, no_finding_negative=False).labels[0]
    j = CHEXPERT_OBSERVATIONS.index("Pneumothorax")
    assert raw[j] == 0 and raw[-1] == 1 and np.isnan(np.delete(raw, [j, 12])).all()


def test_chexpert_subset_and_relabel_keep_the_uncertain_marks(chexpert):
    ds = read_chexpert(chexpert)
    sub = ds.subset([1])  # patient90002/study1: Fracture uncertain
    assert sub.uncertain_counts == {"Fracture": 1}
    assert sub.uncertain_policy == "ignore" and sub.patient_ids_from == "metadata"
    h = harmonise(ds)
    assert "Effusion" in h.label_names and "Pleural Effusion" not in h.label_names
    assert "Lung Opacity" in h.label_names and "Infiltration" not in h.label_names
    assert h.uncertain_counts["Effusion"] == CHEXPERT_UNCERTAIN["Pleural Effusion"]
    assert h.summary()["findings"]["Effusion"] == CHEXPERT_POSITIVE["Pleural Effusion"]


def test_chexpert_table_file_and_bad_input(chexpert, tmp_path):
    assert detect_format(chexpert / "train.csv")[0] == "chexpert"
    assert len(read_dataset(chexpert / "train.csv")) == 30
    with pytest.raises(DataError, match=r"reading '.*CheXpert-v1\.0-small': uncertain='maybe' is not "
                                        r"a policy .*'ignore' .*'zeros' .*'ones'"):
        read_chexpert(chexpert, uncertain="maybe")
    bad = tmp_path / "bad" / "train.csv"
    df = pd.read_csv(chexpert / "train.csv", dtype=str, keep_default_na=False)
    _copy(chexpert / "train.csv", bad)
    df.drop(columns=["Frontal/Lateral"]).to_csv(bad, index=False)
    with pytest.raises(DataError, match=r"CheXpert table '.*bad/train\.csv' lacks the column\(s\) 'Frontal/Lateral'"):
        read_chexpert(bad)
    df.loc[3, "Edema"] = "2.0"
    df.to_csv(bad, index=False)
    with pytest.raises(DataError, match=r"bad/train\.csv line 5, column 'Edema': label '2\.0' is not 1, 0, -1"):
        read_chexpert(bad)


# ---------------------------------------------------------------- MIMIC-CXR-JPG (format replica)

@pytest.fixture
def mimic(tmp_path):
    root = tmp_path / "mimic-cxr-jpg"
    root.mkdir()
    for f in (LABELS / "mimic_cxr").iterdir():  # the release gzips its tables
        with gzip.open(root / (f.name + ".gz"), "wb") as dst:
            dst.write(f.read_bytes())
    meta = pd.read_csv(LABELS / "mimic_cxr" / "mimic-cxr-2.0.0-metadata.csv", dtype=str)
    for d, s, st in zip(meta["dicom_id"], meta["subject_id"], meta["study_id"]):
        _img(root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}" / f"{d}.jpg")
    return root


def test_mimic_counts_studies_and_uncertain(mimic):
    assert detect_format(mimic) == ("mimic_cxr", "holds mimic-cxr-2.0.0-metadata.csv.gz and "
                                                 "mimic-cxr-2.0.0-chexpert.csv.gz")
    ds = read_dataset(mimic)
    s = ds.summary()
    assert s["images"] == 7 and s["patients"] == 3 and s["patient_ids_from"] == "metadata"
    assert s["view"] == {"PA": 2, "LATERAL": 2, "AP": 2, "nan": 1}
    assert s["uncertain_labels"] == {"Cardiomegaly": 1, "Edema": 1, "Atelectasis": 1,
                                     "Pleural Effusion": 2, "Pneumonia": 1}
    assert ds.table["split"].tolist() == ["train"] * 3 + ["validate"] * 2 + ["test"] * 2
    # labels are per study: both images of study 50000003 carry its atelectasis
    assert ds.labels[[3, 4], CHEXPERT_OBSERVATIONS.index("Atelectasis")].tolist() == [1, 1]
    (p,) = ds.problems
    assert p.kind == "unlabelled_studies" and p.detail.startswith("1 studies (1 images)")
    assert np.isnan(ds.labels[6]).all()
    ones = read_mimic_cxr(mimic, uncertain="ones").summary()["findings"]
    assert ones["Cardiomegaly"] == s["findings"]["Cardiomegaly"] + 1 == 2
    with pytest.raises(DataError, match="uncertain='U-Ones' is not a policy"):
        read_mimic_cxr(mimic, uncertain="U-Ones")
    with pytest.raises(DataError, match=r"no label table: expected mimic-cxr-2\.0\.0-negbio\.csv"):
        read_mimic_cxr(mimic, labeler="negbio")


# ---------------------------------------------------------------- PadChest (real rows)

@pytest.fixture
def padchest(tmp_path):
    name = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
    with open(LABELS / "padchest" / name, "rb") as src, gzip.open(tmp_path / (name + ".gz"), "wb") as dst:
        dst.write(src.read())
    t = pd.read_csv(LABELS / "padchest" / name, dtype=str)
    for d, i in zip(t["ImageDir"], t["ImageID"]):
        _img(tmp_path / d / i)
    return tmp_path


def test_padchest_counts_patients_views(padchest):
    assert detect_format(padchest) == ("padchest", "holds the labels table "
                                       "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz")
    ds = read_dataset(padchest)
    s = ds.summary()
    assert s["images"] == 40 and s["patients"] == 20 and s["patient_ids_from"] == "metadata"
    assert s["view"] == {"PA": 21, "LATERAL": 14, "AP": 5} and s["sex"] == {"M": 24, "F": 16}
    assert len(ds.label_names) == 38 and "normal" not in ds.label_names
    assert s["no_finding"] == 10 and s["findings"]["pleural effusion"] == 7
    assert s["findings"]["atelectasis"] == 4 and s["findings"]["laminar atelectasis"] == 2
    assert ds.table["age"].iloc[0] == 2014 - 1930
    assert "uncertain_policy" not in s and ds.problems == ()
    h = harmonise(ds)
    f = h.summary()["findings"]
    assert (f["Atelectasis"], f["Effusion"], f["Infiltration"], f["Hernia"]) == (6, 7, 4, 2)
    assert len(h.label_names) == 37 and "ground glass pattern" in h.label_names


def test_padchest_bad_labels_name_the_row(padchest, tmp_path):
    with pytest.raises(DataError, match=r"line 2: Unknown finding 'normal'|line \d+: Unknown finding"):
        read_padchest(padchest, findings=("pleural effusion",))
    t = pd.read_csv(padchest / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz", dtype=str,
                    keep_default_na=False)
    t.loc[2, "Labels"] = "pleural effusion, cardiomegaly"
    bad = tmp_path / "bad"
    bad.mkdir()
    t.to_csv(bad / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", index=False)
    with pytest.raises(DataError, match=r"160K_01\.02\.19\.csv line 4, column 'Labels': 'pleural "
                                        r"effusion, cardiomegaly' is not a list"):
        read_padchest(bad)


# ---------------------------------------------------------------- VinDr-CXR

@pytest.fixture
def vindr_kaggle(tmp_path):
    _copy(LABELS / "vindr_kaggle" / "train.csv", tmp_path / "train.csv")
    for i in pd.read_csv(tmp_path / "train.csv")["image_id"].unique():
        _img(tmp_path / "train" / f"{i}.png")
    return tmp_path


def test_vindr_kaggle_rules_and_boxes(vindr_kaggle):
    assert detect_format(vindr_kaggle)[0] == "vindr_cxr"
    ds = read_dataset(vindr_kaggle)
    s = ds.summary()
    assert s["images"] == 8 and s["patients"] == 8 and s["patient_ids_from"] == "image_id"
    assert {k: v for k, v in s["findings"].items() if v} == {
        "Aortic enlargement": 2, "Cardiomegaly": 2, "ILD": 1, "Lung Opacity": 1, "Nodule/Mass": 2,
        "Other lesion": 2, "Pleural effusion": 1, "Pleural thickening": 3, "Pulmonary fibrosis": 1}
    assert s["no_finding"] == 3 and s["boxes"] == 35 and not np.isnan(ds.labels).any()
    maj = read_vindr_cxr(vindr_kaggle, rule="majority").summary()["findings"]
    assert {k: v for k, v in maj.items() if v} == {
        "Aortic enlargement": 1, "Cardiomegaly": 2, "ILD": 1, "Lung Opacity": 1, "Nodule/Mass": 1,
        "Other lesion": 1, "Pleural thickening": 1, "Pulmonary fibrosis": 1}
    assert [p.kind for p in ds.problems] == ["no_patient_ids"]
    one = ds.subset(np.flatnonzero(ds.table["image_id"] == "9a5094b2563a1ef3ff50dc5c7ff71345"))
    assert len(one.boxes) == 6 and set(one.boxes["rad_id"]) == {"R8", "R9", "R10"}
    with pytest.raises(DataError, match="rule='all' is not a VinDr-CXR merge rule"):
        read_vindr_cxr(vindr_kaggle, rule="all")


def test_vindr_unknown_class_names_the_line(vindr_kaggle):
    text = (vindr_kaggle / "train.csv").read_text().replace("Cardiomegaly", "Cardiomegally", 1)
    (vindr_kaggle / "train.csv").write_text(text)
    with pytest.raises(DataError, match=r"train\.csv line \d+: Unknown finding 'Cardiomegally'\. "
                                        r"Did you mean 'Cardiomegaly'"):
        read_vindr_cxr(vindr_kaggle)


def test_vindr_physionet_layout(tmp_path):
    shutil.copytree(LABELS / "vindr_physionet", tmp_path / "vindr")
    for i in ("a1", "a2", "a3"):
        _img(tmp_path / "vindr" / "train" / f"{'0' * 30}{i}.png")
    ds = read_dataset(tmp_path / "vindr")
    assert ds.format == "vindr_cxr" and len(ds) == 3 and len(ds.label_names) == 27
    f = ds.summary()["findings"]
    assert (f["Cardiomegaly"], f["Pleural effusion"], f["Consolidation"], f["Pneumonia"]) == (1, 1, 1, 1)
    maj = read_vindr_cxr(tmp_path / "vindr", rule="majority").summary()["findings"]
    assert (maj["Cardiomegaly"], maj["Pleural effusion"], maj["Lung Opacity"]) == (1, 0, 1)
    assert len(ds.boxes) == 7
    h = harmonise(ds)
    assert {"Effusion", "Consolidation", "Pneumonia"} <= set(h.label_names) and "Nodule/Mass" in h.label_names


# ---------------------------------------------------------------- RSNA Pneumonia (real rows)

def test_rsna_boxes_and_per_image_ids(tmp_path):
    _copy(LABELS / "rsna" / "stage_2_train_labels.csv", tmp_path / "stage_2_train_labels.csv")
    _copy(LABELS / "rsna" / "stage_2_detailed_class_info.csv", tmp_path / "stage_2_detailed_class_info.csv")
    ids = pd.read_csv(tmp_path / "stage_2_train_labels.csv")["patientId"].unique()
    for i in ids[1:]:
        _img(tmp_path / "stage_2_train_images" / f"{i}.png")
    _write_dicom_with(tmp_path / "stage_2_train_images" / f"{ids[0]}.dcm", sex="F", age="058Y", view="AP")
    assert detect_format(tmp_path) == ("rsna_pneumonia", "holds stage_2_train_labels.csv")
    ds = read_dataset(tmp_path)
    s = ds.summary()
    assert s["images"] == 22 and s["patients"] == 22 and s["patient_ids_from"] == "image_id"
    assert s["findings"] == {"Lung Opacity": 8} and s["boxes"] == 15
    assert ds.table["rsna_class"].value_counts()["Lung Opacity"] == 8
    assert (ds.table["view"][0], ds.table["sex"][0], ds.table["age"][0]) == ("AP", "F", 58)
    assert any(p.kind == "no_patient_ids" for p in ds.problems)
    assert harmonise(ds).label_names == ("Pneumonia",)


def _write_dicom_with(path, *, sex, age, view):
    import pydicom

    from .test_images import _write_dicom

    path.parent.mkdir(parents=True, exist_ok=True)
    _write_dicom(path, np.zeros((4, 4), np.uint16), "MONOCHROME2")
    d = pydicom.dcmread(path)
    d.PatientSex, d.PatientAge, d.ViewPosition = sex, age, view
    d.save_as(path)


# ---------------------------------------------------------------- TB sets and JSRT (format replicas)

def test_shenzhen_and_montgomery(tmp_path):
    shutil.copytree(LABELS / "shenzhen", tmp_path / "ChinaSet_AllFiles")
    for stem in ("CHNCXR_0001_0", "CHNCXR_0002_0", "CHNCXR_0327_1", "CHNCXR_0328_1", "CHNCXR_0329_1"):
        _img(tmp_path / "ChinaSet_AllFiles" / "CXR_png" / f"{stem}.png")
    assert detect_format(tmp_path / "ChinaSet_AllFiles") == (
        "shenzhen_tb", "holds images named CHNCXR_NNNN_0/1, e.g. CXR_png/CHNCXR_0001_0.png")
    ds = read_shenzhen(tmp_path / "ChinaSet_AllFiles")
    s = ds.summary()
    assert s["images"] == 5 and s["findings"] == {"Tuberculosis": 3} and s["patient_ids_from"] == "file_name"
    assert ds.table["sex"].tolist()[:4] == ["M", "F", "M", "F"]
    assert ds.table["age"].tolist()[:4] == [35, 49, 52, 0.67] and np.isnan(ds.table["age"][4])
    assert [p.kind for p in ds.problems] == ["no_clinical_reading"]
    assert ds.table["reading"][2] == "PTB in the right upper field"

    root = tmp_path / "MontgomerySet"
    shutil.copytree(LABELS / "montgomery", root)
    for stem in ("MCUCXR_0001_0", "MCUCXR_0002_0", "MCUCXR_0104_1"):
        _img(root / "CXR_png" / f"{stem}.png")
        _img(root / "ManualMask" / "leftMask" / f"{stem}.png")  # masks share the names
    ds = read_dataset(root)
    assert ds.format == "montgomery_tb" and len(ds) == 3 and ds.problems == ()
    assert all("/CXR_png/" in p for p in ds.table["path"])
    assert ds.table["sex"].tolist() == ["F", "M", "M"] and ds.table["age"].tolist() == [40, 62, 53]
    assert ds.summary()["findings"] == {"Tuberculosis": 1}


def test_jsrt(tmp_path):
    shutil.copytree(LABELS / "jsrt", tmp_path / "jsrt")
    for stem in ("JPCLN001", "JPCLN002", "JPCNN001", "JPCNN002"):
        _img(tmp_path / "jsrt" / "png" / f"{stem}.png")
    assert detect_format(tmp_path / "jsrt")[0] == "jsrt"
    ds = read_jsrt(tmp_path / "jsrt")
    assert ds.summary()["findings"] == {"Nodule": 2} and ds.patient_ids_from == "file_name"
    assert ds.table["age"].tolist() == [53, 61, 58, 41] and ds.table["sex"].tolist() == ["M", "F", "M", "F"]
    assert "malignant" in ds.table["clinical"][0]
    assert harmonise(ds).label_names == ("Nodule",)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "JPCLN001.IMG").write_bytes(b"\0" * 16)
    assert detect_format(tmp_path / "raw")[0] == "jsrt"
    with pytest.raises(DataError, match=r"JSRT's raw \.IMG files .* convert them to PNG"):
        read_jsrt(tmp_path / "raw")


# ---------------------------------------------------------------- detection, vocabulary, patient ids

def test_public_layouts_win_over_folder_formats(tmp_path, chexpert):
    # CheXpert's train/ and valid/ also read as two class folders; CheXpert is asked first
    assert read_class_folder(chexpert).task == "multiclass"
    assert detect_format(chexpert)[0] == "chexpert"
    layouts = public_layouts(tmp_path / "l")
    for name, path in layouts.items():
        assert detect_format(path)[0] == name


def test_vocabulary_tables_are_packaged_and_only_name_chestxray14_findings():
    for source in ("chexpert", "mimic_cxr", "padchest", "vindr_cxr", "rsna_pneumonia"):
        t = vocabulary_table(source)
        assert len(t) and set(t["chestxray14_name"]) - {""} <= set(CHESTXRAY14_FINDINGS)
        assert (t["note"] != "").all()
    t = vocabulary_table("chexpert").set_index("source_name")
    assert t.loc["Lung Opacity", "chestxray14_name"] == "" and "Infiltration" in t.loc["Lung Opacity", "note"]
    assert t.loc["Pleural Effusion", "chestxray14_name"] == "Effusion"
    with pytest.raises(DataError, match="Unknown vocabulary source 'chexpret'. Did you mean 'chexpert'"):
        vocabulary_table("chexpret")


def test_own_vocabulary_table_is_checked(tmp_path):
    ds = Dataset(pd.DataFrame({"image_id": ["a"], "path": ["a"], "patient_id": ["1"]}),
                 np.array([[1, 0]], np.float32), ("fluid", "big heart"))
    with pytest.raises(DataError, match="pass source="):
        harmonise(ds)
    (tmp_path / "v.csv").write_text("source_name,chestxray14_name,note\nfluid,Efusion,x\n")
    with pytest.raises(DataError, match=r"v\.csv' line 2: Unknown ChestX-ray14 finding 'Efusion'\. "
                                        "Did you mean 'Effusion'"):
        harmonise(ds, table=tmp_path / "v.csv")
    (tmp_path / "v.csv").write_text("source_name,chestxray14_name,note\nfluid,Effusion,x\nbig heart,,kept\n")
    assert common_vocabulary(ds, table=tmp_path / "v.csv") == {"fluid": "Effusion"}
    assert harmonise(ds, table=tmp_path / "v.csv").label_names == ("Effusion", "big heart")


def test_patient_ids_are_normalised_and_their_source_is_said(tmp_path, sample_root):
    assert normalise_patient_ids(["00075", "75", "0", "000", " p007 "]).tolist() == ["75", "75", "0", "0", "p007"]
    for i in range(3):
        _img(tmp_path / f"{i}.png")
    (tmp_path / "d.csv").write_text("path,patient_id,Mass\n0.png,00075,1\n1.png,75,0\n2.png,p007,1\n")
    ds = read_csv_dataset(tmp_path / "d.csv")
    assert ds.patient_ids.tolist() == ["75", "75", "p007"] and ds.patient_ids_from == "metadata"
    (tmp_path / "e.csv").write_text("path,Mass\n0.png,1\n")
    assert read_csv_dataset(tmp_path / "e.csv").summary()["patient_ids_from"] == "file_name"
    assert read_image_paths([tmp_path])[0].patient_ids_from == "file_name"
    cxr = read_dataset(sample_root)
    assert cxr.patient_ids_from == "metadata" and cxr.subset([0, 1]).patient_ids_from == "metadata"
    assert cxr.filter(view="PA").relabel({"Hernia": None}).patient_ids_from == "metadata"
    with pytest.raises(DataError, match="patient_ids_from must be one of metadata, file_name"):
        Dataset(cxr.table, cxr.labels, cxr.label_names, patient_ids_from="guessed")
