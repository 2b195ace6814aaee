import json

import pytest

from medxfer.cli import build_parser, main, train_settings
from medxfer.settings import HeadSettings


@pytest.mark.slow
def test_demo_end_to_end_on_a_few_real_images(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out), "--limit", "80", "--n-boot", "50"]) == 0
    printed = capsys.readouterr().out
    assert "macro AUC on" in printed and "report:" in printed
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    m = metrics["metrics"]
    assert 0.0 <= m["macro_auc"] <= 1.0 and m["n_images"] + metrics["config"]["demo"]["train_images"] == 80
    assert metrics["baselines"]["logistic_regression"]["macro_auc"] is not None
    for name in ("report.html", "predictions.csv", "roc_curves.png", "pr_curves.png",
                 "reliability.png", "summary.md"):
        assert (out / "report" / name).stat().st_size > 0
    html = (out / "report" / "report.html").read_text()
    assert "Macro AUC" in html and "data:image/png;base64," in html and "Baseline side by side" in html
    assert (out / "model" / "model.safetensors").is_file()
    # issue 23: the model card, with the demo's own evaluation, linked from the report
    assert 'href="../model/card.html"' in html
    card = (out / "model" / "card.md").read_text()
    model = json.loads((out / "model" / "model.json").read_text())
    data, val = model["features"]["training_data"], model["selection_metrics"]["validation_metrics"]
    assert data["images"] == metrics["config"]["demo"]["train_images"]
    assert f"{data['images']} images of {data['patients']} patients." in card
    for d in (val, m):  # out-of-fold, then the held-out report; a CI or why it is withheld
        ci = d["macro_auc_ci95"]
        why = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else d["macro_auc_ci95_withheld"]
        assert f"macro AUC {d['macro_auc']:.3f} (95% CI {why})" in card
    assert val["macro_auc_ci95"] or m["macro_auc_ci95"]  # at least one interval on 80 images
    assert f"a distance score above {model['ood']['threshold']:.3f}" in card
    assert "No evaluation on new patients" not in card


