"""One source of defaults: the estimator, the commands and their help resolve to the same
settings, and a bad value is refused in one line."""

from dataclasses import asdict, fields

import pytest

from medxfer.cli import build_parser, main, train_settings
from medxfer.head import BottleneckClassifier
from medxfer.settings import (ExtractSettings, FinetuneSettings, HeadSettings, PackageSettings,
                              RunSettings, ServeSettings, StudySettings, TuneSettings)


def test_estimator_and_train_command_resolve_to_the_same_settings():
    args = build_parser().parse_args(["train", "FEATS", "--out", "M"])
    head, packaging = train_settings(args)
    assert asdict(head) == BottleneckClassifier().get_params()
    assert asdict(head) == asdict(HeadSettings())
    assert packaging == PackageSettings()


@pytest.mark.parametrize("command,cls", [("train", HeadSettings), ("train", PackageSettings),
                                         ("extract", ExtractSettings), ("tune", TuneSettings),
                                         ("finetune", FinetuneSettings), ("serve", ServeSettings),
                                         ("study", StudySettings), ("cv", RunSettings)])
def test_help_shows_every_option_with_its_default(command, cls, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in fields(cls):
        if f.name == "task" or (command == "train" and f.name == "refit"):  # train refuses refit
            continue
        opt = f.metadata.get("cli") or "--" + f.name.replace("_", "-")
        if f.metadata.get("cli") is False:  # set by another table's option (--seed)
            continue
        assert opt in text, opt
    assert text.count("(default:") >= len([f for f in fields(cls) if f.name != "task"
                                          and f.metadata.get("cli") is not False]) - 1


@pytest.mark.parametrize("argv,needle", [
    (["train", "F", "--out", "M", "--l1", "-1"], "--l1 must be a float in the range [0.0, 10000.0]; got -1.0"),
    (["train", "F", "--out", "M", "--cb-beta", "1.0"], "--cb-beta must be a float in the range [0.0, 1.0); got 1.0"),
    (["train", "F", "--out", "M", "--epochs", "0"], "--epochs must be an int in the range [1, inf); got 0"),
    (["train", "F", "--out", "M", "--validation-fraction", "1.5"], "--validation-fraction"),
    (["extract", "D", "--out", "F", "--batch-size", "0"], "--batch-size must be an int"),
    (["finetune", "D", "--out", "M", "--lr-backbone", "0"], "--lr-backbone must be a float"),
    (["cv", "F", "--out", "O", "--folds", "1"], "--folds must be an int in the range [2, inf); got 1"),
    (["evaluate", "M", "D", "--out", "O", "--n-boot", "-5"], "--n-boot must be an int"),
])
def test_bad_values_exit_2_with_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
