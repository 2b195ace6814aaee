"""The paper's studies on a tiny real dataset (bundled images, the tiny test backbone): each
table's structure and one property that must hold."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from medxfer.backbones import create_backbone
from medxfer.cli import main
from medxfer.corruptions import CORRUPTIONS, Corruption, RandomCorruption, corrupt
from medxfer.data import read_chestxray14
from medxfer.errors import MedxferError
from medxfer.experiments import fold_predictions
from medxfer.features import FeatureSet, extract_features
from medxfer.settings import StudySettings
from medxfer.splits import patient_kfold
from medxfer.studies import StudyContext, run_study
from medxfer.studies.common import finish
from medxfer.studies.registry import (all_studies, get_study, register_study, study_names,
                                     unregister_study)
from medxfer.studies.compare import BASELINES, compare_models
from medxfer.studies.efficiency import parse_fractions, run_efficiency, subsample_patients
from medxfer.studies.imbalance import LEVELS, subsample_to_ratio
from medxfer.studies.sensitivity import CODE_GRID, sensitivity_grid
from medxfer.studies.shift import parse_shifts, shift_split

from .conftest import write_cxr14_folder


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, sample_root):
    """A features folder of 90 bundled images (both views, both sexes), tiny backbone."""
    t = pd.read_csv(sample_root / "Data_Entry_2017_v2020.csv.gz")
    ids = sorted(t["Image Index"])[:90]
    root = write_cxr14_folder(tmp_path_factory.mktemp("data") / "cxr", ids, sample_root)
    folder = tmp_path_factory.mktemp("f") / "f"
    extract_features(read_chestxray14(root), create_backbone("tiny_random_test"), folder,
                     num_workers=0, progress=False)
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return FeatureSet.load(tiny_dir)


def _ctx(fs, out, **kw):
    return StudyContext(fs, out, StudySettings(**({"folds": 3, "n_boot": 20, "jobs": 1} | kw)))


# ---------------------------------------------------------------------------- corruptions

def test_corruptions_are_identity_at_0_deterministic_and_grow_with_severity():
    g = np.random.default_rng(0).random((256, 256)).astype(np.float32)
    g[64:192, 64:192] = 0.9  # some structure for blur and downsampling to remove
    for name in CORRUPTIONS:
        assert corrupt(g, name, 0) is g
        a, b = corrupt(g, name, 3, key="x.png"), corrupt(g, name, 3, key="x.png")
        np.testing.assert_array_equal(a, b)
        assert a.shape == g.shape and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
        d1 = np.abs(corrupt(g, name, 1, key="x") - g).mean()
        d5 = np.abs(corrupt(g, name, 5, key="x") - g).mean()
        assert d5 > d1 > 0, name
    assert Corruption("blur", 0).as_dict() is None  # severity 0 is a clean extraction
    with pytest.raises(MedxferError, match="Did you mean 'blur'"):
        Corruption("blurr", 2)
    with pytest.raises(MedxferError, match="from 0 \\(clean\\) to 5"):
        Corruption("blur", 6)
    aug = RandomCorruption(p=1.0, generator=np.random.default_rng(0))
    out = aug(torch.from_numpy(g)[None])
    assert out.shape == (1, 256, 256) and not torch.equal(out, torch.from_numpy(g)[None])


# ---------------------------------------------------------------------------- compare

@pytest.mark.slow
def test_compare_table_paired_to_best_baseline_and_resume(tiny, tmp_path):
    ctx = _ctx(tiny, tmp_path)
    r = run_study("compare", ctx)["compare"]
    table = pd.read_csv(tmp_path / "compare" / "compare.csv")
    assert list(table["model"]) == list(compare_models())
    assert {"macro_auc", "macro_auc_lo", "macro_auc_hi", "macro_f1", "macro_ap"} <= set(table.columns)
    assert (table["macro_auc_lo"] <= table["macro_auc"]).all() and (table["macro_auc"] <= table["macro_auc_hi"]).all()
    paired = pd.read_csv(tmp_path / "compare" / "paired.csv")
    best = table[table["role"] == "baseline"].sort_values("macro_auc").iloc[-1]["model"]
    assert set(paired["model"]) == {"paper_method", "medxfer_train"} and (paired["best_baseline"] == best).all()
    assert set(table[table.role == "baseline"]["model"]) == set(BASELINES)
    for f in ("compare_auc.png", "compare_auc.csv", "compare.csv", "paired.md", "result.json"):
        assert (tmp_path / "compare" / f).is_file()
    assert "1. Method against baselines" in (tmp_path / "index.html").read_text()
    # A second run reads every (model, fold) unit back and gives the same table.
    again = run_study("compare", _ctx(tiny, tmp_path))["compare"]
    assert [x["macro_auc"] for x in again["rows"]] == [x["macro_auc"] for x in r["rows"]]
    assert len(list((tmp_path / "compare" / "parts").glob("*/*.npz"))) == 3 * len(compare_models())


@pytest.mark.slow
def test_compare_in_parallel_gives_the_serial_tables(tiny, tmp_path):
    """--jobs 2: the (model, fold) units run in two worker processes, each with its share of
    the cores; the tables are the serial run's, value for value."""
    serial = run_study("compare", _ctx(tiny, tmp_path / "serial", jobs=1))["compare"]
    parallel = run_study("compare", _ctx(tiny, tmp_path / "parallel", jobs=2))["compare"]
    for name in ("compare.csv", "paired.csv"):
        a = pd.read_csv(tmp_path / "serial" / "compare" / name)
        b = pd.read_csv(tmp_path / "parallel" / "compare" / name)
        pd.testing.assert_frame_equal(a.drop(columns=["seconds"], errors="ignore"),
                                      b.drop(columns=["seconds"], errors="ignore"))
    assert [x["macro_auc"] for x in parallel["rows"]] == [x["macro_auc"] for x in serial["rows"]]


