"""Every default of medxfer in one place, with its allowed range and a one-line description.

Each stage's settings are a frozen dataclass; each field carries its help text and its
constraint as data. The Python estimators, the command line (options, ``--help`` text,
range errors) and the TOML config file all read these tables, so a default is written once:

    HeadSettings       the bottleneck model (BottleneckClassifier and `medxfer train`)
    SelectionSettings  inner-CV choice of its penalties in `medxfer train`
    ExtractSettings    feature extraction (`medxfer extract`, `evaluate`, `predict`)
    PackageSettings    calibration and thresholds fitted on validation patients
    TuneSettings       the one-pass grid (`medxfer tune`)
    FinetuneSettings   partial fine-tuning from images (`medxfer finetune`)
    EvalSettings       bootstrap and CV (`medxfer evaluate`, `medxfer cv`)

One message template for every bad value (scikit-learn's): "The 'l1' parameter of
BottleneckClassifier must be a float in the range [0, inf). Got -0.1 instead."
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from numbers import Integral, Real
from typing import Any


@dataclass(frozen=True)
class Interval:
    """A numeric range; ``kind`` is "int" or "float"; ``none_ok`` admits None."""

    kind: str
    low: float
    high: float = math.inf
    closed: str = "both"  # "both", "left", "right", "neither"
    none_ok: bool = False

    def accepts(self, value) -> bool:
        if value is None:
            return self.none_ok
        if isinstance(value, bool):
            return False
        if self.kind == "int" and not isinstance(value, Integral):
            return False
        if not isinstance(value, Real) or math.isnan(value):
            return False
        lo_ok = value >= self.low if self.closed in ("both", "left") else value > self.low
        hi_ok = value <= self.high if self.closed in ("both", "right") else value < self.high
        return lo_ok and hi_ok

    def describe(self) -> str:
        what = {"int": "an int", "float": "a float"}[self.kind]
        left = "[" if self.closed in ("both", "left") else "("
        right = "inf)" if self.high == math.inf else (
            f"{self.high}]" if self.closed in ("both", "right") else f"{self.high})")
        return f"{what}{' or None' if self.none_ok else ''} in the range {left}{self.low}, {right}"


@dataclass(frozen=True)
class Choice:
    options: tuple
    none_ok: bool = False

    def accepts(self, value) -> bool:
        return (value is None and self.none_ok) or value in self.options

    def describe(self) -> str:
        return "a str among {" + ", ".join(repr(o) for o in self.options) + "}" + (
            " or None" if self.none_ok else "")


@dataclass(frozen=True)
class Kind:
    """A plain type check (bool, str, path-like string) with no range."""

    type: type
    none_ok: bool = False

    def accepts(self, value) -> bool:
        if value is None:
            return self.none_ok
        if self.type is bool:
            return isinstance(value, bool)
        return isinstance(value, self.type)

    def describe(self) -> str:
        return f"a {self.type.__name__}{' or None' if self.none_ok else ''}"


def setting(default: Any, help: str, check=None, *, cli: str | None = None):
    """A dataclass field with its description, its constraint and (optionally) the name of
    its command-line option when that differs from ``--field-name``."""
    return field(default=default, metadata={"help": help, "check": check, "cli": cli})


def check_value(name: str, value, check, owner: str) -> None:
    """Raise ValueError in the one house template when ``value`` breaks ``check``."""
    if check is not None and not check.accepts(value):
        raise ValueError(f"The '{name}' parameter of {owner} must be {check.describe()}. "
                         f"Got {value!r} instead.")


def validate(obj, owner: str | None = None, settings_cls=None) -> None:
    """Check every field of ``settings_cls`` (default: type(obj)) read from ``obj``."""
    cls = settings_cls or type(obj)
    for f in fields(cls):
        check_value(f.name, getattr(obj, f.name), f.metadata.get("check"), owner or cls.__name__)


def defaults(cls) -> dict:
    """{field: default} of a settings class."""
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


POS_FLOAT = Interval("float", 0.0, closed="neither")
NONNEG_FLOAT = Interval("float", 0.0)
POS_INT = Interval("int", 1)
#: Forward-pass engines of feature extraction (medxfer.features.choose_engine).
ENGINES = ("auto", "torch", "onnxruntime")
NONNEG_INT = Interval("int", 0)

IMBALANCE_OPTIONS = ("none", "pos_weight", "class_balanced", "focal", "balanced_sampler")
TASKS = ("auto", "multilabel", "multiclass")
SOLVERS = ("adamw", "lbfgs")
CALIBRATION_METHODS = ("none", "platt", "temperature")
THRESHOLD_METHODS = ("f1", "youden", "sensitivity")
POOLINGS = ("avg", "multistage")
DTYPES = ("float16", "float32")
#: The default extraction, chosen by nested patient-wise CV on the 421-image sample
#: (docs/benchmarks.md): EfficientNet-Lite2 (260 px) and MobileNetV2 side by side, every
#: stage of both pooled; 1.4x the extraction time of Lite2 alone.
DEFAULT_BACKBONE = "efficientnet_lite2+mobilenet_v2"
DEFAULT_POOLING = "multistage"
#: Fine-tuning opens the last blocks of one network: the default extraction's first member.
DEFAULT_FINETUNE_BACKBONE = "efficientnet_lite2"


@dataclass(frozen=True)
class HeadSettings:
    """The bottleneck model. ``BottleneckClassifier()`` and ``medxfer train`` both start
    here (train then chooses width and alpha among DEFAULT_CV_GRID by inner CV). Chosen by
    nested patient-wise CV on the 421-image ChestX-ray14 sample (docs/defaults.md): full
    batch L-BFGS with the weight penalty; the code penalty is off because it lowered the
    out-of-fold AUC at every strength that changed the codes (docs/benchmarks.md)."""

    bottleneck_dim: int | None = setting(
        8, "k, the width of the codes h = W^T z; 0 on the command line (None in Python) "
        "drops the bottleneck (a linear head)", Interval("int", 1, none_ok=True))
    l1: float = setting(0.0, "lambda1 of the code penalty lambda1*||h||_1", NONNEG_FLOAT)
    l2: float = setting(0.0, "lambda2 of the code penalty lambda2*||h||_F^2", NONNEG_FLOAT)
    alpha: float = setting(0.03, "L2 penalty alpha*(||W||^2 + ||V||^2) on the weights",
                           NONNEG_FLOAT)
    solver: str = setting("lbfgs", "adamw: minibatches, early-stopped on the validation part "
                          "when there is one; lbfgs: full batch on the training rows (all but "
                          "the validation part), the penalties alone control the fit",
                          Choice(SOLVERS))
    max_iter: int = setting(200, "iterations of --solver lbfgs", POS_INT)
    lr: float = setting(1e-3, "AdamW learning rate", POS_FLOAT)
    weight_decay: float = setting(1e-2, "AdamW decoupled weight decay", NONNEG_FLOAT)
    batch_size: int = setting(64, "rows per minibatch", POS_INT)
    max_epochs: int = setting(200, "maximum epochs", POS_INT, cli="--epochs")
    patience: int = setting(20, "epochs without a better validation macro AUC before stopping",
                            POS_INT)
    imbalance: str = setting("pos_weight", "class-imbalance strategy (see docs)",
                             Choice(IMBALANCE_OPTIONS))
    focal_gamma: float = setting(2.0, "gamma of --imbalance focal", NONNEG_FLOAT)
    cb_beta: float = setting(0.999, "beta of --imbalance class_balanced",
                             Interval("float", 0.0, 1.0, closed="left"))
    task: str = setting("auto", "auto: multilabel for 2-D y, multiclass for 1-D y",
                        Choice(TASKS))
    validation_fraction: float = setting(
        0.2, "share of training patients held out for early stopping, calibration and "
        "thresholds", Interval("float", 0.0, 1.0, closed="left"))
    refit: bool = setting(False, "after early stopping, retrain on all rows for the chosen "
                          "epochs", Kind(bool))
    n_ensemble: int = setting(1, "average N members, each with its own patient-wise "
                              "validation split", POS_INT, cli="--ensemble")
    random_state: int = setting(0, "seed of initialization, shuffling and splits", NONNEG_INT,
                                cli="--seed")
    device: str = setting("cpu", "torch device for training: cpu, cuda, cuda:N or auto",
                          Kind(str))


@dataclass(frozen=True)
class SelectionSettings:
    """How `medxfer train` chooses the head's penalties: inner patient-wise CV over a grid
    (medxfer.head.BottleneckCV), the fold models averaged."""

    select: bool = setting(True, "choose width and alpha by inner patient-wise CV over the "
                           "grid (the grid's values replace --bottleneck-dim/--alpha; no "
                           "validation part is held out) and average the fold models; "
                           "--no-select trains the head settings as given, calibrated on a "
                           "validation part", Kind(bool))
    inner_folds: int = setting(5, "patient-wise inner folds of the selection", Interval("int", 2))
    inner_repeats: int = setting(1, "K-fold partitions of the selection (other seeds): their "
                                 "out-of-fold predictions averaged, all fold models deployed; "
                                 "R times the training time", POS_INT)
    grid: str | None = setting(None, "JSON file with a list of parameter dicts to choose among; "
                               "none: medxfer.head.DEFAULT_CV_GRID", Kind(str, none_ok=True))


@dataclass(frozen=True)
class PackageSettings:
    """What is fitted on the validation patients after training: calibration, thresholds."""

    calibration: str = setting("platt", "recalibration fitted on the validation patients",
                               Choice(CALIBRATION_METHODS))
    threshold_method: str = setting("f1", "how per-finding decision thresholds are chosen",
                                    Choice(THRESHOLD_METHODS))
    target_sensitivity: float = setting(0.9, "sensitivity aimed at with --threshold-method "
                                        "sensitivity", Interval("float", 0.0, 1.0))


@dataclass(frozen=True)
class ExtractSettings:
    backbone: str = setting(DEFAULT_BACKBONE, "backbone name (see `medxfer backbones`); "
                            "'a+b' concatenates backbones", Kind(str))
    weights: str | None = setting(None, "explicit weights file for the backbone",
                                  Kind(str, none_ok=True))
    input_size: int | None = setting(None, "square input side in pixels (backbone's default)",
                                     Interval("int", 8, none_ok=True))
    pooling: str = setting(DEFAULT_POOLING, "avg: global average of the last stage; "
                           "multistage: averages of every stage, concatenated", Choice(POOLINGS))
    batch_size: int = setting(32, "images per forward pass", POS_INT)
    workers: int | None = setting(None, "image decoding processes (None: cores - 1, at least 1)",
                                  Interval("int", 0, none_ok=True))
    shard_size: int | None = setting(None, "rows per shard, the unit a resumed run keeps (none: "
                                     "n/16 clamped to 32..1024, so even a small set resumes)",
                                     Interval("int", 1, none_ok=True))
    dtype: str = setting("float16", "storage type of the features", Choice(DTYPES))
    image_cache: str | None = setting(None, "folder for decoded+resized images, reused by "
                                      "later backbones at this size", Kind(str, none_ok=True))
    max_pixels: int = setting(64_000_000, "images with more pixels are skipped and listed, "
                              "before decoding (decompression bombs)", POS_INT)
    engine: str = setting("auto", "forward-pass engine: onnxruntime (the backbone exported to "
                          "ONNX once, cached by its weights' hash; features equal to torch's "
                          "within float rounding), torch, or auto: onnxruntime on the CPU where "
                          "it is installed and the backbone exports, else torch", Choice(ENGINES))
    device: str = setting("auto", "device of the torch engine: auto (the GPU when torch sees "
                          "one, cuda:LOCAL_RANK under torchrun), cpu, cuda or cuda:N", Kind(str))


@dataclass(frozen=True)
class TuneSettings:
    batch_size: int = setting(64, "rows per minibatch (all settings share them)", POS_INT)
    max_epochs: int = setting(200, "maximum epochs", POS_INT, cli="--epochs")
    patience: int = setting(20, "epochs without improvement before a setting stops", POS_INT)
    validation_fraction: float = setting(0.2, "share of patients held out for selection",
                                         Interval("float", 0.0, 1.0, closed="neither"))


@dataclass(frozen=True)
class FinetuneSettings:
    backbone: str = setting(DEFAULT_FINETUNE_BACKBONE, "backbone name (see `medxfer "
                            "backbones`; one network, not a concatenation)", Kind(str))
    unfreeze: int = setting(2, "number of last backbone blocks to train", NONNEG_INT)
    epochs: int = setting(10, "maximum epochs", POS_INT)
    patience: int = setting(3, "epochs without a better validation macro AUC before stopping",
                            POS_INT)
    lr_backbone: float = setting(1e-4, "learning rate of the unfrozen backbone blocks",
                                 POS_FLOAT)
    batch_size: int = setting(16, "images per step", POS_INT)
    augment: bool = setting(True, "light radiograph augmentation (rotation, scale, "
                            "brightness, contrast)", Kind(bool))
    hflip: bool = setting(False, "also flip horizontally (off: anatomy is not symmetric)",
                          Kind(bool))
    max_steps: int | None = setting(None, "stop after N optimizer steps",
                                    Interval("int", 1, none_ok=True))
    device: str = setting("auto", "auto (GPU when present), cpu, cuda or cuda:N", Kind(str))
    workers: int | None = setting(None, "image decoding processes (None: cores - 1, up to 8, "
                                  "beside a GPU; none on the CPU, where torch needs the cores)",
                                  Interval("int", 0, none_ok=True))
    image_cache: str | None = setting(None, "folder for decoded+resized images (shared with "
                                      "`extract --image-cache`): later epochs and runs skip "
                                      "the full-resolution decode", Kind(str, none_ok=True))


@dataclass(frozen=True)
class EvalSettings:
    n_boot: int = setting(1000, "bootstrap resamples (over patients) for 95% CIs", POS_INT)
    folds: int = setting(5, "patient-wise folds of `medxfer cv`", Interval("int", 2))


@dataclass(frozen=True)
class StudySettings:
    """The paper's studies (`medxfer study`): folds, resampling, what each study varies."""

    folds: int = setting(5, "patient-wise outer folds (compare, imbalance, sensitivity, "
                         "efficiency)", Interval("int", 2))
    n_boot: int = setting(1000, "patient bootstrap resamples for every 95% CI", POS_INT)
    test_fraction: float = setting(0.3, "share of patients held out as the test group "
                                   "(disturbance, shift)", Interval("float", 0.0, 1.0,
                                                                    closed="neither"))
    draws: int = setting(3, "random draws of the training patients per learning-curve point",
                         POS_INT)
    fractions: str = setting("0.05,0.1,0.25,0.5,1.0", "learning-curve points: shares of the "
                             "training patients, comma-separated, each in (0, 1]", Kind(str))
    disturbance_images: int = setting(2000, "at most this many held-out images are corrupted "
                                      "(whole patients; bounds the cost on large data)", POS_INT)
    corruptions: str = setting("all", "disturbances to apply, comma-separated (see "
                               "medxfer.corruptions), or all", Kind(str))
    shifts: str = setting("view:PA:AP,view:AP:PA,sex:M:F,sex:F:M,age:younger:older,"
                          "age:older:younger", "train-group:test-group pairs as "
                          "COLUMN:A:B, comma-separated; age splits at the median "
                          "(younger/older); any table column works, e.g. site:X:Y", Kind(str))
    backbones: str | None = setting(None, "compare: also these backbones, comma-separated "
                                    "(features extracted and cached beside the first)",
                                    Kind(str, none_ok=True))
    seed: int = setting(0, "seed of folds, draws, corruption noise and models", NONNEG_INT)
