"""Your data, other hospitals (issue 19): evaluating on a site labelled for some findings,
honest patient IDs, duplicate images across training and evaluation, the uncertain-label
option, and the shift study against another site."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from medxfer.cli import main


def _site_csv(folder, sample_root, table, ids, columns, *, patients=True):
    """A CSV site: the bundled images ``ids`` copied into ``folder`` with labels for
    ``columns`` (from the official table) and, when ``patients``, the patient column."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = table.set_index("image_id").loc[ids]
    out = pd.DataFrame({"path": ids})
    if patients:
        out["patient_id"] = rows["patient_id"].to_numpy()
    for c in columns:
        out[c] = [int(c in str(f).split("|")) for f in rows["finding_labels"]]
    for i in ids:
        shutil.copyfile(sample_root / "images" / i, folder / i)
    out.to_csv(folder / "labels.csv", index=False)
    return folder / "labels.csv"


def test_evaluate_on_a_site_labelled_for_one_finding(tiny_trained, sample_root, sample_table,
                                                     tmp_path, capsys):
    trained = set(pd.read_csv(tiny_trained / "f" / "rows.csv")["image_id"])
    ids = [i for i in sample_table["image_id"] if i not in trained][:80]
    one = _site_csv(tmp_path / "site", sample_root, sample_table, ids, ["Infiltration"])
    out = tmp_path / "report"
    capsys.readouterr()
    assert main(["-q", "evaluate", str(tiny_trained / "m"), str(one), "--out", str(out),
                 "--n-boot", "50", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["findings"]["scored"] == ["Infiltration"]
    assert "Atelectasis" in m["findings"]["not_in_data"] and m["findings"]["not_in_model"] == []
    assert list(m["per_finding"]) == ["Infiltration"] and m["per_finding"]["Infiltration"]["auc_ci95"]
    # another label file for the same images into the same report folder: no stale refusal
    other = _site_csv(tmp_path / "site", sample_root, sample_table, ids, ["Cardiomegaly", "Nodule"])
    assert main(["-q", "evaluate", str(tiny_trained / "m"), str(other), "--out", str(out),
                 "--n-boot", "50"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("scored 2 finding(s): Cardiomegaly, Nodule; not labelled in the data: Atelectasis")
    assert len(list((out / "features").glob("*/manifest.json"))) == 2


def test_nothing_shared_fails_before_any_extraction(tiny_trained, sample_root, sample_table, tmp_path, capsys):
    ids = list(sample_table["image_id"][200:210])
    csv = _site_csv(tmp_path / "tb", sample_root, sample_table, ids, [])
    df = pd.read_csv(csv)
    df["Tuberculosis"] = [0, 1] * 5
    df.to_csv(csv, index=False)
    assert main(["evaluate", str(tiny_trained / "m"), str(csv), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("medxfer evaluate: error: the data and the model share no finding: the "
                          "model predicts Atelectasis, Cardiomegaly")
    assert err.endswith("the data labels Tuberculosis. Evaluate with labels for at least one of "
                        "the model's findings (a CSV column named after it)")
    assert not (tmp_path / "r" / "features").exists()


def test_derived_patient_ids_are_unchecked_and_a_planted_duplicate_is_found(
        tiny_trained, sample_root, sample_table, tmp_path, capsys):
    trained = sorted(pd.read_csv(tiny_trained / "f" / "rows.csv")["image_id"])
    ids = [i for i in sample_table["image_id"] if i not in set(trained)][:40]
    csv = _site_csv(tmp_path / "site", sample_root, sample_table, ids, ["Effusion", "Infiltration"],
                    patients=False)
    # a training image under another name, in a dataset without patient IDs
    shutil.copyfile(sample_root / "images" / trained[3], tmp_path / "site" / "renamed_copy.png")
    df = pd.read_csv(csv)
    df.loc[len(df)] = ["renamed_copy.png", 0, 1]
    df.to_csv(csv, index=False)
    assert main(["evaluate", str(tiny_trained / "m"), str(csv), "--out", str(tmp_path / "r"),
                 "--n-boot", "20", "--json"]) == 0
    captured = capsys.readouterr()
    m = json.loads(captured.out)
    assert "unchecked" in m["training_patient_overlap"]
    assert "stand-ins (from file names)" in m["training_patient_overlap"]["unchecked"]
    assert m["duplicates_of_training_images"] == {"images": 1, "of_images": 41,
                                                  "examples": ["renamed_copy.png"]}
    assert "the evaluation data's patient IDs are stand-ins (from file names)" in captured.err
    summary = (tmp_path / "r" / "summary.md").read_text()
    assert "have exactly the pixels of a training image (e.g. renamed_copy.png)" in summary
    assert "Training-patient overlap unchecked" in summary
    assert captured.err.count("stand-ins") == 1


def test_the_model_folder_records_where_patient_ids_came_from(tiny_trained):
    doc = json.loads((tiny_trained / "m" / "model.json").read_text())
    assert doc["features"]["patient_ids_from"] == "metadata"
    assert doc["features"]["uncertain_policy"] is None
    assert len(doc["features"]["training_pixel_hashes"]) == 30


def test_uncertain_option_on_the_command_line(tmp_path, capsys):
    from pathlib import Path

    from PIL import Image

    from medxfer.cli import UNCERTAIN_CHOICES
    from medxfer.data import UNCERTAIN_POLICIES

    assert UNCERTAIN_CHOICES == tuple(UNCERTAIN_POLICIES)
    src = Path(__file__).parent / "data" / "public_labels" / "chexpert" / "train.csv"
    root = tmp_path / "CheXpert-v1.0-small"
    root.mkdir()
    shutil.copyfile(src, root / "train.csv")
    for rel in pd.read_csv(root / "train.csv")["Path"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (64, 64)).save(tmp_path / rel)
    assert main(["inspect", str(root), "--uncertain", "zeros"]) == 0
    out = capsys.readouterr().out
    assert "format: chexpert" in out and "patient ids: from metadata" in out
    assert "uncertain labels (zeros): Enlarged Cardiomediastinum 2, Lung Opacity 3" in out
    from medxfer.data import bundled_sample

    assert main(["inspect", str(bundled_sample()), "--uncertain", "ones"]) == 2
    assert "option 'uncertain' does not apply to the chestxray14 format" in capsys.readouterr().err


def test_prior_shift_keeps_the_ranking_and_moves_the_mean():
    from medxfer.studies.shift import prior_shift

    P = np.array([[0.1], [0.2], [0.6]])
    Q = prior_shift(P, np.array([0.2]), np.array([0.5]))
    assert (np.argsort(Q[:, 0]) == np.argsort(P[:, 0])).all() and (Q > P).all()
    np.testing.assert_allclose(prior_shift(P, np.array([0.3]), np.array([0.3])), P, atol=1e-6)


@pytest.mark.slow
def test_study_shift_against_another_site(make_cxr14, sample_root, sample_table, tmp_path, capsys):
    ids = list(sample_table["image_id"])
    data = make_cxr14(ids[:160], name="site_a")
    other = _site_csv(tmp_path / "site_b", sample_root, sample_table, ids[300:380],
                      ["Effusion", "Infiltration", "Atelectasis"])
    out = tmp_path / "run"
    assert main(["-q", "study", "shift", str(data), "--out", str(out), "--backbone", "tiny_random_test",
                 "--external", str(other), "--prior-shift", "--shifts", "", "--n-boot", "50"]) == 0
    for f in ("external.csv", "external.md", "external_auc.png", "external_auc.csv", "external_findings.csv"):
        assert (out / "shift" / f).is_file(), f
    row = pd.read_csv(out / "shift" / "external.csv").iloc[0]
    assert row["findings_shared"] == 3 and row["external_images"] == 80
    assert 0 <= row["out_of_site_auc"] <= 1 and 0 <= row["in_site_auc"] <= 1
    assert row["ood_flagged_out_of_site"].endswith(f"/{row['test_images']}")
    assert "ece_mean_per_finding_out_of_site_prior_corrected" in row
    assert row["external_images_tested"] == row["test_images"]
    assert not (out / "shift" / "shift.md").exists()  # no subgroup pairs asked: no empty table
    assert main(["-q", "study", "compare", str(data), "--out", str(out), "--external", str(other)]) == 2
    assert "--external and --prior-shift apply to the shift study (or all), not to compare" in capsys.readouterr().err


def test_csv_names_are_matched_loosely_and_through_the_vocabularies(tiny_trained, sample_root,
                                                                   sample_table, tmp_path, capsys):
    trained = set(pd.read_csv(tiny_trained / "f" / "rows.csv")["image_id"])
    ids = [i for i in sample_table["image_id"] if i not in trained][:60]
    csv = _site_csv(tmp_path / "site", sample_root, sample_table, ids, ["Effusion", "Pleural_Thickening"])
    df = pd.read_csv(csv).rename(columns={"Effusion": "Pleural Effusion",
                                          "Pleural_Thickening": "pleural thickening"})
    df.to_csv(csv, index=False)
    assert main(["-q", "evaluate", str(tiny_trained / "m"), str(csv), "--out", str(tmp_path / "r"),
                 "--n-boot", "20", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["findings"]["scored"] == ["Effusion", "Pleural_Thickening"]
    assert m["findings"]["not_in_model"] == []
    assert m["findings"]["read_as"] == {"Pleural Effusion": "Effusion",
                                        "pleural thickening": "Pleural_Thickening"}


def test_nothing_shared_is_found_before_torch_is_imported(tiny_trained, sample_root, sample_table, tmp_path):
    """The check that takes seconds, not the minute of loading a model and its backbone."""
    import subprocess
    import sys

    csv = _site_csv(tmp_path / "tb", sample_root, sample_table, list(sample_table["image_id"][:3]), [])
    df = pd.read_csv(csv)
    df["Tuberculosis"] = [0, 1, 0]
    df.to_csv(csv, index=False)
    code = ("import sys; from medxfer.cli import main; "
            f"rc = main(['evaluate', {str(tiny_trained / 'm')!r}, {str(csv)!r}, '--out', {str(tmp_path / 'r')!r}]); "
            "print(rc, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["2", "False"] and "share no finding" in r.stderr
