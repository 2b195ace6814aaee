"""The source paper's studies, each one command (`medxfer study NAME DATA --out DIR`) and
one function, on cached features:

    compare      baselines and the method side by side (the paper's Table 1)
    imbalance    F1/AUC/minority recall from Balanced to Severe imbalance (its Figure 2)
    sensitivity  lambda1, lambda2, k, alpha, learning rate; a lambda1 x lambda2 heat map
    disturbance  noise, blur, contrast, gamma, JPEG, downsampling, rotation at 5 severities
    shift        PA -> AP, sex, age and any user-named groups, beside in-distribution
    efficiency   learning curves at 5-100% of the training patients

Every number has a patient-bootstrap 95% CI, every figure is written with the CSV of what
it plots, units of work are kept in a ledger so an interrupted run resumes, and
``index.html`` in the run folder links everything with the settings and the data
fingerprint.
"""

from __future__ import annotations

import logging

from .common import Ledger, StudyContext
from .compare import run_compare
from .disturbance import run_disturbance
from .efficiency import run_efficiency
from .imbalance import run_imbalance
from .page import write_index
from .sensitivity import run_sensitivity
from .shift import run_shift

STUDIES = {"compare": run_compare, "imbalance": run_imbalance, "sensitivity": run_sensitivity,
           "disturbance": run_disturbance, "shift": run_shift, "efficiency": run_efficiency}


def features_label(extract) -> str:
    """Folder name of a feature set: backbone-pooling-size."""
    from ..backbones import get_backbone_config

    size = extract.input_size or get_backbone_config(extract.backbone).input_size
    return f"{extract.backbone}-{extract.pooling}-{size}"


def open_study(data, out, *, extract=None, settings=None, head=None, progress: bool = False) -> StudyContext:
    """A StudyContext for ``data``: a features folder (used as it is) or a Dataset
    (extracted with ``extract`` into ``out/features/<backbone-pooling-size>``, resumable and
    reused by later runs). ``settings.backbones`` are extracted beside it for `compare`."""
    from dataclasses import replace
    from pathlib import Path

    from ..data import Dataset
    from ..features import FeatureSet, extract_with_settings
    from ..settings import ExtractSettings, HeadSettings, StudySettings

    extract = extract or ExtractSettings()
    settings = settings or StudySettings()
    out = Path(out)
    if isinstance(data, Dataset):
        folder = out / "features" / features_label(extract)
        fs = extract_with_settings(data, extract, folder, progress=progress)
        dataset = data
    else:
        folder = Path(data)
        fs = FeatureSet.load(folder)
        dataset = fs.dataset
    extra = {}
    for name in [b.strip() for b in (settings.backbones or "").split(",") if b.strip()]:
        ex = replace(extract, backbone=name, weights=None, input_size=None)
        sub = out / "features" / features_label(ex)
        extra[features_label(ex)] = extract_with_settings(dataset, ex, sub, progress=progress)
    return StudyContext(fs, out, settings, head or HeadSettings(), features_folder=folder,
                        extra_features=extra, progress=progress, extract=extract)


def run_study(name: str, ctx: StudyContext) -> dict:
    """Run one study (or "all", in the order above) and rewrite the run's index.html."""
    from ..errors import MedxferError, unknown_name_message

    names = list(STUDIES) if name == "all" else [name]
    for n in names:
        if n not in STUDIES:
            raise MedxferError(unknown_name_message("study", n, list(STUDIES) + ["all"]))
    out = {}
    inner = logging.getLogger("medxfer.head")  # one line per inner-CV setting is noise here
    level = inner.level
    inner.setLevel(max(level, logging.WARNING))
    try:
        for n in names:
            out[n] = STUDIES[n](ctx)
            write_index(ctx)
    finally:
        inner.setLevel(level)
    return out


__all__ = ["STUDIES", "Ledger", "StudyContext", "features_label", "open_study", "run_compare", "run_disturbance", "run_efficiency",
           "run_imbalance", "run_sensitivity", "run_shift", "run_study", "write_index"]
