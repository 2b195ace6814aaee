"""A newcomer's bad-input battery (issue 24): each failure runs the exact command through
``main([...])`` and checks the exit status and the one line it prints."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from PIL import Image

from medxfer.cli import main


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------- values that cannot work

@pytest.mark.parametrize("argv,line", [
    (["--l1", "inf"], "--l1 must be a float in the range [0.0, 10000.0]; got inf"),
    (["--l1", "-inf"], "--l1 must be a float in the range [0.0, 10000.0]; got -inf"),
    (["--l1", "1e308"], "--l1 must be a float in the range [0.0, 10000.0]; got 1e+308"),
    (["--l1", "nan"], "--l1 must be a float in the range [0.0, 10000.0]; got nan"),
    (["--l2", "-1e-5"], "--l2 must be a float in the range [0.0, 10000.0]; got -1e-05"),
    (["--no-select", "--alpha", "inf"], "--alpha must be a float in the range [0.0, 10000.0]; got inf"),
])
def test_values_outside_the_real_range_exit_2_at_parse_time(argv, line, tmp_path, capsys):
    # the features folder does not exist: the option is refused before anything is read
    assert main(["train", str(tmp_path / "features"), "--out", str(tmp_path / "m"), *argv]) == 2
    assert _one_line(capsys) == f"medxfer train: error: {line}"


def test_a_width_wider_than_the_features_is_refused_before_training(tiny_trained, tmp_path, capsys):
    d = json.loads((tiny_trained / "f" / "manifest.json").read_text())["backbone"]["feature_dim"]
    assert main(["train", str(tiny_trained / "f"), "--out", str(tmp_path / "m"), "--no-select",
                 "--bottleneck-dim", "1000000000"]) == 2
    assert _one_line(capsys) == (f"medxfer train: error: bottleneck width k=1000000000 is wider than "
                                 f"the {d}-d features: k must be at most {d} (0 on the command "
                                 "line for a linear head)")
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------- --out checked first

def test_out_is_checked_before_any_work(tiny_trained, tmp_path, capsys):
    png = tmp_path / "some.png"
    png.write_bytes(b"x")
    for argv in (["extract", str(tiny_trained / "cxr"), "--out", str(png)],
                 ["evaluate", str(tiny_trained / "m"), str(tiny_trained / "f"), "--out", str(png)],
                 ["train", str(tmp_path / "features"), "--out", str(png)]):
        assert main(argv) == 2
        assert _one_line(capsys).startswith(f"medxfer {argv[0]}: error: --out '{png}' is a file")
    assert main(["train", str(tmp_path / "features"), "--out", str(png / "model")]) == 2
    assert f"is under '{png}', which is a file" in _one_line(capsys)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    assert main(["evaluate", str(tiny_trained / "m"), str(tiny_trained / "f"), "--out", str(other)]) == 2
    assert "is a folder of other files, not a medxfer report folder" in _one_line(capsys)
    assert (other / "mine.txt").read_text() == "keep me"


def test_train_onto_an_existing_model_needs_overwrite_and_replaces_it_whole(tiny_trained, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["-q", "train", str(tiny_trained / "f"), "--out", str(out), "--no-select"]) == 0
    (out / "stale.txt").write_text("from the older model")
    capsys.readouterr()
    assert main(["train", str(tiny_trained / "f"), "--out", str(out), "--no-select"]) == 2
    assert _one_line(capsys) == (f"medxfer train: error: --out '{out}' already holds a model; pass "
                                 "--overwrite to replace it, or name a new folder")
    assert main(["-q", "train", str(tiny_trained / "f"), "--out", str(out), "--no-select",
                 "--overwrite"]) == 0
    assert (out / "model.json").is_file() and not (out / "stale.txt").exists()
    assert not list(tmp_path.glob(".m.*"))  # no temporary folder left beside it


# ---------------------------------------------------------------- one line, --debug for more

def test_an_unexpected_error_is_one_line_naming_debug(monkeypatch, capsys):
    import medxfer.cli as cli

    def boom(a):
        raise RuntimeError("something inside broke")

    monkeypatch.setitem(cli._COMMANDS, "backbones", boom)
    assert main(["backbones"]) == 1
    assert _one_line(capsys) == ("medxfer backbones: error: RuntimeError: something inside broke "
                                 "(run again with --debug for the traceback)")
    with pytest.raises(RuntimeError, match="something inside broke"):
        main(["backbones", "--debug"])


def test_interrupting_train_does_not_promise_a_resume(monkeypatch, tmp_path, capsys):
    import medxfer.cli as cli

    def interrupted(a):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli._COMMANDS, "train", interrupted)
    assert main(["train", str(tmp_path / "f"), "--out", str(tmp_path / "m")]) == 130
    assert _one_line(capsys) == ("medxfer train: interrupted; nothing was saved; run the command "
                                 "again to start over")
    monkeypatch.setitem(cli._COMMANDS, "extract", interrupted)
    assert main(["extract", str(tmp_path / "d"), "--out", str(tmp_path / "f")]) == 130
    assert "the shards written are kept: run the same command again to resume" in _one_line(capsys)


# ---------------------------------------------------------------- options that do not apply

@pytest.mark.parametrize("argv,line", [
    (["--lr", "0.1"], "--lr applies only with --solver adamw"),
    (["--epochs", "5"], "--epochs applies only with --solver adamw"),
    (["--validation-fraction", "0.3"], "--validation-fraction applies only with --no-select"),
    (["--no-select", "--inner-folds", "3"], "--inner-folds applies only with --select"),
    (["--solver", "adamw", "--max-iter", "10"], "--max-iter applies only with --solver lbfgs"),
])
def test_train_options_outside_their_mode_are_refused(argv, line, tmp_path, capsys):
    assert main(["train", str(tmp_path / "f"), "--out", str(tmp_path / "m"), *argv]) == 2
    assert _one_line(capsys).startswith(f"medxfer train: error: {line}; it would be ignored here")


def test_under_select_width_and_alpha_restrict_the_grid(tiny_trained, tmp_path):
    from medxfer.model_io import TrainedModel
    from medxfer.pipeline import restrict_grid
    from medxfer.settings import DEFAULT_CV_GRID

    assert restrict_grid(None, bottleneck_dim=8) == [g for g in DEFAULT_CV_GRID if g["bottleneck_dim"] == 8]
    assert restrict_grid(None, bottleneck_dim=None) == [g for g in DEFAULT_CV_GRID if g["bottleneck_dim"] is None]
    assert restrict_grid(None, bottleneck_dim=16) == [{"bottleneck_dim": 16, "alpha": 0.03},
                                                      {"bottleneck_dim": 16, "alpha": 0.1}]
    assert restrict_grid(None, bottleneck_dim=4, alpha=0.5) == [{"bottleneck_dim": 4, "alpha": 0.5}]
    assert main(["-q", "train", str(tiny_trained / "f"), "--out", str(tmp_path / "m"),
                 "--bottleneck-dim", "4", "--alpha", "0.5", "--inner-folds", "2"]) == 0
    model = TrainedModel.load(tmp_path / "m")
    assert model.config["chosen"] == [{"alpha": 0.5, "bottleneck_dim": 4}]
    assert model.metrics["selected_from"] == 1


def test_train_help_groups_the_options_by_mode(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for title in ("--select (the default)", "--no-select only", "--solver lbfgs only",
                  "--solver adamw only"):
        assert title in out
    adamw = out[out.index("--solver adamw only"):]
    assert "--lr X" in adamw and "--patience N" in adamw


# ---------------------------------------------------------------- nothing succeeds on nothing

def test_predict_exits_1_on_nothing_and_on_a_failed_input(tiny_trained, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["-q", "predict", str(tiny_trained / "m"), str(empty)]) == 1
    assert _one_line(capsys) == (f"medxfer predict: error: no image found in {empty}: folders are "
                                 "searched for PNG, JPEG and DICOM files")
    assert main(["-q", "predict", str(tiny_trained / "m"), str(empty), "--json"]) == 1
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG junk")
    good = sorted((tiny_trained / "cxr" / "images").glob("*.png"))[0]
    capsys.readouterr()
    assert main(["-q", "predict", str(tiny_trained / "m"), str(bad), str(good)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{good.name}: ")
    assert captured.err.splitlines()[-1] == ("medxfer predict: 1 of 2 inputs failed (exit status 1; "
                                             "--keep-going exits 0 when some were predicted)")
    assert main(["-q", "predict", str(tiny_trained / "m"), str(bad), str(good), "--keep-going"]) == 0
    assert main(["-q", "predict", str(tiny_trained / "m"), str(bad), "--keep-going"]) == 1


def test_train_refuses_data_too_small_with_the_numbers(make_cxr14, sample_table, tmp_path, capsys):
    root = make_cxr14(sample_table["image_id"][:12].tolist())
    assert main(["-q", "extract", str(root), "--backbone", "tiny_random_test", "--out", str(tmp_path / "f")]) == 0
    assert main(["-q", "train", str(tmp_path / "f"), "--out", str(tmp_path / "m"), "--inner-folds", "13"]) == 2
    assert _one_line(capsys) == ("medxfer train: error: training needs at least 13 patients for its "
                                 "13-fold patient-wise split; these features hold 12 images of 12 patient(s)")
    from medxfer.features import FeatureSet

    four = FeatureSet.load(tmp_path / "f").subset(range(4))
    from medxfer.pipeline import train_from_features
    from medxfer.errors import DataError

    with pytest.raises(DataError, match="training needs at least 10 images .* these features hold 4$"):
        train_from_features(four)
    assert not (tmp_path / "m").exists()


def test_an_undefined_auc_prints_as_n_a():
    from medxfer.cli import _fmt_auc

    assert _fmt_auc(float("nan")) == "n/a" and _fmt_auc(None) == "n/a" and _fmt_auc(0.5) == "0.500"


def test_a_1x1_image_is_refused_by_predict_and_check_images(tiny_trained, tmp_path, capsys):
    dot = tmp_path / "dot.png"
    Image.new("L", (1, 1)).save(dot)
    assert main(["-q", "predict", str(tiny_trained / "m"), str(dot)]) == 1
    err = capsys.readouterr().err
    assert "the image is 1 x 1 pixels, smaller than the 32 x 32 medxfer reads" in err
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "labels.csv").write_text("path,patient_id,Effusion\ndot.png,p1,1\n")
    dot.rename(folder / "dot.png")
    assert main(["inspect", str(folder / "labels.csv"), "--check-images", "--workers", "0"]) == 1
    assert "too_small: cannot read image" in capsys.readouterr().out  # the service: test_serve.py


# ---------------------------------------------------------------- outputs that say what they mean

def test_records_name_the_threshold_rule_and_withhold_findings_out_of_distribution():
    from medxfer.records import NOTICE, OutOfDistribution, make_records

    P = np.array([[0.9, 0.1], [0.9, 0.1]])
    ood = [OutOfDistribution(False, None, 0.5, 2.0), OutOfDistribution(True, "features far", 9.0, 2.0)]
    inside, outside = make_records(P, ["A", "B"], [0.5, 0.5], ["a.png", "b.png"], ood=ood)
    assert inside.above_threshold == inside.findings == ["A"] and inside.findings_withheld is None
    assert outside.above_threshold == ["A"] and outside.findings == []
    assert outside.findings_withheld == "out of distribution: features far"
    assert "F1" in inside.threshold_rule and inside.notice == NOTICE
    assert "not a medical device" in NOTICE
    row = outside.to_row()
    assert row["above_A"] == 1 and row["findings"] == "" and row["above_threshold"] == "A"


def test_an_interval_from_too_few_positives_is_withheld():
    from medxfer.metrics import evaluate_predictions
    from medxfer.report import summary_markdown

    rng = np.random.default_rng(0)
    Y = np.zeros((60, 2))
    Y[:2, 0] = 1  # 2 positives
    Y[:20, 1] = 1  # 20 positives
    m = evaluate_predictions(Y, rng.random((60, 2)), ["Hernia", "Effusion"], n_boot=50)
    assert m["per_finding"]["Hernia"]["auc_ci95"] is None
    assert m["per_finding"]["Hernia"]["auc_ci95_withheld"] == "too few positives (2; an interval needs 5)"
    assert m["per_finding"]["Effusion"]["auc_ci95"] is not None
    m["calibration"] = {"ece": 0.01}
    md = summary_markdown(m, ["Hernia", "Effusion"], "t")
    assert "| too few positives (2; an interval needs 5) |" in md
    assert "0.010 pooled over findings" in md and "mean per finding" in md
    assert "not a medical device" in md


def test_a_port_in_use_is_named_before_the_model_loads(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["serve", "/nonexistent/model", "--port", str(port)]) == 2
    line = _one_line(capsys)
    assert line.startswith(f"medxfer serve: error: cannot listen on 127.0.0.1:{port}")
    assert "choose another --port" in line


# ---------------------------------------------------------------- the smaller ones

def test_an_unfinished_features_folder_is_named_by_evaluate(tiny_trained, tmp_path, capsys):
    import shutil

    f = tmp_path / "f"
    shutil.copytree(tiny_trained / "f", f)
    (f / "manifest.json").rename(f / "manifest.partial.json")
    assert main(["evaluate", str(tiny_trained / "m"), str(f), "--out", str(tmp_path / "r")]) == 2
    assert _one_line(capsys) == (f"medxfer evaluate: error: the extraction into '{f}' did not "
                                 "finish; run the same `medxfer extract` command again to resume it")


def test_cv_names_folds_not_n_splits(tiny_trained, tmp_path, capsys):
    assert main(["cv", str(tiny_trained / "f"), "--out", str(tmp_path / "cv"), "--folds", "362"]) == 2
    assert _one_line(capsys) == (f"medxfer cv: error: --folds 362 is more than the 30 patients in "
                                 f"'{tiny_trained / 'f'}': use at most 30")


def test_evaluate_help_lists_the_csv_column_options(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = capsys.readouterr().out
    assert "--path-column" in out and "--patient-column" in out and "--labels-column" in out


def test_unreadable_images_are_in_problems_csv_and_a_resume_counts_kept_shards(
        make_cxr14, sample_table, tmp_path, capsys):
    import pandas as pd

    root = make_cxr14(sample_table["image_id"][:12].tolist())
    victim = sorted((root / "images").glob("*.png"))[3]
    victim.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    argv = ["extract", str(root), "--backbone", "tiny_random_test", "--out", str(tmp_path / "f"),
            "--shard-size", "4", "--workers", "0"]
    assert main(["-q", *argv]) == 0
    problems = pd.read_csv(tmp_path / "f" / "problems.csv.gz")
    assert problems["kind"].tolist().count("unreadable_image") == 1
    assert problems.loc[problems["kind"] == "unreadable_image", "item"].iloc[0] == str(victim)
    (tmp_path / "f" / "manifest.json").unlink()
    (tmp_path / "f" / "shards" / "00001.json").unlink()
    capsys.readouterr()
    assert main(argv) == 0
    assert "2 of 3 shards are already computed and kept; computing the other 1" in capsys.readouterr().err
    from medxfer.features import FeatureSet

    fs = FeatureSet.load(tmp_path / "f")
    assert len(fs.skipped) == 1 and not [p for p in fs.dataset.problems if p.kind == "unreadable_image"]


def test_threads_option_is_checked_and_sizes_the_pools(monkeypatch, capsys):
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    from medxfer.cores import THREAD_VARIABLES

    with pytest.raises(SystemExit):
        main(["--threads", "0", "backbones"])
    assert "--threads: must be an int in the range [1, inf); got '0'" in capsys.readouterr().err
    for var in THREAD_VARIABLES:  # restored after the test, as the pools below
        monkeypatch.setenv(var, "2")
    before = torch.get_num_threads()
    try:
        with threadpool_limits(limits=None):  # restores the BLAS pools on exit
            assert main(["backbones", "--threads", "1", "--json"]) == 0
            assert torch.get_num_threads() == 1
            assert all(p["num_threads"] == 1 for p in threadpool_info())
    finally:
        torch.set_num_threads(before)


def test_usable_cores_reads_the_cgroup_quota(tmp_path, monkeypatch):
    from medxfer import cores

    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cores.cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cores.cgroup_cpu_limit(tmp_path) is None
    monkeypatch.setattr(cores, "cgroup_cpu_limit", lambda root="/sys/fs/cgroup": 0.5)
    assert cores.usable_cores() == 1


def test_importing_medxfer_asks_openmp_to_sleep_unless_told_otherwise():
    import os
    import subprocess
    import sys

    code = "import os, medxfer; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = lambda e: subprocess.run([sys.executable, "-c", code], env=e, capture_output=True,
                                   text=True, check=True).stdout.strip()
    assert run(env) == "PASSIVE"
    assert run(env | {"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"


def test_thresholds_that_decide_nothing_are_named_in_the_report(tiny_trained, tmp_path):
    from medxfer.features import FeatureSet
    from medxfer.model_io import TrainedModel
    from medxfer.pipeline import evaluate_model

    model = TrainedModel.load(tiny_trained / "m")
    model.thresholds = np.zeros(len(model.label_names))  # every image above: specificity 0
    m = evaluate_model(model, FeatureSet.load(tiny_trained / "f"), tmp_path / "r", n_boot=10,
                       allow_training_patients=True)
    here = m["degenerate_thresholds_here"]
    assert here and all(v["specificity"] == 0 for v in here.values())
    text = (tmp_path / "r" / "summary.md").read_text()
    assert "## Thresholds that decide nothing" in text and "specificity 0.00 on these images" in text
    assert "Thresholds: per finding, the threshold that maximised F1" in text
    assert m.get("threshold_rule") is None  # the report's copy: metrics.json has it
    import json as _json

    doc = _json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert doc["metrics"]["threshold_rule"].startswith("per finding")


def test_an_interrupted_study_folder_is_resumed_not_refused(tmp_path):
    from medxfer.cli import check_out

    run = tmp_path / "run"
    (run / "shift" / "parts").mkdir(parents=True)  # killed before index.html was written
    assert check_out("study", run) == run
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "other.txt").write_text("")
    from medxfer.cli import UsageError

    with pytest.raises(UsageError, match="is a folder of other files, not a medxfer study folder"):
        check_out("study", tmp_path / "x")