@pytest.mark.slow
def test_a_cached_unit_is_reused_only_for_the_same_rows_and_patients(tiny, tmp_path):
    """A fold whose rows changed (or a table whose patients changed) never gets the
    predictions of another fold's model back."""
    from medxfer.studies.common import Ledger

    models = {"logistic_regression": compare_models()["logistic_regression"]}
    g = tiny.dataset.patient_ids
    ledger = Ledger(tmp_path, {"x": 1})
    fold_predictions(models, tiny.X, tiny.Y, g, patient_kfold(g, 3, Y=tiny.Y, seed=0), store=ledger)
    fold_predictions(models, tiny.X, tiny.Y, g, patient_kfold(g, 3, Y=tiny.Y, seed=0), store=ledger)
    assert ledger.hits == 3
    fold_predictions(models, tiny.X, tiny.Y, g, patient_kfold(g, 3, Y=tiny.Y, seed=1), store=ledger)
    assert ledger.hits == 3  # other folds: nothing reused
    ctx = _ctx(tiny, tmp_path)
    before = ctx.fingerprint("folds")
    relabelled = tiny.subset(np.arange(len(tiny)))
    relabelled.dataset.table["patient_id"] = relabelled.dataset.table["patient_id"].iloc[::-1].to_numpy()
    assert _ctx(relabelled, tmp_path).fingerprint("folds") != before
    (tmp_path / "parts").mkdir(exist_ok=True)
    torn = ledger.folder / "torn.npz"
    torn.write_bytes(b"PK\x03\x04junk")
    assert ledger.get("torn") is None  # recomputed, not a crash


# ---------------------------------------------------------------------------- imbalance

def test_subsample_to_ratio_reaches_the_ratio_or_says_capped():
    rng = np.random.default_rng(0)
    Y = np.zeros((200, 3), dtype=np.float32)
    Y[:40, 0] = 1      # 40:160, enough negatives for 1:1 and 1:4
    Y[:2, 1] = 1       # 2:198
    Y[0, 2] = np.nan   # no positive at all
    m, rec = subsample_to_ratio(Y, 1, rng)
    assert np.nansum(m[:, 0] == 1) == np.nansum(m[:, 0] == 0) == 40
    assert rec[2]["capped"] and not rec[0]["capped"]
    m, rec = subsample_to_ratio(Y, 100, rng)
    assert rec[0]["positives_kept"] == 2 and rec[0]["negatives_kept"] == 160  # positives drawn down
    assert rec[1]["positives_kept"] == 2 and rec[1]["negatives_kept"] == 198 and not rec[1]["capped"]
    m, rec = subsample_to_ratio(Y[:50], 100, rng)  # 10 negatives cannot carry one positive at 1:100
    assert rec[1]["positives_kept"] == 1 and rec[1]["capped"]


