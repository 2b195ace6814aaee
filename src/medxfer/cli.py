"""Command line: a thin layer over the Python API. Every command has --help.

Options that tune a stage are generated from the settings tables of :mod:`medxfer.settings`
(name, default, one-line description, allowed range), so the command line, the TOML config
file and the Python estimators share one set of defaults. A bad value, on the command line
or in the config file, exits 2 with one line naming the option, the value and the range.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

from . import __version__
from .errors import MedxferError
from .settings import (DEFAULT_BACKBONE, FEATURES_FOLDER_MARKS, Choice, EvalSettings, ExtractSettings,
                       FinetuneSettings, HeadSettings, Interval, Kind, PackageSettings, RunSettings,
                       SelectionSettings, ServeSettings, StudySettings, TuneSettings,
                       DicomNodeSettings)

log = logging.getLogger("medxfer")


class UsageError(MedxferError):
    """A bad option value: exit 2 with one line."""


class NothingDone(MedxferError):
    """A command that ran but had nothing to work on: exit 1 with one line."""


# ---------------------------------------------------------------------------- settings <-> options

def _option(f) -> str:
    return f.metadata.get("cli") or "--" + f.name.replace("_", "-")


def _fmt_default(v) -> str:
    return "none" if v is None else str(v)


def add_settings(parser, cls, *, only=None, skip=(), title: str | None = None) -> None:
    """One option per field of settings class ``cls`` (dest = field name)."""
    g = parser.add_argument_group(title or (cls.__doc__ or cls.__name__).split("\n")[0])
    for f in fields(cls):
        if f.name in skip or (only is not None and f.name not in only) or f.metadata.get("cli") is False:
            continue
        check, default = f.metadata.get("check"), f.default
        help_ = f"{f.metadata['help']} (default: {_fmt_default(default)})".replace("%", "%%")
        kw: dict = {"dest": f.name, "default": default, "help": help_}
        if isinstance(check, Kind) and check.type is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif isinstance(check, Choice):
            kw["choices"] = list(check.options)
        elif isinstance(check, Interval):
            kw["type"] = int if check.kind == "int" else float
            kw["metavar"] = "N" if check.kind == "int" else "X"
        g.add_argument(_option(f), **kw)


def settings_from_args(args, cls, *, only=None):
    """The settings object ``cls`` from parsed options; a value outside its range is a
    UsageError naming the option. Fields not on this command keep their defaults."""
    values = {}
    for f in fields(cls):
        if (only is not None and f.name not in only) or not hasattr(args, f.name):
            continue
        v = getattr(args, f.name)
        check = f.metadata.get("check")
        if isinstance(check, Interval) and check.none_ok and check.low >= 1 and v == 0:
            v = None  # 0 on the command line means "none" (no bottleneck, no step cap...)
        if check is not None and not check.accepts(v):
            raise UsageError(f"{_option(f)} must be {check.describe()}; got {v!r}")
        values[f.name] = v
    return cls(**values)


# ---------------------------------------------------------------------------- parser

class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that records the dest of every option it gets (its own, its
    groups' and its parents'), so the config file can be checked against them, and keeps
    its sub-commands by name."""

    def __init__(self, *args, parents=(), **kw):
        #: config key -> dest: each option's dest and its long names without dashes
        self.dests: dict[str, str] = {k: v for p in parents for k, v in getattr(p, "dests", {}).items()}
        self.commands: dict[str, _Parser] = {}
        super().__init__(*args, parents=list(parents), **kw)
        # "-inf", "-1e-5" are values, not options: the range check then names them
        self._negative_number_matcher = re.compile(
            r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)

    def _record(self, action):
        self.dests[action.dest] = action.dest
        for opt in action.option_strings:
            if opt.startswith("--"):
                self.dests[opt[2:].replace("-", "_")] = action.dest
        return action

    def add_argument(self, *args, **kw):
        return self._record(super().add_argument(*args, **kw))

    def add_argument_group(self, *args, **kw):
        group = super().add_argument_group(*args, **kw)
        add = group.add_argument

        group.add_argument = lambda *a, **k: self._record(add(*a, **k))
        return group


#: The uncertain-label policies (medxfer.data.UNCERTAIN_POLICIES, repeated here so that
#: parsing does not import the readers).
UNCERTAIN_CHOICES = ("ignore", "zeros", "ones")


def _data_options() -> argparse.ArgumentParser:
    p = _Parser(add_help=False)
    g = p.add_argument_group("CSV datasets (DATA is a .csv of image paths and labels)")
    g.add_argument("--path-column", default=None,
                   help="image path column (default: path, image or filename)")
    g.add_argument("--patient-column", default=None,
                   help="patient id column (default: patient_id or patient)")
    g.add_argument("--labels-column", default=None,
                   help="one column of delimited finding names instead of one 0/1 column per "
                        "label (default: none)")
    g.add_argument("--separator", default="|", help="delimiter of --labels-column (default: |)")
    g.add_argument("--limit", type=int, default=None, help="use only the first N images (default: all)")
    g = p.add_argument_group("labels of sources that mark some as uncertain (CheXpert, MIMIC-CXR)")
    g.add_argument("--uncertain", default=None, choices=UNCERTAIN_CHOICES,
                   help="uncertain (-1) labels: ignore = unknown, never negative; zeros; ones "
                        "(default: ignore; refused for formats without uncertain labels)")
    return p


def _json_option() -> argparse.ArgumentParser:
    p = _Parser(add_help=False)
    p.add_argument("--json", action="store_true", help="print the result as JSON (default: text)")
    return p


def _seed_option() -> argparse.ArgumentParser:
    p = _Parser(add_help=False)
    add_settings(p, RunSettings, title="randomness")
    return p


def _boot_option() -> argparse.ArgumentParser:
    p = _Parser(add_help=False)
    add_settings(p, EvalSettings, only=("n_boot",), title="confidence intervals")
    return p


#: Fields of HeadSettings that fine-tuning takes from the head (the rest are its own).
FINETUNE_HEAD = ("bottleneck_dim", "l1", "l2", "alpha", "lr", "weight_decay", "imbalance",
                 "focal_gamma", "cb_beta", "validation_fraction")


#: Fields of HeadSettings that the studies' fixed-point model (imbalance, sensitivity) takes.
STUDY_HEAD = ("bottleneck_dim", "l1", "l2", "alpha", "lr")