@pytest.mark.slow
def test_train_on_one_folder_evaluate_on_another(make_cxr14, sample_table, tmp_path, capsys):
    ids = sample_table["image_id"].tolist()
    a = make_cxr14(ids[:120], name="site_a", layout="release")
    b = make_cxr14(ids[120:180], name="site_b")
    feats, model = tmp_path / "feats", tmp_path / "model"
    assert main(["-q", "extract", str(a), "--backbone", "efficientnet_lite0", "--out", str(feats)]) == 0
    assert main(["-q", "train", str(feats), "--out", str(model), "--json"]) == 0
    trained = json.loads(capsys.readouterr().out.split("features:", 1)[-1].split("\n", 1)[1])
    assert trained["train_images"] == 120
    # evaluate on an image folder never seen: extracted with the model's own backbone
    assert main(["-q", "evaluate", str(model), str(b), "--out", str(tmp_path / "eval"),
                 "--json", "--n-boot", "50"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert 0.0 <= m["macro_auc"] <= 1.0 and m["n_images"] == 60
    assert len(list((tmp_path / "eval" / "features").glob("*/manifest.json"))) == 1
    # the mismatch of calibrating single fold members and deploying their average, measured
    mm = m["calibration_mismatch"]
    assert mm["members"] >= 2 and 0 <= mm["ece_deployed"] <= 1 and 0 <= mm["ece_single_members"] <= 1
    assert mm["ece_deployed"] == pytest.approx(m["macro"]["ece"])
    assert f"applied to the average of {mm['members']}" in (tmp_path / "eval" / "summary.md").read_text()


@pytest.mark.slow
def test_evaluate_refuses_training_patients_unless_told(make_cxr14, sample_table, tmp_path, capsys):
    """Evaluating on the training patients is the inflated-AUC mistake: refused by default,
    with the counts and the option; allowed on request, and the report's first line says so."""
    ids = sample_table["image_id"].tolist()
    root = make_cxr14(ids[:40])
    feats, model = tmp_path / "f", tmp_path / "m"
    main(["-q", "extract", str(root), "--backbone", "tiny_random_test", "--out", str(feats)])
    main(["-q", "train", str(feats), "--out", str(model), "--no-select", "--max-iter", "50"])
    record = json.loads((model / "model.json").read_text())["features"]["training_patients"]
    assert len(record["sha256_16"]) == sample_table["patient_id"][:40].nunique()
    assert not set(sample_table["patient_id"][:40].astype(str)) & set(record["sha256_16"])  # hashed
    capsys.readouterr()
    assert main(["-q", "evaluate", str(model), str(feats), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "40 of 40 evaluation images" in err and "--allow-training-patients" in err
    assert not (tmp_path / "e").exists()
    assert main(["-q", "evaluate", str(model), str(feats), "--out", str(tmp_path / "e"), "--n-boot", "10",
                 "--allow-training-patients", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["training_patient_overlap"]["images"] == 40
    first = (tmp_path / "e" / "summary.md").read_text().splitlines()[0]
    assert first.startswith("# NOT A HELD-OUT EVALUATION: 40 of 40 evaluation images")
    # a mixed set: the count names only the overlapping part
    mixed = make_cxr14(ids[20:60], name="mixed")
    assert main(["-q", "evaluate", str(model), str(mixed), "--out", str(tmp_path / "e3")]) == 2
    n = int(sample_table["patient_id"][20:60].isin(sample_table["patient_id"][:40]).sum())
    assert f"{n} of 40 evaluation images" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_refuses_features_from_another_backbone(make_cxr14, sample_table, tmp_path, capsys):
    root = make_cxr14(sample_table["image_id"][:40].tolist())
    tiny, lite = tmp_path / "tiny", tmp_path / "lite"
    main(["-q", "extract", str(root), "--backbone", "tiny_random_test", "--out", str(tiny)])
    main(["-q", "extract", str(root), "--backbone", "efficientnet_lite0", "--out", str(lite)])
    main(["-q", "train", str(tiny), "--out", str(tmp_path / "m"), "--no-select", "--max-iter", "50"])
    capsys.readouterr()
    assert main(["-q", "evaluate", str(tmp_path / "m"), str(lite), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "made with backbone 'efficientnet_lite0 (multistage, 224 px)'" in err and "differ in name" in err


@pytest.mark.slow
def test_predict_reads_what_it_can_and_lists_the_rest(make_cxr14, sample_table, tmp_path, capsys):
    root = make_cxr14(sample_table["image_id"][:40].tolist())
    main(["-q", "extract", str(root), "--backbone", "tiny_random_test", "--out", str(tmp_path / "f")])
    main(["-q", "train", str(tmp_path / "f"), "--out", str(tmp_path / "m"), "--no-select", "--max-iter", "50"])
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    good = root / "images" / sample_table["image_id"][0]
    capsys.readouterr()
    # two of three inputs failed: exit 1 (--keep-going: 0), the JSON still lists both
    assert main(["-q", "predict", str(tmp_path / "m"), str(good), str(bad),
                 str(tmp_path / "absent.png"), "--json"]) == 1
    r = json.loads(capsys.readouterr().out)
    (pred,) = r["predictions"]
    assert pred["image"] == str(good) and set(pred["probabilities"]) >= {"Atelectasis", "Hernia"}
    assert all(0 <= v <= 1 for v in pred["probabilities"].values())
    failed = {f["item"]: f["detail"] for f in r["failed"]}
    assert "cannot read image" in failed[str(bad)] and failed[str(tmp_path / "absent.png")] == "no such file or folder"
    # only unreadable files: each named, exit 1, no estimator error about 0 samples
    assert main(["predict", str(tmp_path / "m"), str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"cannot read image '{bad}'" in err and "0 sample" not in err
    # no message points into the temporary features folder that is gone once predict ends
    assert main(["predict", str(tmp_path / "m"), str(good), str(bad), "--keep-going"]) == 0
    err = capsys.readouterr().err
    assert "medxfer-predict-" not in err and f"cannot read image '{bad}'" in err


def test_inspect_json_and_backbones(sample_root, capsys):
    assert main(["inspect", str(sample_root), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["images"] == 421 and s["findings"]["Hernia"] == 14 and s["view"]["AP"] == 77
    assert main(["backbones", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["efficientnet_lite0"]["weights_available"] and rows["efficientnet_lite0"]["license"] == "Apache-2.0"


def test_errors_exit_2_with_a_clear_message(tmp_path, capsys):
    assert main(["extract", str(tmp_path), "--out", str(tmp_path / "f")]) == 2
    assert "is not a dataset medxfer recognises" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "e")]) == 2
    assert "is not a medxfer model folder" in capsys.readouterr().err


COMMANDS = sorted(build_parser().commands)  # from the parser itself: a new command is covered


def test_the_command_list_is_the_parsers():
    assert len(COMMANDS) >= 13 and {"train", "serve", "study", "export"} <= set(COMMANDS)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith(f"usage: medxfer {cmd} ")


@pytest.mark.slow
def test_toml_config_sets_defaults_and_the_command_line_wins(make_cxr14, sample_table, tmp_path, capsys):
    from medxfer.model_io import TrainedModel

    root = make_cxr14(sample_table["image_id"][:40].tolist())
    main(["-q", "extract", str(root), "--backbone", "tiny_random_test", "--out", str(tmp_path / "f")])
    cfg = tmp_path / "medxfer.toml"
    cfg.write_text("[train]\nbottleneck-dim = 16\nl1 = 0.002\nmax-iter = 30\nselect = false\n")
    assert main(["--config", str(cfg), "-q", "train", str(tmp_path / "f"), "--out", str(tmp_path / "m"),
                 "--l1", "0.005"]) == 0
    params = TrainedModel.load(tmp_path / "m").config["params"]
    assert params["bottleneck_dim"] == 16 and params["max_iter"] == 30 and params["l1"] == 0.005
    # a config value counts as given: an option of another mode is refused from the file too
    cfg.write_text("[train]\nepochs = 3\n")
    assert main(["--config", str(cfg), "train", str(tmp_path / "f"), "--out", str(tmp_path / "m3")]) == 2
    assert "--epochs applies only with --solver adamw" in capsys.readouterr().err
    cfg.write_text("[train]\nlambda1 = 0.1\n")
    capsys.readouterr()
    assert main(["--config", str(cfg), "train", str(tmp_path / "f"), "--out", str(tmp_path / "m2")]) == 2
    assert "[train] has no option 'lambda1'" in capsys.readouterr().err


def test_config_file_both_spellings_unknown_keys_and_bad_values(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nl1 = -0.5\n")
    for argv in (["--config", str(cfg)], [f"--config={cfg}"]):
        assert main(argv + ["train", "F", "--out", "M"]) == 2
        err = capsys.readouterr().err
        assert "[train] l1 must be a float in the range [0.0, 10000.0]; got -0.5" in err
    cfg.write_text("[train]\nlambda1 = 0.1\n")
    assert main([f"--config={cfg}", "train", "F", "--out", "M"]) == 2
    assert "[train] has no option 'lambda1'" in capsys.readouterr().err
    cfg.write_text("[trian]\nl1 = 0.1\n")
    assert main(["--config", str(cfg), "train", "F", "--out", "M"]) == 2
    assert "unknown section [trian]" in capsys.readouterr().err
    cfg.write_text("[train]\nepochs = 7\nmax_epochs = 7\n")  # option name or field name
    parser = build_parser()
    from medxfer.cli import apply_config
    apply_config(parser, str(cfg))
    assert train_settings(parser.parse_args(["train", "F", "--out", "M"]))[0].max_epochs == 7


def test_config_checks_follow_the_command_and_map_zero_to_none(tmp_path):
    from medxfer.cli import apply_config, resolve_settings

    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nbottleneck-dim = 0\nvalidation_fraction = 0.0\n")
    parser = build_parser()
    apply_config(parser, str(cfg))
    head = resolve_settings(parser.parse_args(["train", "F", "--out", "M"]))[HeadSettings]
    assert head.bottleneck_dim is None and head.validation_fraction == 0.0