@pytest.mark.slow
def test_imbalance_study_balanced_level_has_equal_positives_and_negatives(tiny, tmp_path):
    run_study("imbalance", _ctx(tiny, tmp_path))
    levels = pd.read_csv(tmp_path / "imbalance" / "levels.csv")
    bal = levels[(levels["level"] == "Balanced") & ~levels["capped"]]
    assert len(bal) and (bal["positives_kept"] == bal["negatives_kept"]).all()
    table = pd.read_csv(tmp_path / "imbalance" / "imbalance.csv")
    assert list(dict.fromkeys(table["level"])) == list(LEVELS)
    assert set(table["imbalance"]) == {"none", "pos_weight", "class_balanced", "focal"}
    assert {"macro_f1_at_0.5_lo", "macro_f1_fold_thresholds_hi", "macro_auc_hi",
            "minority_recall_at_0.5"} <= set(table.columns)
    # F1 at thresholds chosen on the training part is its own number, and each row says how
    # its thresholds were chosen
    assert (table["macro_f1_fold_thresholds"] != table["macro_f1_at_0.5"]).any()
    assert table["fold_thresholds"].str.startswith("F1-best on 3 inner folds").all()
    assert (tmp_path / "imbalance" / "imbalance_macro_f1_fold_thresholds.csv").is_file()


# ---------------------------------------------------------------------------- sensitivity

@pytest.mark.slow
def test_sensitivity_grid_and_study(tiny, tmp_path):
    center = {"bottleneck_dim": 8, "l1": 0.0, "l2": 0.0, "alpha": 0.03, "lr": 1e-3}
    grid = sensitivity_grid(center)
    keys = [tuple(sorted(g.items())) for g in grid]
    assert len(keys) == len(set(keys)) and center in grid
    run_study("sensitivity", _ctx(tiny, tmp_path, folds=2))
    table = pd.read_csv(tmp_path / "sensitivity" / "sensitivity.csv")
    lbfgs = [g for g in grid if g["lr"] == center["lr"]]
    assert len(table) == len(grid) + len(lbfgs)
    # the shipped trainer's curve has every setting but a learning rate; the grid trainer's has all
    assert (table["trainer"] == "lbfgs").sum() == len(lbfgs) and table[table.trainer == "lbfgs"]["lr"].isna().all()
    for name in ("sensitivity_l1_l2", "sensitivity_l1_l2_adamw_es"):
        assert len(pd.read_csv(tmp_path / "sensitivity" / f"{name}.csv")) == len(CODE_GRID) ** 2
    sweeps = pd.read_csv(tmp_path / "sensitivity" / "sensitivity_sweeps.csv")
    assert set(sweeps["parameter"]) == {"l1", "l2", "bottleneck_dim", "alpha", "lr"}
    assert set(sweeps[sweeps.parameter == "lr"]["trainer"]) == {"adamw_es"}
    assert set(sweeps[sweeps.parameter == "alpha"]["trainer"]) == {"lbfgs", "adamw_es"}


# ---------------------------------------------------------------------------- disturbance

@pytest.mark.slow
def test_disturbance_severity_0_equals_the_clean_result(tiny, tmp_path):
    r = run_study("disturbance", _ctx(tiny, tmp_path, corruptions="blur,jpeg"))["disturbance"]
    assert r["severity0"]["macro_auc"] == pytest.approx(r["clean"]["macro_auc"], abs=1e-3)
    table = pd.read_csv(tmp_path / "disturbance" / "disturbance.csv")
    assert set(table["corruption"]) == {"clean (cached features)", "blur", "jpeg"}
    assert sorted(table[table.corruption == "jpeg"]["severity"]) == [0, 1, 2, 3, 4, 5]
    (folder,) = (tmp_path / "disturbance" / "parts").glob("*/features/jpeg-5")
    man = json.loads((folder / "manifest.json").read_text())
    assert man["corruption"]["name"] == "jpeg" and man["corruption"]["parameter"] == 8
    with pytest.raises(MedxferError, match="Unknown corruption 'fog'"):
        run_study("disturbance", _ctx(tiny, tmp_path / "x", corruptions="fog"))


# ---------------------------------------------------------------------------- shift