#: The settings each command reads, resolved and range-checked before the command runs.
COMMAND_SETTINGS = {
    "demo": [(EvalSettings, ("n_boot",)), (RunSettings, None)],
    "inspect": [(ExtractSettings, ("max_pixels", "workers"))],
    "serve": [(ServeSettings, None), (ExtractSettings, ("max_pixels", "engine", "device"))],
    "dicom-node": [(DicomNodeSettings, None), (ExtractSettings, ("max_pixels", "engine", "device"))],
    "extract": [(ExtractSettings, None)],
    "train": [(HeadSettings, None), (SelectionSettings, None), (PackageSettings, None),
              (RunSettings, None)],
    "tune": [(TuneSettings, None), (PackageSettings, None), (RunSettings, None)],
    "finetune": [(FinetuneSettings, None), (HeadSettings, FINETUNE_HEAD), (PackageSettings, None),
                 (RunSettings, None)],
    "cv": [(EvalSettings, None), (RunSettings, None)],
    "evaluate": [(ExtractSettings, ("batch_size", "workers", "engine", "device")),
                 (EvalSettings, ("n_boot",)), (RunSettings, None)],
    "predict": [(ExtractSettings, ("engine", "device"))],
    "study": [(StudySettings, None), (ExtractSettings, None), (HeadSettings, STUDY_HEAD),
              (RunSettings, None)],
}

#: Fields that take the one --seed (RunSettings.seed) instead of an option of their own.
SEEDED = {HeadSettings: "random_state", StudySettings: "seed"}


def resolve_settings(args) -> dict:
    """{settings class: object} for the parsed command; UsageError on a bad value. The one
    --seed is copied into the tables that carry a seed of their own (SEEDED)."""
    from dataclasses import replace

    out = {cls: settings_from_args(args, cls, only=only)
           for cls, only in COMMAND_SETTINGS.get(args.command, [])}
    x = out.get(ExtractSettings)
    if x is not None and x.engine != "auto":  # engines are a registry (medxfer.engine)
        from .engine import engine_names

        if x.engine not in engine_names():
            raise UsageError(f"--engine must be one of auto, {', '.join(engine_names())}; "
                             f"got {x.engine!r}")
    if RunSettings in out:
        seed = out[RunSettings].seed
        for cls, name in SEEDED.items():
            if cls in out:
                out[cls] = replace(out[cls], **{name: seed})
    return out


_DEBUG_HELP = "on an error, print the Python traceback too (default: one line)"
_THREADS_HELP = ("threads of torch, OpenMP and BLAS (default: the cores this process may use: "
                 "CPU affinity and cgroup quota)")


