"""Model cards (medxfer.card): every number read from the model folder or a report."""

import json
import shutil

import pytest

from medxfer.card import CardError, build_card, card_markdown, read_model_folder
from medxfer.cli import main


def _md(model, *reports) -> str:
    return card_markdown(build_card(model, reports))


def _ci(ci) -> str:
    return f"{ci[0]:.3f}-{ci[1]:.3f}"


def test_train_writes_a_card_from_the_model_folders_numbers(tiny_trained):
    m = tiny_trained / "m"
    meta = json.loads((m / "model.json").read_text())
    md = (m / "card.md").read_text()
    assert md == _md(m)  # what train wrote is what `medxfer card` builds
    assert (m / "card.html").read_text().startswith("<!doctype html>")
    data = meta["features"]["training_data"]
    val = meta["selection_metrics"]["validation_metrics"]
    assert f"{data['images']} images of {data['patients']} patients." in md
    assert data["images"] == 30
    for name, k in data["findings"].items():
        assert f"| {name} | {k} | 30 |" in md  # prevalence table
    # the validation predictions, with the patient-bootstrap CI when it is not withheld
    auc = f"macro AUC {val['macro_auc']:.3f} (95% CI "
    assert auc + (_ci(val["macro_auc_ci95"]) if val["macro_auc_ci95"] else val["macro_auc_ci95_withheld"]) in md
    assert val["n_images"] == meta["selection_metrics"]["validation_images"]
    assert f"a distance score above {meta['ood']['threshold']:.3f}" in md
    assert "No evaluation on new patients was given to this card" in md
    assert f"medxfer -q train {tiny_trained / 'f'} --out {m} --no-select --max-iter 50" in md  # the exact command
    files = read_model_folder(m)["_files"]
    assert f"model.safetensors: sha256 {files['model.safetensors']}" in md
    assert "text-mined from the radiology reports" in md  # ChestX-ray14's labels
    # no section is left empty
    assert all(s.blocks for s in build_card(m).sections)


def test_a_card_with_an_evaluation_holds_the_reports_numbers(tiny_trained, tmp_path, capsys):
    m = tiny_trained / "m"
    report = tmp_path / "eval"
    assert main(["-q", "evaluate", str(m), str(tiny_trained / "f"), "--out", str(report),
                 "--allow-training-patients", "--n-boot", "50"]) == 0
    capsys.readouterr()
    doc = json.loads((report / "metrics.json").read_text())
    r = doc["metrics"]
    assert doc["config"]["model_sha256"] == read_model_folder(m)["_files"]["model.safetensors"]
    html = (report / "report.html").read_text()
    assert "card.html\">The model card" in html  # the report links the model's card
    out = tmp_path / "card.md"
    assert main(["card", str(m), "--evaluation", str(report), "--out", str(out)]) == 0
    assert "with 1 evaluation report(s)" in capsys.readouterr().out
    md = out.read_text()
    assert f"Evaluation report {report}" in md
    assert f"{r['n_images']} images of {r['n_patients']} patients; macro AUC {r['macro_auc']:.3f}" in md
    for name, f in r["per_finding"].items():
        if f["auc"] is not None:
            assert f"| {name} | {f['positives']} | {f['n']} |" in md and f"| {f['auc']:.3f} |" in md
    o = r["out_of_distribution"]
    assert f"{report}: {o['flagged']} of {o['of']} images flagged" in md
    assert "No evaluation on new patients" not in md
    assert main(["card", str(m), "--evaluation", str(report), "--out", str(tmp_path / "c.html")]) == 0
    assert "<table>" in (tmp_path / "c.html").read_text()

    # a report of another model is refused, naming it
    other = tmp_path / "other"
    shutil.copytree(report, other)
    doc["config"]["model_sha256"] = "0" * 64
    (other / "metrics.json").write_text(json.dumps(doc))
    with pytest.raises(CardError, match="evaluated another model"):
        build_card(m, [other])


def test_a_card_of_an_older_model_says_what_it_does_not_record(tiny_trained, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_trained / "m", old)
    meta = json.loads((old / "model.json").read_text())
    del meta["features"]["training_data"], meta["selection_metrics"]["validation_metrics"]
    meta["config"].pop("command")
    meta["ood"] = None
    (old / "model.json").write_text(json.dumps(meta))
    card = build_card(old)
    md = card_markdown(card)
    assert all(s.blocks for s in card.sections)
    assert "does not record its training data's summary" in md
    assert "records only the validation macro AUC" in md
    assert "Training command: not recorded" in md
    assert "carries no out-of-distribution score" in md


def test_card_refuses_bad_input(tiny_trained, tmp_path, capsys):
    m = tiny_trained / "m"
    assert main(["card", str(m), "--out", str(tmp_path / "card.pdf")]) == 2
    assert "written as .html or .md" in capsys.readouterr().err
    assert main(["card", str(tmp_path / "nothing"), "--out", str(tmp_path / "c.md")]) == 2
    assert "is not a medxfer model folder" in capsys.readouterr().err
    assert main(["card", str(m), "--evaluation", str(tmp_path), "--out", str(tmp_path / "c.md")]) == 2
    assert "is not a report folder (no metrics.json)" in capsys.readouterr().err
    (tmp_path / "metrics.json").write_text("{junk")
    assert main(["card", str(m), "--evaluation", str(tmp_path), "--out", str(tmp_path / "c.md")]) == 2
    assert "is not a medxfer report's metrics.json" in capsys.readouterr().err
    assert not (tmp_path / "c.md").exists()


def test_a_card_names_the_fallbacks_packaging_took(tiny_trained, tmp_path):
    folder = tmp_path / "fb"
    shutil.copytree(tiny_trained / "m", folder)
    meta = json.loads((folder / "model.json").read_text())
    assert set(meta["selection_metrics"]["fallbacks"]) == {
        "threshold_0.5_no_both_classes", "calibration_identity_no_both_classes", "calibration_shift_only"}
    meta["selection_metrics"]["fallbacks"] |= {"threshold_0.5_no_both_classes": ["Hernia"],
                                               "calibration_shift_only": ["Edema"]}
    (folder / "model.json").write_text(json.dumps(meta))
    md = card_markdown(build_card(folder))
    assert "Fallback: Hernia: threshold left at 0.5" in md
    assert "Fallback: Edema: calibration reduced to a shift" in md