@pytest.mark.slow
def test_shift_never_trains_on_the_test_group_or_its_patients(tiny, tmp_path):
    table, groups, Y = tiny.dataset.table, tiny.dataset.patient_ids, tiny.Y
    for column, a, b in parse_shifts("view:PA:AP,sex:M:F,age:older:younger"):
        sp = shift_split(table, groups, Y, column, a, b, test_fraction=0.3, seed=0)
        tr, ti, to = sp["train"], sp["test_in"], sp["test_out"]
        assert len(ti) == len(to) > 0
        assert not set(groups[tr]) & (set(groups[ti]) | set(groups[to]))
        if column != "age":
            assert (table[column].to_numpy()[tr] == a).all() and (table[column].to_numpy()[to] == b).all()
    with pytest.raises(MedxferError, match="COLUMN:A:B"):
        parse_shifts("view:PA")
    r = run_study("shift", _ctx(tiny, tmp_path, shifts="sex:M:F,site:X:Y"))["shift"]
    assert [x["shift"] for x in r["rows"]] == ["sex: M -> F"]
    assert "not in the dataset table" in r["skipped"][0]["reason"]
    out = pd.read_csv(tmp_path / "shift" / "shift.csv")
    assert {"in_distribution_auc", "shifted_auc", "gap", "gap_lo"} <= set(out.columns)


@pytest.mark.slow
def test_shift_and_imbalance_in_parallel_give_the_serial_tables(tiny, tmp_path):
    """Their units (a shift pair; a level x option x fold) run in two worker processes
    (medxfer.studies.common.cached_units): the tables are the serial run's, value for value."""
    kw = {"shifts": "sex:M:F,view:PA:AP"}
    for study, table in (("shift", "shift.csv"), ("imbalance", "imbalance.csv")):
        tables = {}
        for jobs in (1, 2):
            out = tmp_path / f"{study}{jobs}"
            run_study(study, _ctx(tiny, out, jobs=jobs, folds=2, **kw))
            tables[jobs] = pd.read_csv(out / study / table)
            assert len(list((out / study / "parts").glob("*/*.npz"))) > 1  # units kept
        pd.testing.assert_frame_equal(tables[1], tables[2])


# ---------------------------------------------------------------------------- efficiency

@pytest.mark.slow
def test_learning_curve_full_point_equals_a_plain_run(tiny, tmp_path):
    ctx = _ctx(tiny, tmp_path, fractions="0.5,1.0", draws=2, folds=2)
    models = {m: compare_models()[m] for m in ("logistic_regression", "linear_head")}
    r = run_efficiency(ctx, models)
    plain = fold_predictions(models, tiny.X, tiny.Y, tiny.dataset.patient_ids,
                             patient_kfold(tiny.dataset.patient_ids, 2, Y=tiny.Y, seed=0), seed=0)
    for m in models:
        np.testing.assert_allclose(r["full_oof"][m], plain["oof"][m], atol=1e-6)
    table = pd.read_csv(tmp_path / "efficiency" / "efficiency.csv")
    assert list(table["draws"]) == [2, 1, 2, 1]
    half = table[table.fraction == 0.5]["train_images"].iloc[0]
    assert half < table[table.fraction == 1.0]["train_images"].iloc[0]
    rng = np.random.default_rng(0)
    tr = np.arange(len(tiny))
    sub = subsample_patients(tr, tiny.dataset.patient_ids, 0.25, rng)
    assert set(tiny.dataset.patient_ids[sub]) < set(tiny.dataset.patient_ids)
    with pytest.raises(MedxferError, match="in \\(0, 1\\]"):
        parse_fractions("0,0.5")


def test_efficiency_reads_compares_full_fold_units_back(tiny, tmp_path):
    """In one run, the learning curve's 100% point is compare's models on the same folds:
    read from the run's unit cache, not fitted again, and the same numbers."""
    from medxfer.studies.compare import run_compare

    ctx = _ctx(tiny, tmp_path, fractions="1.0", draws=1, folds=2, jobs=1)
    models = {m: compare_models()[m] for m in ("logistic_regression", "linear_head")}
    comp = run_compare(ctx, models)
    assert ctx.units.hits == 0
    eff = run_efficiency(ctx, models)
    assert ctx.units.hits == 2 * len(models)
    for m in models:
        a = [x["macro_auc"] for x in comp["rows"] if x["model"] == m][0]
        b = [x["macro_auc"] for x in eff["rows"] if x["model"] == m][0]
        assert a == pytest.approx(b, abs=1e-12)
    # another seed is another model: nothing of this run's cache is reused
    other = _ctx(tiny, tmp_path, fractions="1.0", draws=1, folds=2, jobs=1, seed=1)
    run_efficiency(other, models)
    assert other.units.hits == 0


