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

Each study module registers its run function (:mod:`.registry`); a new module in this
package is found by pkgutil, so adding a study is one file.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from .registry import ALL, Study, all_studies, get_study, register_study, study_names, unregister_study

if TYPE_CHECKING:
    from .common import StudyContext

#: Served on first use (PEP 562), with the study modules, so that importing the registry
#: for the command line's choices does not import torch.
_LAZY = {"Ledger": "common", "StudyContext": "common", "write_index": "page"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    if name == "STUDIES":  # {name: run function}, in order
        return {s.name: s.run for s in all_studies()}
    if name.startswith("run_"):  # run_compare, run_shift, ...: each study's run function
        for s in all_studies():
            if s.run.__name__ == name:
                return s.run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    from .common import StudyContext

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
    external = None
    if settings.external:
        external = external_features(settings.external, fs, out, extract, progress=progress)
    return StudyContext(fs, out, settings, head or HeadSettings(), features_folder=folder,
                        extra_features=extra, progress=progress, extract=extract,
                        external_features=external)


def external_features(path, fs, out, extract, *, progress: bool = False):
    """Features of another site's data (``path``: a dataset or a features folder) made with
    the very backbone of ``fs`` (its identity, not only its name), extracted into
    ``out/external/<rows fingerprint>``; a features folder is checked against it."""
    from pathlib import Path

    from ..backbones import BackboneIdentity, rebuild_backbone
    from ..data import read_dataset
    from ..errors import FeatureCacheError
    from ..features import FeatureSet, extract_features, is_features_folder

    want = BackboneIdentity.from_dict(fs.manifest["backbone"])
    if is_features_folder(path):
        other = FeatureSet.load(path)
        diff = want.differences(other.manifest["backbone"])
        if diff:
            raise FeatureCacheError(f"--external features in '{path}' were made with another "
                                    f"backbone ({', '.join(diff)} differ); pass the dataset itself "
                                    "so it is extracted like DATA")
        return other
    ds = read_dataset(path)
    return extract_features(ds, rebuild_backbone(fs.manifest["backbone"]),
                            Path(out) / "external" / ds.fingerprint()[:12], progress=progress,
                            batch_size=extract.batch_size, num_workers=extract.workers,
                            engine=extract.engine, device=extract.device,
                            dtype=fs.manifest.get("dtype", "float16"))


def run_study(name: str, ctx: StudyContext) -> dict:
    """Run one study (or "all", in the registry's order) and rewrite the run's index.html."""
    from .page import write_index

    studies = all_studies() if name == ALL else [get_study(name)]
    out = {}
    inner = logging.getLogger("medxfer.head")  # one line per inner-CV setting is noise here
    level = inner.level
    inner.setLevel(max(level, logging.WARNING))
    try:
        for study in studies:
            out[study.name] = study.run(ctx)
            write_index(ctx)
    finally:
        inner.setLevel(level)
    return out


# Each study's run_<name> function is served by __getattr__ too, so a new study adds nothing here.
__all__ = ["ALL", "STUDIES", "Ledger", "Study", "StudyContext", "all_studies", "features_label",
           "get_study", "open_study", "register_study", "run_study", "study_names",
           "unregister_study", "write_index"]