def _threads(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an int in the range [1, inf); got {text!r}")
    return n


def build_parser() -> _Parser:
    ap = _Parser(prog="medxfer", description=(
        "Transfer learning for chest radiographs: frozen ImageNet features, a regularized "
        "bottleneck model, and evaluation with patient-level confidence intervals."))
    ap.add_argument("--version", action="version", version=f"medxfer {__version__}")
    ap.add_argument("--config", default=None, metavar="FILE.toml",
                    help="defaults per command from a TOML file, e.g. [train] l1 = 1e-4; options "
                         "given on the command line still win (default: none)")
    ap.add_argument("-q", "--quiet", action="store_true",
                    help="no progress bars or info lines (default: shown on a terminal)")
    ap.add_argument("--threads", type=_threads, default=None, metavar="N", help=_THREADS_HELP)
    ap.add_argument("--debug", action="store_true", default=False, help=_DEBUG_HELP)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    data, js, seed, boot = _data_options(), _json_option(), _seed_option(), _boot_option()

    def command(name, help_, description=None, parents=()):
        ap.commands[name] = p = sub.add_parser(name, help=help_, description=description or help_,
                                               parents=list(parents))
        # also after the command name; SUPPRESS keeps a value given before it
        p.add_argument("--threads", type=_threads, default=argparse.SUPPRESS, metavar="N",
                       help=_THREADS_HELP)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
        return p

    p = command("demo", "run the main job on the bundled real ChestX-ray14 sample",
                "Extract features with a pretrained frozen backbone, train the bottleneck model on "
                "a patient-wise training part, evaluate it beside a tuned logistic regression on "
                "held-out patients, and write a report folder.", [seed, boot])
    p.add_argument("--out", default="medxfer-demo", help="output folder (default: medxfer-demo)")
    p.add_argument("--data", default=None,
                   help="a ChestX-ray14 folder instead of the bundled sample (default: bundled)")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE,
                   help=f"backbone name (default: {DEFAULT_BACKBONE})")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images (default: all)")

    p = command("inspect", "counts per finding, patients, views, age, sex, problems",
                parents=[data, js])
    p.add_argument("data", help="ChestX-ray14 folder, CSV file, class folder or DICOM folder")
    p.add_argument("--check-images", action="store_true",
                   help="also decode every image (in parallel) and name each unreadable, "
                        "oversized, unusual-mode, bad-bit-depth or duplicate one (default: off)")
    add_settings(p, ExtractSettings, only=("max_pixels", "workers"), title="image checks")

    command("backbones", "list backbones and whether their weights are here", parents=[js])

    p = command("extract", "compute backbone features for a dataset (resumable)", parents=[data])
    p.add_argument("data", help="ChestX-ray14 folder, CSV file, class folder or DICOM folder")
    p.add_argument("--out", required=True, help="features folder to write")
    p.add_argument("--overwrite", action="store_true",
                   help="recompute when the folder holds features made differently (default: refuse)")
    add_settings(p, ExtractSettings, title="extraction")

    p = command("train", "train the bottleneck model on a features folder", parents=[seed, js])
    p.add_argument("features", help="features folder from `medxfer extract`")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the model already in --out (default: refuse)")
    modes = {}
    for name, _, mode in TRAIN_MODES:
        modes.setdefault(mode, []).append(name)
    by_mode = {n for names in modes.values() for n in names}
    add_settings(p, HeadSettings, skip=("task", "refit", *by_mode),  # refit: train refuses it
                 title="the bottleneck model (under the default --select, --bottleneck-dim and "
                       "--alpha restrict the grid to the values given; their defaults apply with --no-select)")
    for mode in ("--imbalance focal", "--imbalance class_balanced"):
        add_settings(p, HeadSettings, only=modes[mode], title=f"{mode} only")
    add_settings(p, SelectionSettings, only=("select", *modes["--select"]),
                 title="--select (the default): width and alpha chosen by inner patient-wise CV")
    add_settings(p, HeadSettings, only=modes["--no-select"],
                 title="--no-select only: the head settings as given, calibrated on a "
                       "validation part")
    add_settings(p, HeadSettings, only=modes["--solver lbfgs"],
                 title="--solver lbfgs only (the default solver)")
    add_settings(p, HeadSettings, only=modes["--solver adamw"], title="--solver adamw only")
    add_settings(p, PackageSettings, skip=modes["--threshold-method sensitivity"],
                 title="calibration and thresholds (fitted on the out-of-fold predictions under "
                       "--select, on the validation part under --no-select)")
    add_settings(p, PackageSettings, only=modes["--threshold-method sensitivity"],
                 title="--threshold-method sensitivity only")

    p = command("tune", "train a grid of settings in one pass, keep the best",
                "Every setting of a grid (k, lambda1=lambda2, alpha, imbalance) trained at once "
                "over the cached features; the best by patient-wise validation macro AUC is "
                "calibrated, thresholded and saved.", [seed, js])
    p.add_argument("features", help="features folder")
    p.add_argument("--out", required=True, help="model folder to write (with tune.json)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the model already in --out (default: refuse)")
    p.add_argument("--grid", default=None,
                   help="JSON file with a list of parameter dicts (default: the built-in grid)")
    add_settings(p, TuneSettings, title="grid training")
    add_settings(p, PackageSettings, title="calibration and thresholds (validation patients)")

    p = command("finetune", "fine-tune the last backbone blocks with the head, from images",
                "Partial fine-tuning: unfreeze the last N backbone blocks and train them end to "
                "end with the bottleneck head (lower backbone learning rate, light radiograph "
                "augmentation, early stopping on patient-wise validation). Uses the GPU when one "
                "is present.", [seed, data])
    p.add_argument("data", help="dataset (ChestX-ray14 folder or CSV)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the model already in --out (default: refuse)")
    add_settings(p, FinetuneSettings, title="fine-tuning")
    add_settings(p, HeadSettings, only=FINETUNE_HEAD, title="the bottleneck head")
    add_settings(p, PackageSettings, title="calibration and thresholds (validation patients)")

    p = command("cv", "patient-wise K-fold CV of the model beside its baselines",
                "Tuned logistic regression, linear head, the bottleneck chosen by inner CV with and "
                "without its code penalty, and what `medxfer train` deploys, each choosing its "
                "own settings inside every outer training part (nested); pooled out-of-fold "
                "metrics with patient-bootstrap CIs, per-fold spread, paired differences.",
                [seed, boot, js])
    p.add_argument("features", help="features folder")
    p.add_argument("--out", required=True, help="folder for cv.json, cv.md and the predictions")
    add_settings(p, EvalSettings, only=("folds",), title="folds")
    p.add_argument("--tune", action="store_true",
                   help="also the bottleneck chosen from a wider grid (default: off)")
    p.add_argument("--against", default=None, metavar="FEATURES2",
                   help="a second features folder of the same images: every model runs on both on "
                        "the same outer folds, and the paired patient-bootstrap difference "
                        "FEATURES2 - FEATURES is reported per model (cv_against.json)")
    p.add_argument("--models", default=None, metavar="A,B",
                   help="only these of the lineup (default: all of it)")

    p = command("study", "the paper's studies: compare, imbalance, sensitivity, disturbance, "
                "shift, efficiency (or all)",
                "Run one of the source paper's studies (or all) on a dataset or a features folder: "
                "tables with patient-bootstrap 95% CIs, figures with the CSV they plot, and "
                "index.html linking everything. Features are extracted once and cached in OUT; "
                "an interrupted run resumes.", [seed, data])
    from .studies.registry import ALL, study_names  # light: reads the study files, imports none

    p.add_argument("name", choices=[*study_names(), ALL], help="which study")
    p.add_argument("data", help="features folder from `medxfer extract`, or a dataset (ChestX-ray14 "
                                "folder, CSV...) to extract into OUT/features")
    p.add_argument("--out", required=True, help="run folder (reused: finished work is kept)")
    add_settings(p, StudySettings, title="the studies")
    add_settings(p, ExtractSettings, title="extraction (when DATA is a dataset)")
    add_settings(p, HeadSettings, only=STUDY_HEAD,
                 title="the fixed-point model of the imbalance and sensitivity studies")

    p = command("evaluate", "metrics with CIs and a report folder", parents=[seed, boot, js, data])
    p.add_argument("model", help="model folder from `medxfer train`")
    p.add_argument("data", help="features folder, or a dataset folder (extracted with the "
                                "model's own backbone and preprocessing)")
    p.add_argument("--out", required=True, help="report folder to write")
    p.add_argument("--allow-training-patients", action="store_true",
                   help="evaluate even when some images belong to patients the model was trained "
                        "on (default: refuse; the report's first line then says so)")
    add_settings(p, ExtractSettings, only=("batch_size", "workers", "engine", "device"),
                 title="extraction")

    p = command("export", "the whole model as one ONNX file (backbone, head, calibration)",
                "Write the model as one ONNX graph: input gray (batch, 1, S, S) in [0, 1] resized "
                "to S x S, output calibrated per-finding probabilities; label names, thresholds, "
                "input size, resize and decoding rules in its metadata. Checked against PyTorch "
                "on real sample images unless --no-check.")
    p.add_argument("model", help="model folder")
    p.add_argument("--onnx", required=True, metavar="FILE", help="ONNX file to write")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="run the file in onnxruntime on bundled sample images and compare with "
                        "PyTorch (default: on)")

    p = command("ledger", "check that a document's numbers are the ones in its result files",
                "A results ledger for Markdown: every number marked <!--@ FILE#PREFIX: KEY, ...--> "
                "must equal the value at that key of the JSON file (at the precision printed), "
                "every <!--table FILE--> block must be FILE verbatim, every <!--history DATE "
                "COMMIT--> region must say its date. --strict also refuses metric-like numbers "
                "(0.dd...) that nothing covers. `update` rewrites the table blocks and the marked "
                "numbers from their sources (reread the words around them). "
                "Exit 1 when a check fails.")
    p.add_argument("action", choices=("check", "update"), help="check the documents, or rewrite their tables and marked numbers")
    p.add_argument("documents", nargs="+", metavar="FILE", help="Markdown files")
    p.add_argument("--strict", action="store_true",
                   help="also refuse every metric-like number no marker, table or history covers")

    p = command("card", "a model card: intended use, data, method, performance, limits",
                "Write the model card of a model folder (sections of Mitchell et al. 2019, the "
                "model items of TRIPOD+AI): intended and out-of-scope uses, training data, how "
                "the settings were chosen, performance from the validation predictions and from "
                "each evaluation report given, subgroups, the out-of-distribution flag, "
                "limitations, hashes and commands. Every number is read from the model folder "
                "and the reports. `medxfer train` writes card.md and card.html into the model folder.")
    p.add_argument("model", help="model folder")
    p.add_argument("--evaluation", action="append", default=[], metavar="REPORT",
                   help="a report folder of `medxfer evaluate` on this model; repeat for several "
                        "(default: none, and the card says so)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="card file to write: .html (one offline page) or .md")

    p = command("serve", "an HTTP service and a viewer page for a model (/, POST /predict, /cam)",
                "Serve the model over HTTP (FastAPI + uvicorn): a viewer page at / (drop an "
                "image: findings against thresholds, Grad-CAM overlay, out-of-distribution "
                "warning, the model card); POST /predict with a PNG, JPEG or DICOM upload returns "
                "probabilities, thresholds, findings and the out-of-distribution flag as JSON, "
                "POST /cam the overlay as PNG; bad uploads get a 4xx with a reason. Loopback only "
                "unless --host says otherwise; uploads are never kept.")
    p.add_argument("model", help="model folder")
    add_settings(p, ServeSettings, title="the service")
    add_settings(p, ExtractSettings, only=("max_pixels", "engine", "device"), title="images and engine")

    p = command("dicom-node", "a DICOM node: images by C-STORE in, Structured Reports to the PACS",
                "A DICOM Storage SCP (and C-ECHO) on pynetdicom: each image received is spooled "
                "to disk before it is acknowledged, predicted with the model, and answered with a "
                "DICOM Comprehensive SR in the same study (every finding's probability, threshold "
                "and call, the out-of-distribution flag and reason, the algorithm and the model's "
                "hash, marked as an AI result, not a diagnosis), sent by C-STORE to --send-to or by "
                "STOW-RS to --dicomweb with retries; a restart on the same --spool resumes. A "
                "dataset without pixel data gets 0122, one that does not parse C210, one too large "
                "A700. Loopback only unless --host says otherwise.")
    p.add_argument("model", help="model folder")
    add_settings(p, DicomNodeSettings, title="the DICOM node")
    add_settings(p, ExtractSettings, only=("max_pixels", "engine", "device"), title="images and engine")

    p = command("predict", "per-finding probabilities for image files or folders", parents=[js])
    p.add_argument("model", help="model folder")
    p.add_argument("images", nargs="+", help="PNG, JPEG or DICOM files, or folders of them")
    p.add_argument("--cam", default=None, metavar="DIR",
                   help="also save Grad-CAM overlays of the predicted findings into DIR (default: none)")
    p.add_argument("--keep-going", action="store_true",
                   help="exit 0 when some inputs were predicted though others failed (default: "
                        "exit 1 when any input failed)")
    add_settings(p, ExtractSettings, only=("engine", "device"), title="extraction")
    return ap


def given_options(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Dests of the options written in ``argv`` (``--opt v``, ``--opt=v``, an abbreviation
    argparse accepts, ``--no-opt``), so a value equal to its default still counts as given."""
    strings = {s: act.dest for act in parser._actions for s in act.option_strings if s.startswith("--")}
    out = set()
    for tok in argv:
        if not tok.startswith("--") or tok == "--":
            continue
        name = tok.split("=", 1)[0]
        hits = [name] if name in strings else [s for s in strings if s.startswith(name)]
        if len(hits) == 1:
            out.add(strings[hits[0]])
    return out


# ---------------------------------------------------------------------------- config file

def _config_check(command: str, dest: str):
    """The constraint of option ``dest`` on ``command`` (from the settings it reads)."""
    for cls, only in COMMAND_SETTINGS.get(command, []):
        for f in fields(cls):
            if f.name == dest and (only is None or dest in only):
                return f.metadata.get("check")
    return None


def apply_config(parser: _Parser, path: str) -> dict[str, set[str]]:
    """Set each command's defaults from the TOML file's section of the same name; unknown
    sections, unknown keys and values outside their range are errors naming them. Returns
    the dests each section set (they count as given, like options on the command line)."""
    import tomllib

    try:
        doc = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise UsageError(f"config file '{path}' does not exist") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file '{path}' is not valid TOML: {exc}") from exc
    subs = parser.commands
    given: dict[str, set[str]] = {}
    for section, values in doc.items():
        if section not in subs or not isinstance(values, dict):
            raise UsageError(f"config file '{path}': unknown section [{section}]; sections are "
                             f"command names: {', '.join(sorted(subs))}")
        resolved = {}
        for key, value in values.items():
            dest = subs[section].dests.get(key.replace("-", "_"))
            if dest is None or dest in ("help", "config", "quiet", "version"):
                raise UsageError(f"config file '{path}': [{section}] has no option '{key}'; "
                                 f"see `medxfer {section} --help`")
            check = _config_check(section, dest)
            if (isinstance(check, Interval) and check.none_ok and check.low >= 1 and value == 0):
                value = None  # as on the command line: 0 means none (TOML has no null)
            if check is not None and not check.accepts(value):
                raise UsageError(f"config file '{path}': [{section}] {key} must be "
                                 f"{check.describe()}; got {value!r}")
            resolved[dest] = value
        subs[section].set_defaults(**resolved)
        given[section] = set(resolved)
    return given


# ---------------------------------------------------------------------------- commands

def _progress(a) -> bool:
    """Progress bars on a terminal only: quiet with -q or when stderr goes to a log."""
    return not a.quiet and sys.stderr.isatty()


class _Steps:
    """Progress of a long step: a bar on a terminal (not with -q or when stderr is a log),
    and on a log an info line every ``every`` steps instead of carriage-return spam."""

    def __init__(self, a, total: int, desc: str, every: int = 10):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, disable=not _progress(a), dynamic_ncols=True)
        self.desc, self.every, self.n, self.log = desc, every, 0, not _progress(a) and not a.quiet

    def __call__(self, *args, note: str = "") -> None:
        self.n += 1
        self.bar.update(1)
        if note:
            self.bar.set_postfix_str(note, refresh=False)
        if self.log and self.n % self.every == 0:
            log.info("%s: %d/%s %s", self.desc, self.n, self.bar.total, note)

    def close(self) -> None:
        self.bar.close()


def _read(a, path):
    from .data import read_dataset

    # the CSV options as given: the registry refuses them for a format that does not take them
    kw = {k: v for k, v in dict(path_column=a.path_column, patient_column=a.patient_column,
                                 labels_column=a.labels_column).items() if v is not None}
    if a.labels_column:
        kw["separator"] = a.separator
    if getattr(a, "uncertain", None) is not None:
        kw["uncertain"] = a.uncertain
    ds = read_dataset(path, **kw)
    if a.limit is not None:
        if a.limit < 1:
            raise UsageError(f"--limit must be an int in the range [1, inf); got {a.limit}")
        import numpy as np

        ds = ds.subset(np.arange(min(a.limit, len(ds))))
    return ds


#: What each command writes into --out, and the files that show a folder is one of its own
#: (a rerun may reuse it); a folder of other files is refused, before any work.
OUT_KINDS = {
    "extract": ("features folder", FEATURES_FOLDER_MARKS),
    "train": ("model folder", ("model.json",)),
    "tune": ("model folder", ("model.json",)),
    "finetune": ("model folder", ("model.json",)),
    "evaluate": ("report folder", ("metrics.json", "report.html", "features")),
    "cv": ("CV folder", ("cv.json", "oof_predictions.npz")),
    # an interrupted run leaves a study's own folder before index.html: it is resumed
    "study": ("study folder", ("index.html", "features", "external")),
    "demo": ("demo folder", ("report", "model", "features")),
}
#: Commands whose existing output is replaced, and so needs --overwrite.
REPLACES = ("train", "tune", "finetune")


def check_out(command: str, out: str | Path, *, overwrite: bool = False) -> Path:
    """Refuse an --out that cannot work, before any work: a file, a folder under a file, a
    folder that is not writable, a folder of other files, or (for a model) an existing
    model without ``overwrite``. UsageError names the path and the fix."""
    out = Path(out)
    what, marks = OUT_KINDS[command]
    if command == "study":
        from .studies.registry import study_names  # reads the study files, imports none

        marks = marks + tuple(study_names())
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out '{out}' is a file; --out names the {what} to write")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"--out '{out}' is under '{parent}', which is a file; name a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out '{out}': cannot write in '{parent}' (permission denied)")
    if out.is_dir() and any(out.iterdir()):
        if not any((out / m).exists() for m in marks):
            raise UsageError(f"--out '{out}' is a folder of other files, not a medxfer {what}; "
                             "name a new folder (nothing in it was changed)")
        if command in REPLACES and not overwrite:
            raise UsageError(f"--out '{out}' already holds a model; pass --overwrite to replace "
                             "it, or name a new folder")
    return out


def _saved_line(what: str, out, metrics: dict) -> str:
    auc = metrics["validation_macro_auc"]
    return (f"{what} saved to {out}: best epoch {metrics['best_epoch']}, validation macro AUC "
            f"{'n/a' if auc is None else f'{auc:.3f}'} on {metrics['validation_images']} images")


def _cmd_demo(a) -> int:
    from .pipeline import run_demo

    if a.limit is not None and a.limit < 2:
        raise UsageError(f"--limit must be an int in the range [2, inf); got {a.limit}")
    r = run_demo(a.out, data=a.data, backbone=a.backbone, limit=a.limit,
                 seed=a.settings[RunSettings].seed,
                 n_boot=a.settings[EvalSettings].n_boot, progress=_progress(a))
    ci = r.metrics["macro_auc_ci95"] or [float("nan")] * 2
    print(f"macro AUC on {r.test_images} held-out images: {r.metrics['macro_auc']:.3f} "
          f"(95% CI {ci[0]:.3f}-{ci[1]:.3f}); tuned logistic regression "
          f"{r.baseline['logistic_regression']['macro_auc']:.3f}. Small sample: wide intervals.")
    print(f"report: {r.report}  ({r.seconds:.0f} s); model card: {Path(a.out) / 'model' / 'card.html'}")
    return 0


def _cmd_inspect(a) -> int:
    ds = _read(a, a.data)
    s = ds.summary()
    s["problem_list"] = [p.as_dict() for p in ds.problems]
    found = []
    if a.check_images:
        from .checks import check_images

        x = a.settings[ExtractSettings]
        found = check_images(ds.table["path"].tolist(), max_pixels=x.max_pixels, workers=x.workers,
                             progress=_progress(a))
        s["image_checks"] = {"images": len(ds), "problems": found}
    # exit status 1 when an image cannot be used at all (the other kinds are warnings)
    status = 1 if any(p["kind"] in ("unreadable", "oversized", "too_small") for p in found) else 0
    if a.json:
        print(json.dumps(s, indent=2))
        return status
    print(f"{s['name']}: {s['images']} images, {s['patients']} patients")
    print(f"format: {s['format']} ({s['format_reason']})")
    print(f"patient ids: from {str(s.get('patient_ids_from', 'unknown')).replace('_', ' ')}"
          + ("" if s.get("patient_ids_from") in ("metadata", None) else
             " (stand-ins: a patient's other images cannot be recognised; give a patient column)"))
    if s.get("uncertain_policy"):
        unc = s.get("uncertain_labels") or {}
        print(f"uncertain labels ({s['uncertain_policy']}): "
              + (", ".join(f"{k} {v}" for k, v in unc.items()) or "none"))
    width = max(len(n) for n in s["findings"]) if s["findings"] else 10
    for name, n in s["findings"].items():
        print(f"  {name:<{width}}  {n:6d}  ({100 * n / max(1, s['images']):.1f}%)")
    print(f"  {'No Finding':<{width}}  {s['no_finding']:6d}")
    co = s.get("cooccurrence") or {}
    pairs = sorted({tuple(sorted((a_, b_))): n for a_, row in co.items() for b_, n in row.items()}.items(),
                   key=lambda kv: -kv[1])
    if pairs:
        print("co-occurrence (images with both), most frequent: " + ", ".join(
            f"{x} + {y} {n}" for (x, y), n in pairs[:10]) + (f" (of {len(pairs)} pairs; --json "
                                                             "lists all)" if len(pairs) > 10 else ""))
    for key in ("view", "sex"):
        if key in s:
            print(f"{key}: " + ", ".join(f"{k} {v}" for k, v in s[key].items()))
    if "age" in s:
        ag = s["age"]
        print(f"age: min {ag['min']}, median {ag['median']}, max {ag['max']}, missing {ag['missing']}")
    for p in ds.problems[:10]:
        print(f"{'note' if p.kind == 'partial_copy' else 'problem'}: {p.kind}: {p.item}: {p.detail}")
    if len(ds.problems) > 10:
        print(f"... and {len(ds.problems) - 10} more problems")
    if a.check_images:
        kinds = sorted({p["kind"] for p in found})
        print(f"image check: {len(ds)} images decoded; " + (", ".join(
            f"{sum(p['kind'] == k for p in found)} {k}" for k in kinds) if found else "no problems"))
        for p in found:
            print(f"  {p['kind']}: {p['detail']}")
    return status


def _cmd_backbones(a) -> int:
    from .backbones import get_backbone_config, list_backbones

    rows = [get_backbone_config(n).describe() for n in list_backbones()]
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        state = "available" if r["weights_available"] else "weights missing"
        print(f"{r['name']:<20} {r['feature_dim']:5d}-d  {r['input_size']}px  {state:<15} "
              f"{r['weights']} [{r['license']}]")
    return 0


def _cmd_extract(a) -> int:
    from .features import extract_with_settings

    s = a.settings[ExtractSettings]
    # Under torchrun (or any launcher that sets RANK and WORLD_SIZE) each process writes the
    # shards i % WORLD_SIZE == RANK of one cache; the last to finish writes its manifest.
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < world:
        raise UsageError(f"RANK={rank} and WORLD_SIZE={world} from the environment do not fit")
    fs = extract_with_settings(_read(a, a.data), s, a.out, overwrite=a.overwrite,
                               progress=_progress(a) and rank == 0, rank=rank, world_size=world)
    if fs is None:
        print(f"rank {rank}/{world}: its shards are written in {a.out}; the last rank to finish "
              "writes the manifest")
        return 0
    read = [p for p in fs.dataset.problems if p.kind != "partial_copy"]
    print(f"features: {fs.features.shape[0]} x {fs.features.shape[1]} ({s.dtype}) in {a.out}"
          + (f"; {len(fs.skipped)} unreadable image(s) left out" if fs.skipped else "")
          + (f"; {len(read)} problem(s) while reading the data (missing images...)" if read else "")
          + (f"; all listed in {Path(a.out) / 'problems.csv.gz'}" if fs.skipped or read else ""))
    return 0


def train_settings(a) -> tuple[HeadSettings, PackageSettings]:
    """What `medxfer train` trains with, from its parsed options."""
    s = resolve_settings(a)
    return s[HeadSettings], s[PackageSettings]


#: Options of `medxfer train` that only one mode reads: (field, applies when, the mode named).
TRAIN_MODES = (
    [(f, lambda h, s, p: h.solver == "adamw", "--solver adamw")
     for f in ("lr", "weight_decay", "batch_size", "max_epochs", "patience")]
    + [("max_iter", lambda h, s, p: h.solver == "lbfgs", "--solver lbfgs")]
    + [(f, lambda h, s, p: not s.select, "--no-select") for f in ("validation_fraction", "n_ensemble")]
    + [(f, lambda h, s, p: s.select, "--select") for f in ("inner_folds", "inner_repeats", "holdout_from", "grid")]
    + [("focal_gamma", lambda h, s, p: h.imbalance == "focal", "--imbalance focal"),
       ("cb_beta", lambda h, s, p: h.imbalance == "class_balanced", "--imbalance class_balanced"),
       ("target_sensitivity", lambda h, s, p: p.threshold_method == "sensitivity",
        "--threshold-method sensitivity")])


def train_plan(a) -> list[dict] | None:
    """Refuse train options the chosen mode would ignore (naming the mode that reads them),
    and the selection grid as --bottleneck-dim/--alpha restrict it (None: the grid as is)."""
    from .pipeline import read_grid, restrict_grid

    h, sel, pack = a.settings[HeadSettings], a.settings[SelectionSettings], a.settings[PackageSettings]
    names = {f.name: _option(f) for cls in (HeadSettings, SelectionSettings, PackageSettings)
             for f in fields(cls)}
    for name, applies, mode in TRAIN_MODES:
        if name in a.given and not applies(h, sel, pack):
            raise UsageError(f"{names[name]} applies only with {mode}; it would be ignored here "
                             "(see `medxfer train --help`, options grouped by mode)")
    chosen = {k: getattr(h, k) for k in ("bottleneck_dim", "alpha") if k in a.given}
    if not sel.select or not chosen:
        return None
    grid = restrict_grid(read_grid(sel.grid), **chosen)
    log.info("under --select, %s restrict(s) the grid to %d setting(s): %s",
             " and ".join(f"{names[k]} {v if v is not None else 0}" for k, v in chosen.items()),
             len(grid), grid)
    return grid


def _fmt_auc(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"


def _cmd_train(a) -> int:
    from .features import FeatureSet
    from .head import DEFAULT_CV_GRID
    from .pipeline import read_grid, train_from_features, warn_derived_patients

    grid = train_plan(a)
    fs = FeatureSet.load(a.features)
    warn_derived_patients(fs.dataset, "train")
    sel = a.settings[SelectionSettings]
    steps = _Steps(a, len(grid or read_grid(sel.grid) or DEFAULT_CV_GRID) if sel.select else 1,
                   "train: settings", every=1 << 30)  # BottleneckCV logs each setting itself
    model = train_from_features(fs, head=a.settings[HeadSettings], selection=sel, grid=grid,
                                packaging=a.settings[PackageSettings],
                                progress=lambda i, n, g, score: steps(note=f"{g} AUC {_fmt_auc(score)}"))
    steps.close()
    model.config["command"] = _command_line(a)
    model.save(a.out)
    out = {"model": str(a.out), "train_images": model.features.get("n_rows")} | model.metrics
    if a.json:
        print(json.dumps(out, indent=2, default=str))
    elif "selection" in out:
        chosen = " + ".join(f"k={c.get('bottleneck_dim') or 'none (linear head)'}, "
                            f"alpha={c.get('alpha')}" for c in model.config["chosen"])
        auc = out["validation_macro_auc"]
        if out.get("selected_by") == "holdout":
            how, what, avg = ("one patient-wise validation part (holdout, from "
                              f"{a.settings[SelectionSettings].holdout_from} images on)"), "validation", (
                f"{out['members']} model(s) trained on the other patients")
        else:
            how, what, avg = (f"{a.settings[SelectionSettings].inner_folds}-fold patient-wise CV",
                              "out-of-fold", f"{out['members']} fold models averaged")
        print(f"model saved to {a.out}: chose {chosen} among {out['selected_from']} settings by "
              f"{how}; {what} macro AUC {_fmt_auc(auc)} on {out['validation_images']} "
              f"images (optimistic: it won the selection); {avg}")
    else:
        print(_saved_line("model", a.out, out))
    terms = out.get("loss_terms") or {}
    if terms and not a.json:
        print("loss terms at the solution (training rows of the first member): " + ", ".join(
            f"{k} {v:.4g}" for k, v in terms.items() if v is not None))
    _card_line(a)
    return 0


def _card_line(a) -> None:
    """Where train wrote the model card, and how to add an evaluation to it."""
    card = Path(a.out) / "card.html"
    if card.is_file() and not a.json:
        print(f"model card: {card} (after `medxfer evaluate`, add the report: medxfer card "
              f"{a.out} --evaluation REPORT --out {card})")


def _cmd_tune(a) -> int:
    from .features import FeatureSet
    from .pipeline import read_grid, save_tuned, tune_from_features

    grid = read_grid(a.grid)
    t = a.settings[TuneSettings]
    steps = _Steps(a, t.max_epochs, "tune: epochs")
    model, table = tune_from_features(FeatureSet.load(a.features), grid=grid,
                                      seed=a.settings[RunSettings].seed, tune=t,
                                      packaging=a.settings[PackageSettings],
                                      progress=lambda epoch, info: steps(
                                          note=f"{info['active']}/{info['settings']} settings training"))
    steps.close()
    model.config["command"] = _command_line(a)
    save_tuned(model, table, a.out)
    best = max(table, key=lambda r: r["val_macro_auc"])
    if a.json:
        print(json.dumps({"model": a.out, "best": best, "settings": len(table)}, indent=2))
    else:
        print(f"{len(table)} settings trained; best validation macro AUC {best['val_macro_auc']:.3f} "
              f"with {({k: v for k, v in best.items() if k not in ('val_macro_auc', 'best_epoch')})}; "
              f"model saved to {a.out} (all settings in tune.json)")
    return 0


def _cmd_finetune(a) -> int:
    from .finetune import finetune

    head = {k: getattr(a.settings[HeadSettings], k) for k in FINETUNE_HEAD}

    rank = int(os.environ.get("RANK", 0))  # under torchrun every process trains, rank 0 saves
    model = finetune(_read(a, a.data), settings=a.settings[FinetuneSettings], head=head,
                     packaging=a.settings[PackageSettings], seed=a.settings[RunSettings].seed,
                     progress=_progress(a) and rank == 0)
    if rank == 0:
        model.config["command"] = _command_line(a)
        model.save(a.out)
        print(_saved_line("fine-tuned model", a.out, model.metrics))
    return 0


def _cmd_cv(a) -> int:
    from .experiments import cross_validate, cv_table, write_cv
    from .features import FeatureSet

    s = a.settings[EvalSettings]
    fs = FeatureSet.load(a.features)
    from .pipeline import warn_derived_patients

    warn_derived_patients(fs.dataset, "cv")
    patients = len(set(fs.dataset.patient_ids))
    if s.folds > patients:
        raise UsageError(f"--folds {s.folds} is more than the {patients} patients in "
                         f"'{a.features}': use at most {patients}")
    from .errors import unknown_name_message
    from .experiments import compare_feature_sets, default_models

    models = default_models(a.tune)
    if a.models:
        names = [m.strip() for m in a.models.split(",") if m.strip()]
        for m in names:
            if m not in models:
                raise UsageError(unknown_name_message("model", m, tuple(models)))
        models = {m: models[m] for m in names}
    seed = a.settings[RunSettings].seed
    if a.against:
        if not Path(a.against, "manifest.json").is_file():
            raise UsageError(f"--against '{a.against}' is not a features folder: run `medxfer "
                             "extract DATA --backbone OTHER --out FOLDER` on the same data first")
        other = FeatureSet.load(a.against)
        try:
            res = compare_feature_sets(fs, other, models=models, n_splits=s.folds, seed=seed,
                                       n_boot=s.n_boot)
        except ValueError as exc:
            raise UsageError(f"--against '{a.against}': {exc}") from exc
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "cv_against.json").write_text(json.dumps(res, indent=2, default=str))
        lines = [f"| model | {a.features} | {a.against} | difference, paired (95% CI) |", "|---|---|---|---|"]
        for m, d in res["paired"].items():
            ci = d["ci95"] or [float("nan")] * 2
            lines.append(f"| {m} | {d['macro_auc_a']:.3f} | {d['macro_auc_b']:.3f} | "
                         f"{d['difference']:+.3f} ({ci[0]:+.3f}, {ci[1]:+.3f}) |")
        print(json.dumps(res["paired"], indent=2) if a.json else "\n".join(lines))
        return 0
    steps = _Steps(a, s.folds * len(models), "cv: model x fold", every=1 << 30)
    res = cross_validate(fs, n_splits=s.folds, seed=seed, models=models,
                         n_boot=s.n_boot,
                         on_unit=lambda name, k: steps(note=f"fold {k} {name}"))
    steps.close()
    write_cv(res, a.out, title=f"{s.folds}-fold patient-wise CV on {fs.dataset.name}")
    if a.json:
        print(json.dumps({n: {k: v for k, v in m.items() if k != "pooled"}
                          for n, m in res["models"].items()}, indent=2))
    else:
        print(cv_table(res))
    return 0


def _cmd_study(a) -> int:
    from .features import is_features_folder, read_manifest
    from .studies import open_study, run_study

    from .pipeline import warn_derived_patients

    st = a.settings[StudySettings]
    if (st.external or st.prior_shift) and a.name not in ("shift", "all"):
        raise UsageError(f"--external and --prior-shift apply to the shift study (or all), not "
                         f"to {a.name}")
    if st.prior_shift and not st.external:
        raise UsageError("--prior-shift needs --external: the prevalence it corrects to is the "
                         "other site's")
    data = a.data
    if not is_features_folder(data):
        data = _read(a, a.data)
        warn_derived_patients(data, "study")
    else:
        read_manifest(data)  # an unfinished one is named as such
    ctx = open_study(data, a.out, extract=a.settings[ExtractSettings],
                     settings=a.settings[StudySettings], head=a.settings[HeadSettings],
                     progress=_progress(a))
    if isinstance(data, str):  # a features folder (a dataset was warned about before extraction)
        warn_derived_patients(ctx.features.dataset, "study")
    results = run_study(a.name, ctx)
    for name, r in results.items():
        print(f"{name}: {r['seconds']:.0f} s; " + ", ".join(
            str(Path(a.out) / name / t) for t in r.get("tables", [])))
    print(f"index: {Path(a.out) / 'index.html'}")
    return 0


def _cmd_export(a) -> int:
    from .export import check_export, export_onnx
    from .model_io import TrainedModel

    model = TrainedModel.load(a.model)
    path = export_onnx(model, a.onnx)
    line = f"ONNX model written to {path} ({path.stat().st_size / 1e6:.1f} MB)"
    if a.check:
        r = check_export(model, path)
        line += (f"; onnxruntime matches PyTorch on {r['images']} bundled sample images "
                 f"(max abs difference {r['max_abs_difference']:.1e})")
    print(line)
    return 0


def _cmd_dicom_node(a) -> int:
    try:
        import highdicom  # noqa: F401
        import pynetdicom  # noqa: F401
    except ImportError as exc:
        raise UsageError("the DICOM node needs pynetdicom and highdicom: pip install "
                         "'medxfer[dicom]'") from exc
    from .dicom_node import DicomNode

    x, s = a.settings[ExtractSettings], a.settings[DicomNodeSettings]
    node = DicomNode(a.model, s, engine=x.engine, device=x.device, max_pixels=x.max_pixels)
    print(f"DICOM node {s.ae_title} listening on {s.host}:{s.port}, spool {s.spool}; Ctrl-C "
          "stops it (what was acknowledged stays in the spool)", flush=True)
    node.serve_forever()
    return 0


def _cmd_ledger(a) -> int:
    from .ledger import check, update

    for doc in a.documents:
        if not Path(doc).is_file():
            raise UsageError(f"document '{doc}' not found")
    if a.action == "update":
        missing = []
        for doc in a.documents:
            r = update(doc)
            missing += [f"{doc}: {m}" for m in r["missing"]]
            print(f"{doc}: {r['tables']} table(s) and {r['numbers']} number(s) rewritten from their "
                  "sources; reread the words around them")
        for m in missing:
            print(f"source not found, left as it was: {m}")
        return 1 if missing else 0
    problems = [p for doc in a.documents for p in check(doc, strict=a.strict)]
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s) in {len(a.documents)} document(s)" if problems
          else f"every checked number in {len(a.documents)} document(s) matches its result file")
    return 1 if problems else 0


def _cmd_card(a) -> int:
    from .card import write_card

    path = write_card(a.model, a.out, a.evaluation)
    print(f"model card written to {path}"
          + (f" with {len(a.evaluation)} evaluation report(s)" if a.evaluation else
             " (no evaluation report given: the card says so; add --evaluation REPORT)"))
    return 0


def _command_line(a) -> str:
    """The command that is running, as a user would type it (recorded in model folders)."""
    import shlex

    return "medxfer " + shlex.join(a.argv)


def _cmd_serve(a) -> int:
    try:
        from .serve import serve
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise UsageError("the service needs FastAPI and uvicorn: pip install 'medxfer[serve]'") from exc
    x, v = a.settings[ExtractSettings], a.settings[ServeSettings]
    serve(a.model, host=v.host, port=v.port, max_upload_mb=v.max_upload_mb,
          max_pixels=x.max_pixels, engine=x.engine, device=x.device, max_batch=v.max_batch,
          batch_wait_ms=v.batch_wait_ms)
    return 0


def _model_label_names(folder) -> list[str] | None:
    """The label names in a model folder's model.json, read without torch (None when it
    cannot be read: TrainedModel.load then names the problem)."""
    try:
        names = json.loads((Path(folder) / "model.json").read_text())["label_names"]
        return [str(n) for n in names] if isinstance(names, list) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cmd_evaluate(a) -> int:
    from .data import shared_findings

    x = a.settings[ExtractSettings]
    n_boot = a.settings[EvalSettings].n_boot
    # The data and the model's finding names are compared before torch is even imported:
    # a label set the model cannot be scored on fails in seconds.
    names = _model_label_names(a.model)
    if names is None:  # not a readable model folder: TrainedModel.load names the problem
        from .model_io import TrainedModel

        TrainedModel.load(a.model)
    data = Path(a.data)
    is_features = data.is_dir() and any((data / m).exists() for m in FEATURES_FOLDER_MARKS)
    source = a.data if is_features else _read(a, a.data)
    if names and not isinstance(source, str):
        shared_findings(source, names)
    from .model_io import TrainedModel
    from .pipeline import evaluate_model, features_for_model, training_patient_guard

    model = TrainedModel.load(a.model)
    out = Path(a.out)
    def check(ds):  # before an hour of extraction (evaluate_model says the rest once)
        shared_findings(ds, model.label_names)
        training_patient_guard(model, ds.patient_ids, a.allow_training_patients,
                               patient_ids_from=ds.patient_ids_from, quiet=True)

    fs = features_for_model(model, source, cache=out / "features", batch_size=x.batch_size,
                            num_workers=x.workers, progress=_progress(a), engine=x.engine,
                            device=x.device, check=check)
    m = evaluate_model(model, fs, out, n_boot=n_boot, seed=a.settings[RunSettings].seed,
                       config={"model": str(a.model), "data": str(a.data)},
                       allow_training_patients=a.allow_training_patients)
    if a.json:
        print(json.dumps(m, indent=2, default=str))
        return 0
    ci, f = m["macro_auc_ci95"], m["findings"]
    if f.get("read_as"):
        print("read under the model's names: " + ", ".join(f"'{k}' as {v}" for k, v in f["read_as"].items()))
    print(f"scored {len(f['scored'])} finding(s): {', '.join(f['scored'])}"
          + (f"; not labelled in the data: {', '.join(f['not_in_data'])}" if f["not_in_data"] else "")
          + (f"; in the data, not predicted by the model: {', '.join(f['not_in_model'])}"
             if f["not_in_model"] else ""))
    print(f"macro AUC {m['macro_auc']:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f}) on {m['n_images']} "
          f"images of {m['n_patients']} patients; report: {m['report']}" if ci else
          f"macro AUC {_fmt_auc(m['macro_auc'])} (no interval: "
          f"{m.get('macro_auc_ci95_withheld') or 'undefined'}); report: {m['report']}")
    return 0


def _cmd_predict(a) -> int:
    from .model_io import TrainedModel
    from .pipeline import predict_paths

    model = TrainedModel.load(a.model)
    with tempfile.TemporaryDirectory(prefix="medxfer-predict-") as tmp:
        x = a.settings[ExtractSettings]
        records, problems = predict_paths(model, a.images, cache=Path(tmp) / "features",
                                          engine=x.engine, device=x.device)
    overlays = []
    if a.cam and records:
        from .cam import cam_for_records

        overlays = cam_for_records(model, records, a.cam)
    if a.json:
        print(json.dumps({"predictions": [r.to_dict() for r in records],
                          "failed": [p.as_dict() for p in problems],
                          "cam_overlays": [str(o) for o in overlays]}, indent=2))
    else:
        for r in records:
            above = ", ".join(f"{n} {r.probabilities[n]:.3f} (threshold {r.thresholds[n]:.3f})"
                              for n in r.above_threshold) or "none"
            if r.findings_withheld:
                print(f"{r.image_id}: findings withheld ({r.findings_withheld}); above threshold "
                      f"would be: {above}")
            else:
                print(f"{r.image_id}: above threshold: {above}")
        for p in problems if records or any(p.kind != "no_images" for p in problems) else ():
            # (the detail of an unreadable image names the file already)
            print(p.detail if p.item in p.detail else f"could not read {p.item}: {p.detail}",
                  file=sys.stderr)
        if overlays:
            print(f"{len(overlays)} Grad-CAM overlay(s) in {a.cam}")
        if records:
            print(f"thresholds: {records[0].threshold_rule}. {records[0].notice}")
    if not records:
        empty = problems and all(p.kind == "no_images" for p in problems)
        raise NothingDone(f"no image found in {', '.join(a.images)}: folders are searched for "
                          "PNG, JPEG and DICOM files" if empty or not problems else
                          f"no image was predicted: {len(problems)} input(s) failed")
    if problems and not a.keep_going:
        print(f"medxfer predict: {len(problems)} of {len(problems) + len(records)} inputs failed "
              "(exit status 1; --keep-going exits 0 when some were predicted)", file=sys.stderr)
        return 1
    return 0


_COMMANDS = {"demo": _cmd_demo, "inspect": _cmd_inspect, "backbones": _cmd_backbones,
             "extract": _cmd_extract, "train": _cmd_train, "evaluate": _cmd_evaluate, "cv": _cmd_cv,
             "finetune": _cmd_finetune, "tune": _cmd_tune, "predict": _cmd_predict,
             "study": _cmd_study, "export": _cmd_export, "serve": _cmd_serve, "card": _cmd_card,
             "ledger": _cmd_ledger, "dicom-node": _cmd_dicom_node}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    config = pre.parse_known_args(argv)[0].config  # both --config FILE and --config=FILE
    configured: dict[str, set[str]] = {}
    try:
        if config:
            configured = apply_config(parser, config)
    except UsageError as exc:
        print(f"medxfer: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    args.given = given_options(parser.commands[args.command], argv) | configured.get(args.command, set())
    args.argv = argv
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="medxfer: %(message)s", stream=sys.stderr, force=True)
    from .cores import use_threads

    use_threads(args.threads)  # before any command loads torch: pools sized to our cores
    try:
        args.settings = resolve_settings(args)
        if args.command in OUT_KINDS:  # before any work: hours of training must not end there
            check_out(args.command, args.out, overwrite=getattr(args, "overwrite", False))
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"medxfer {args.command}: interrupted; {_RESUME.get(args.command, _NO_RESUME)}",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `medxfer inspect DATA | head`: the reader left
        sys.stdout = open(os.devnull, "w")
        return 141
    except Exception as exc:
        if args.debug:
            raise
        known = isinstance(exc, (MedxferError, ValueError))
        what = str(exc) if known else f"{type(exc).__name__}: {exc}"
        print(f"medxfer {args.command}: error: {what}"
              + ("" if known else " (run again with --debug for the traceback)"), file=sys.stderr)
        return 1 if isinstance(exc, NothingDone) or not known else 2


#: What an interrupted command leaves: only those that keep finished work can resume.
_RESUME = {
    "extract": "the shards written are kept: run the same command again to resume",
    "study": "finished studies and extracted shards are kept: run the same command again to resume",
    "demo": "extracted shards are kept: run the same command again to resume",
    "evaluate": "extracted shards are kept: run the same command again to resume",
    "dicom-node": "every acknowledged image and unsent report is in the spool: start the node "
                  "again on the same --spool to finish them",
}
_NO_RESUME = "nothing was saved; run the command again to start over"


if __name__ == "__main__":
    raise SystemExit(main())