# ---------------------------------------------------------------------------- registry

def test_study_names_read_without_importing_agree_with_the_registry():
    assert study_names() == [s.name for s in all_studies()]
    assert study_names()[:2] == ["compare", "imbalance"]  # the paper's order, not the files'
    from medxfer.cli import build_parser

    study = build_parser().commands["study"]
    (name,) = [a for a in study._actions if a.dest == "name"]
    assert name.choices == study_names() + ["all"]
    with pytest.raises(MedxferError, match="Unknown study 'compar'. Did you mean 'compare'"):
        get_study("compar")


def test_a_registered_study_runs_and_is_listed_on_the_page(tiny, tmp_path):
    @register_study("tiny_check", title="7. A study registered by a test", order=7)
    def run_tiny_check(ctx):
        return finish(ctx, "tiny_check", {"tables": [], "images": len(ctx.features)}, 0.0)

    try:
        with pytest.raises(MedxferError, match="registered twice"):
            register_study("tiny_check", title="again", order=8)(lambda ctx: {})
        r = run_study("tiny_check", _ctx(tiny, tmp_path))
        assert r["tiny_check"]["images"] == len(tiny)
        assert "7. A study registered by a test" in (tmp_path / "index.html").read_text()
        assert all_studies()[-1].name == "tiny_check"
    finally:
        unregister_study("tiny_check")
    assert "tiny_check" not in [s.name for s in all_studies()]


# ---------------------------------------------------------------------------- command line

@pytest.mark.slow
def test_study_cli_runs_writes_the_page_and_refuses_bad_options(tiny, tiny_dir, tmp_path, capsys):
    folder = tiny_dir
    assert main(["-q", "study", "shift", str(folder), "--out", str(tmp_path / "s"), "--n-boot", "10",
                 "--shifts", "sex:M:F"]) == 0
    out = capsys.readouterr().out
    assert "shift:" in out and "index.html" in out
    page = (tmp_path / "s" / "index.html").read_text()
    assert "5. Distribution shift" in page and tiny.manifest["dataset_fingerprint"] in page
    assert main(["-q", "study", "disturbance", str(folder), "--out", str(tmp_path / "s"),
                 "--corruptions", "fog"]) == 2
    assert "Unknown corruption 'fog'" in capsys.readouterr().err
    assert main(["-q", "study", "efficiency", str(folder), "--out", str(tmp_path / "s"),
                 "--fractions", "2"]) == 2
    assert main(["-q", "study", "shift", str(folder), "--out", str(tmp_path / "s"), "--folds", "1"]) == 2
    assert "--folds must be" in capsys.readouterr().err



def test_a_study_counts_the_images_extraction_could_not_decode(tiny, tmp_path, caplog):
    from dataclasses import replace

    from medxfer.data.contract import Problem
    from medxfer.features import UNREADABLE

    lost = replace(tiny, skipped=[Problem(UNREADABLE, "images/bad.png", "not a PNG")])
    ctx = _ctx(lost, tmp_path)
    with caplog.at_level("WARNING", logger="medxfer.studies"):
        r = finish(ctx, "probe", {"rows": []}, 1.0)
    assert r["images_skipped_at_extraction"] == 1 and r["images_used"] == len(tiny)
    assert "1 image(s) of the dataset could not be decoded" in caplog.text
    assert finish(_ctx(tiny, tmp_path / "b"), "probe", {}, 1.0)["images_skipped_at_extraction"] == 0


def test_table_numbers_print_three_decimals_or_three_significant_digits():
    from medxfer.studies.common import _fmt

    assert _fmt(0.65432) == "0.654" and _fmt(-0.0062) == "-0.006"
    assert _fmt(0.000996391) == "0.000996" and _fmt(1e-5) == "1e-05" and _fmt(0.0) == "0.000"
    assert _fmt(None) == "—" and _fmt(float("nan")) == "—" and _fmt(3) == "3"
