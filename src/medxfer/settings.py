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
    StudySettings      the paper's studies (`medxfer study`)
    ServeSettings      the HTTP service (`medxfer serve`)
    RunSettings        the one --seed of every command that draws random numbers

The grids that model selection searches (DEFAULT_CV_GRID ...) are data and live here too;
the named model lineups built from them live in medxfer.experiments.

One message template for every bad value (scikit-learn's): "The 'l1' parameter of
BottleneckClassifier must be a float in the range [0, inf). Got -0.1 instead."
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from numbers import Integral, Real
from typing import Any

import numpy as np


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
        if not isinstance(value, Real) or not math.isfinite(value):
            return False  # inf passes no range: "[0, inf)" is open at infinity
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


def setting(default: Any, help: str, check=None, *, cli: str | bool | None = None):
    """A dataclass field with its description, its constraint and (optionally) the name of
    its command-line option when that differs from ``--field-name`` (False: no option of
    its own, another table's field sets it, e.g. RunSettings.seed)."""
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


def head_params(head=None) -> dict:
    """BottleneckClassifier parameters: HeadSettings defaults updated by ``head`` (a
    HeadSettings or a dict of some of its fields)."""
    from dataclasses import asdict

    if isinstance(head, HeadSettings):
        return asdict(head)
    return defaults(HeadSettings) | dict(head or {})


def check_of(cls, name: str):
    """The constraint of field ``name`` of settings class ``cls``."""
    return next(f.metadata.get("check") for f in fields(cls) if f.name == name)


def defaults(cls) -> dict:
    """{field: default} of a settings class."""
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


#: The seed every command starts from unless --seed says otherwise.
DEFAULT_SEED = 0
#: A penalty weight. Beyond 1e4 every weight and code is driven to zero (the model predicts
#: the prior), and near 1e308 the loss overflows: a bound that can work, not a float's.
PENALTY = Interval("float", 0.0, 1e4)
POS_INT = Interval("int", 1)
NONNEG_INT = Interval("int", 0)

IMBALANCE_OPTIONS = ("none", "pos_weight", "class_balanced", "focal", "balanced_sampler")
TASKS = ("auto", "multilabel", "multiclass")
SOLVERS = ("adamw", "lbfgs")
CALIBRATION_METHODS = ("none", "platt", "temperature")
THRESHOLD_METHODS = ("f1", "youden", "sensitivity")
POOLINGS = ("avg", "multistage")
DTYPES = ("float16", "float32")
#: Images with more pixels are refused from their header, before decoding.
MAX_PIXELS = 64_000_000
#: The files that make a folder a features folder, finished or not (medxfer.features).
FEATURES_FOLDER_MARKS = ("manifest.json", "manifest.partial.json", "shards")
#: Images narrower or lower than this are refused: nothing smaller is a radiograph (a 1 x 1
#: PNG used to be predicted with six findings), and the backbones' first stages need it.
MIN_IMAGE_SIDE = 32
#: A finding's AUC interval needs at least this many positive (and negative) images: with
#: fewer, a patient bootstrap resamples the same few and its interval claims a precision the
#: data cannot give (Hernia, 1 positive in 60, once showed [0.814, 0.966]); it is withheld.
MIN_CI_POSITIVES = 5
#: What every output of a model says it is not (records, reports, the service, cards, ONNX).
NOTICE = ("medxfer is a research tool, not a medical device: its outputs are not a diagnosis "
          "and must not guide the care of a patient.")
#: Subgroup results (view, sex, age band) of reports and model cards: a subgroup with fewer
#: images is listed with its count and no AUC.
MIN_SUBGROUP_IMAGES = 20
#: Age bands of the subgroup results, in years: [0, 40), [40, 60), [60, 80), [80, ...).
AGE_BANDS = (40, 60, 80)
#: The longest a service request waits for others to share its forward pass.
MAX_BATCH_WAIT_MS = 1000.0
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
    batch L-BFGS with the weight penalty; the code penalty is off because, with the weight
    penalty on, no code-penalized setting raised the out-of-fold AUC beyond the noise of its
    paired difference against the same alpha without it, and the code penalty alone is
    scale-free (docs/benchmarks.md, docs/results/regularizer_ablation.json)."""

    bottleneck_dim: int | None = setting(
        8, "k, the width of the codes h = W^T z; 0 on the command line (None in Python) "
        "drops the bottleneck (a linear head)", Interval("int", 1, none_ok=True))
    l1: float = setting(0.0, "lambda1 of the code penalty lambda1*||h||_1", PENALTY)
    l2: float = setting(0.0, "lambda2 of the code penalty lambda2*||h||_F^2", PENALTY)
    alpha: float = setting(0.03, "L2 penalty alpha*(||W||^2 + ||V||^2) on the weights",
                           PENALTY)
    solver: str = setting("lbfgs", "adamw: minibatches, early-stopped on the validation part "
                          "when there is one; lbfgs: full batch on the training rows (all but "
                          "the validation part), the penalties alone control the fit",
                          Choice(SOLVERS))
    max_iter: int = setting(200, "iterations of --solver lbfgs", POS_INT)
    lr: float = setting(1e-3, "AdamW learning rate", Interval("float", 0.0, 10.0, closed="right"))
    weight_decay: float = setting(1e-2, "AdamW decoupled weight decay", PENALTY)
    batch_size: int = setting(64, "rows per minibatch", POS_INT)
    max_epochs: int = setting(200, "maximum epochs", POS_INT, cli="--epochs")
    patience: int = setting(20, "epochs without a better validation macro AUC before stopping",
                            POS_INT)
    imbalance: str = setting("pos_weight", "class-imbalance strategy (see docs)",
                             Choice(IMBALANCE_OPTIONS))
    focal_gamma: float = setting(2.0, "gamma of --imbalance focal", Interval("float", 0.0, 100.0))
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
    random_state: int = setting(DEFAULT_SEED, "seed of initialization, shuffling and splits "
                                "(on the command line: --seed)", NONNEG_INT, cli=False)
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
    holdout_from: int | None = setting(
        20000, "from this many training images on, the selection scores each setting on one "
        "patient-wise validation part (1/inner-folds of the patients) instead of the inner "
        "folds and deploys that one model: 5x cheaper where the part is large enough to be "
        "precise (none: always the inner folds)", Interval("int", 2, none_ok=True))
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
    max_pixels: int = setting(MAX_PIXELS, "images with more pixels are skipped and listed, "
                              "before decoding (decompression bombs)", POS_INT)
    engine: str = setting("auto", "forward-pass engine: onnxruntime (the backbone exported to "
                          "ONNX once, cached by its weights' hash; features equal to torch's "
                          "within float rounding), torch, any other engine registered in "
                          "medxfer.engine, or auto: onnxruntime on the CPU where it is installed "
                          "and the backbone exports, else torch", Kind(str))
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
                                 Interval("float", 0.0, 10.0, closed="right"))
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
class RunSettings:
    """The one seed of every command that draws random numbers."""

    seed: int = setting(DEFAULT_SEED, "random seed of patient splits, folds, initialization, "
                        "bootstrap resamples and corruption noise", NONNEG_INT)


@dataclass(frozen=True)
class ServeSettings:
    """The HTTP service (`medxfer serve`, medxfer.serve.create_app). Images and engine:
    ExtractSettings' max_pixels, engine and device."""

    host: str = setting("127.0.0.1", "address to bind (loopback unless told otherwise)", Kind(str))
    port: int = setting(8000, "TCP port", Interval("int", 1, 65535))
    max_upload_mb: float = setting(20.0, "larger uploads get 413", Interval("float", 0.0, 4096.0, closed="right"))
    max_batch: int = setting(8, "concurrent requests answered by one forward pass, at most "
                             "(1: one at a time)", POS_INT)
    batch_wait_ms: float = setting(2.0, "how long the first request of a batch waits for others",
                                   Interval("float", 0.0, MAX_BATCH_WAIT_MS))


@dataclass(frozen=True)
class DicomNodeSettings:
    """The DICOM node (`medxfer dicom-node`, medxfer.dicom_node.DicomNode). Images and
    engine: ExtractSettings' max_pixels, engine and device."""

    host: str = setting("127.0.0.1", "address to bind (loopback unless told otherwise)", Kind(str))
    port: int = setting(11112, "TCP port of the Storage SCP", Interval("int", 1, 65535))
    ae_title: str = setting("MEDXFER", "the node's own AE title (1-16 characters)", Kind(str))
    send_to: str | None = setting(None, "where reports go by C-STORE: AET@HOST:PORT (the PACS)",
                                  Kind(str, none_ok=True))
    dicomweb: str | None = setting(None, "or by STOW-RS to this DICOMweb base URL (e.g. "
                                   "http://127.0.0.1:8042/dicom-web)", Kind(str, none_ok=True))
    spool: str = setting("medxfer-spool", "folder holding what was acknowledged and not yet "
                         "answered; a restart on it resumes", Kind(str))
    allow_ae: str | None = setting(None, "calling AE titles accepted, comma-separated (none: any)",
                                   Kind(str, none_ok=True))
    tls_cert: str | None = setting(None, "TLS certificate (PEM) of the node; with --tls-key",
                                   Kind(str, none_ok=True))
    tls_key: str | None = setting(None, "TLS private key (PEM) of the node", Kind(str, none_ok=True))
    max_dataset_mb: float = setting(512.0, "larger datasets are refused (status A700)",
                                    Interval("float", 0.0, 4096.0, closed="right"))
    cam: bool = setting(False, "also send a Secondary Capture of the Grad-CAM overlay of each "
                        "finding at or above threshold, in a new series of the study", Kind(bool))
    keep_received: bool = setting(False, "keep each received image (spool/kept) after its "
                                  "report is sent, instead of deleting it", Kind(bool))
    retry_max_s: float = setting(300.0, "longest wait between two tries of a report that could "
                                 "not be sent (the wait doubles from 1 s)",
                                 Interval("float", 1.0, 86400.0))


@dataclass(frozen=True)
class StudySettings:
    """The paper's studies (`medxfer study`): folds, resampling, what each study varies."""

    folds: int = setting(5, "patient-wise outer folds (compare, imbalance, sensitivity, "
                         "efficiency)", Interval("int", 2))
    n_boot: int = setting(1000, "patient bootstrap resamples for every 95% CI", POS_INT)
    jobs: int = setting(0, "worker processes for the (model, fold) units of compare and "
                        "efficiency, each with its share of the cores; 0: one per core this "
                        "run may use (--threads, CPU affinity, cgroup quota); the results "
                        "equal the serial run's (1)", NONNEG_INT)
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
    external: str | None = setting(None, "shift: a second dataset (or features folder) from "
                                   "another site: train on DATA, test on its shared findings "
                                   "beside an in-site hold-out of the same size",
                                   Kind(str, none_ok=True))
    prior_shift: bool = setting(False, "shift --external: also report the calibration after "
                                "correcting the probabilities to the other site's prevalence "
                                "(known from its labels); never applied by default", Kind(bool))
    seed: int = setting(DEFAULT_SEED, "seed of folds, draws, corruption noise and models (on the "
                        "command line: --seed)", NONNEG_INT, cli=False)


# ---------------------------------------------------------------------------- grids (data)

#: What `medxfer train` chooses among by inner patient-wise CV (medxfer.head.BottleneckCV):
#: the bottleneck at k = 8 and 32 and the linear-head limit, each over its weight penalty.
DEFAULT_CV_GRID = ([dict(bottleneck_dim=k, alpha=a) for k in (8, 32) for a in (0.03, 0.1)]
                   + [dict(bottleneck_dim=None, alpha=a) for a in (1.0, 3.0, 10.0, 30.0, 100.0)])
#: The bottleneck and the linear-head parts of DEFAULT_CV_GRID.
BOTTLENECK_GRID = [g for g in DEFAULT_CV_GRID if g["bottleneck_dim"] is not None]
LINEAR_GRID = [g for g in DEFAULT_CV_GRID if g["bottleneck_dim"] is None]
#: The paper's method: the bottleneck with its code penalty lambda1 = lambda2 switched on.
PAPER_GRID = [g | {"l1": lam, "l2": lam} for g in BOTTLENECK_GRID for lam in (1e-4, 1e-3)]
#: DEFAULT_CV_GRID with the code penalty at 1e-3 on its bottleneck settings.
CODE_PENALTY_GRID = [g | ({"l1": 1e-3, "l2": 1e-3} if g["bottleneck_dim"] else {})
                     for g in DEFAULT_CV_GRID]
#: A wider grid of widths and penalties (`medxfer cv --tune`).
WIDE_CV_GRID = ([dict(bottleneck_dim=k, alpha=a) for k in (4, 8, 16, 32, 64)
                 for a in (0.01, 0.03, 0.1, 0.3)]
                + [dict(bottleneck_dim=None, alpha=a) for a in (0.3, 1.0, 3.0, 10.0, 30.0)])
#: `medxfer tune`'s one-pass grid: k x (lambda1 = lambda2) x alpha x imbalance (AdamW).
TUNE_GRID = [dict(bottleneck_dim=k, l1=lam, l2=lam, alpha=alpha, imbalance=imb)
             for k in (64, 256) for lam in (0.0, 1e-4, 1e-3, 1e-2) for alpha in (0.0, 1e-2)
             for imb in ("pos_weight", "focal")]
#: The sensitivity study: parameter -> values swept one at a time (the others at the chosen
#: point), and the lambda1 x lambda2 grid of its heat map.
SENSITIVITY_SWEEPS = {
    "l1": (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0),
    "l2": (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0),
    "bottleneck_dim": (2, 4, 8, 16, 32, 64, 128, 256),
    "alpha": (0.0, 1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0),
    "lr": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
}
SENSITIVITY_CODE_GRID = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)
#: The previous default of `medxfer train` (before inner-CV selection), kept as a cv row.
PREVIOUS_DEFAULT = dict(bottleneck_dim=256, l1=1e-4, l2=1e-4, alpha=1e-2, solver="adamw")
#: The tuned logistic regression's C grid (medxfer.baselines.TunedLogisticRegression).
LOGISTIC_CS = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
#: Its C grid in the demo: 1e-6..1e-2 (the upper half was never chosen on the sample and
#: takes minutes on 4,952-d features on 2 cores; docs/benchmarks.md).
DEMO_CS = tuple(float(c) for c in np.logspace(-6, -2, 9))
