"""What every study shares: its inputs (:class:`StudyContext`), the ledger that makes a run
resumable, metrics with patient-bootstrap CIs, tables and figures written with the CSV of
what they show, and progress."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import textwrap
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .. import __version__
from ..features import FeatureSet
from ..metrics import bootstrap_metrics, fast_ap, macro_auc, macro_f1
from ..settings import HeadSettings, StudySettings

log = logging.getLogger("medxfer.studies")


@dataclass
class StudyContext:
    """The inputs of a study run.

    features : cached features of the dataset (rows, labels, patients, image paths).
    out : the run folder; each study writes ``out/<study>/``.
    settings : StudySettings.  head : the fixed-point model of the imbalance and
    sensitivity studies (HeadSettings).
    features_folder : where ``features`` live (named in the page).
    extra_features : {label: FeatureSet} of other backbones for `compare`.
    progress : show bars (a terminal); otherwise one log line per stage.
    extract : ExtractSettings of the run; the disturbance study extracts its corrupted test
        images with its engine and device.
    external_features : another site's features (StudySettings.external), made with the same
        backbone, for the shift study's out-of-site test.
    """

    features: FeatureSet
    out: Path
    settings: StudySettings = field(default_factory=StudySettings)
    head: HeadSettings = field(default_factory=HeadSettings)
    features_folder: Path | None = None
    extra_features: dict = field(default_factory=dict)
    progress: bool = False
    extract: object = None  # the ExtractSettings of the run
    external_features: FeatureSet | None = None  # another site's (shift --external)

    def __post_init__(self):
        self.out = Path(self.out)

    @property
    def X(self) -> np.ndarray:
        return self.features.X

    @property
    def Y(self) -> np.ndarray:
        return self.features.Y

    @property
    def groups(self) -> np.ndarray:
        return self.features.dataset.patient_ids

    @property
    def names(self) -> list[str]:
        return list(self.features.dataset.label_names)

    @property
    def backbone_label(self) -> str:
        b = self.features.manifest.get("backbone", {})
        pre = b.get("preprocessing") or {}
        return f"{b.get('name', 'features')}-{b.get('pooling', 'avg')}-{pre.get('size', '')}".rstrip("-")

    def fingerprint(self, *settings: str) -> dict:
        """What a study's units depend on: the features (images, labels, backbone), the
        patients and the metadata the studies split by, medxfer's version, the head and the
        named study ``settings`` (not n_boot or other settings that change no unit)."""
        m = self.features.manifest
        t = self.features.dataset.table
        cols = [c for c in ("patient_id", "view", "sex", "age") if c in t.columns]
        rows = hashlib.sha256(t[cols].astype(str).to_csv(index=False).encode()).hexdigest()
        s = asdict(self.settings)
        return {"dataset_fingerprint": m.get("dataset_fingerprint"), "n_rows": len(self.features),
                "rows_sha256": rows, "backbone": m.get("backbone"), "medxfer_version": __version__,
                "settings": {k: s[k] for k in ("seed",) + settings}, "head": asdict(self.head)}

    @property
    def units(self) -> "Ledger":
        """The run's cache of (model, fold) units shared between studies: compare's models
        on the outer folds are efficiency's 100% point (same features, rows, seed and
        model), read back instead of fitted again. Under ``out/units/``, fingerprinted like
        a study's ledger."""
        if getattr(self, "_units", None) is None:
            self._units = Ledger(self.out / "units", self.fingerprint())
        return self._units

    def folder(self, study: str) -> Path:
        f = self.out / study
        f.mkdir(parents=True, exist_ok=True)
        return f


class Ledger:
    """Finished units of work of one study, one .npz each under
    ``<study>/parts/<fingerprint>/``: written atomically, so a run killed at any moment
    resumes from its last finished unit. The fingerprint covers the features and the
    settings, so a changed setting never reuses stale parts."""

    def __init__(self, folder: Path, identity: dict):
        key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.folder = Path(folder) / "parts" / key
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "identity.json").write_text(json.dumps(identity, indent=1, default=str))
        self.hits = 0

    def _path(self, key: str) -> Path:
        return self.folder / (key.replace("/", "_") + ".npz")

    def get(self, key: str):
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arr, meta = z["array"], json.loads(str(z["meta"]))
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
            return None  # a torn or foreign file: compute the unit again
        self.hits += 1
        return arr, meta

    def put(self, key: str, array, meta: dict | None = None) -> None:
        path = self._path(key)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, array=np.asarray(array), meta=np.asarray(json.dumps(meta or {}, default=float)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def cached(self, key: str, compute):
        """``compute() -> (array, meta)`` unless the unit is already done."""
        hit = self.get(key)
        if hit is None:
            hit = compute()
            self.put(key, *hit)
        return hit


def in_parallel(ctx: StudyContext, calls: list) -> list:
    """``[call() for call in calls]``, in ``ctx.settings.jobs`` worker processes (0: one per
    core the run may use; :func:`medxfer.cores.run_units`): for a study's many independent
    bootstraps (each seeded, so the results are the serial run's)."""
    from ..cores import run_units

    return list(run_units(calls, ctx.settings.jobs))


def cached_units(ctx: StudyContext, ledger: "Ledger", units: list, on_unit=None) -> list:
    """``[(array, meta)]`` of each ``(key, compute)`` unit in ``units``, in order: read
    from the ledger, the missing ones computed in ``ctx.settings.jobs`` worker processes
    (:func:`medxfer.cores.resumable_units`) and put in the ledger as they arrive. A unit's
    result depends on its own seeded computation only, so the results are those of the
    serial run. ``on_unit(i)`` after each unit."""
    from ..cores import resumable_units

    done = []
    for i, result in resumable_units(units, get=ledger.get, put=lambda key, r: ledger.put(key, *r),
                                     jobs=ctx.settings.jobs):
        done.append(result)
        if on_unit is not None:
            on_unit(i)
    return done


class Progress:
    """A bar over a study's units on a terminal; a log line per stage otherwise."""

    def __init__(self, ctx: StudyContext, study: str, total: int):
        self.study = study
        self.bar = tqdm(total=total, desc=f"study {study}", unit="unit", disable=not ctx.progress,
                        dynamic_ncols=True)
        self.t0 = time.time()
        log.info("study %s: %d units of work", study, total)

    def step(self, n: int = 1, what: str = "") -> None:
        self.bar.update(n)
        if what:
            self.bar.set_postfix_str(what, refresh=False)

    def stage(self, line: str) -> None:
        log.info("study %s: %s", self.study, line)

    def close(self) -> float:
        self.bar.close()
        return time.time() - self.t0


# ---------------------------------------------------------------------------- metrics

def macro_ap(Y: np.ndarray, P: np.ndarray) -> float | None:
    """Mean average precision over findings with a positive."""
    out = []
    for j in range(Y.shape[1]):
        k = ~np.isnan(Y[:, j])
        if Y[k, j].sum() > 0:
            out.append(fast_ap(Y[k, j], P[k, j]))
    return float(np.mean(out)) if out else None


def beside_thresholded(Y, P, T):
    """(Y twice, P beside P - T + 0.5) side by side: F1 at thresholds T ((n, L), each row's
    fold model's) on P is F1 at 0.5 on P - T + 0.5, so columns L: of one bootstrap resample
    score at T and columns :L at the probabilities themselves (T None: P twice)."""
    shifted = P if T is None else P - T + 0.5
    return np.concatenate([Y, Y], axis=1), np.concatenate([P, shifted], axis=1)


def headline_ci(Y, P, T, groups, ctx: StudyContext) -> dict:
    """Macro AUC, macro average precision and macro F1 with CIs. F1 is at the thresholds
    ``T`` ((n, L): each row's fold model's, chosen on its training rows' out-of-fold
    predictions), or at 0.5 when the model keeps no such predictions (T None, or NaN rows)."""
    L = Y.shape[1]
    if T is not None:
        T = np.where(np.isnan(T), 0.5, T)
    Y2, both = beside_thresholded(Y, P, T)
    return with_ci(Y2, both, groups, ctx, {
        "macro_auc": lambda Yb, Pb: macro_auc(Yb[:, :L], Pb[:, :L]),
        "macro_ap": lambda Yb, Pb: macro_ap(Yb[:, :L], Pb[:, :L]),
        "macro_f1": lambda Yb, Pb: macro_f1(Yb[:, L:], Pb[:, L:])})


def with_ci(Y, P, groups, ctx: StudyContext, metrics: dict, *, seed_offset: int = 0) -> dict:
    """Flat {metric: value, metric_lo: ..., metric_hi: ...} with patient-bootstrap CIs."""
    return flat_ci(Y, P, groups, metrics, ctx.settings.n_boot, ctx.settings.seed + seed_offset)


def flat_ci(Y, P, groups, metrics: dict, n_boot: int, seed: int) -> dict:
    """:func:`with_ci` with the resampling given (a picklable call for :func:`in_parallel`)."""
    r = bootstrap_metrics(Y, P, metrics, groups=groups, n_boot=n_boot, seed=seed)
    out = {}
    for k, v in r.items():
        ci = v["ci95"] or [None, None]
        out |= {k: v["value"], f"{k}_lo": ci[0], f"{k}_hi": ci[1]}
    return out


# ---------------------------------------------------------------------------- outputs

def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if isinstance(v, float):
        # a setting like lambda = 1e-5 must not print as 0.000, nor a difference of
        # 0.000996391 with six digits: three significant ones
        return f"{v:.3g}" if v != 0 and abs(v) < 0.001 else f"{v:.3f}"
    return str(v)


def markdown_table(df: pd.DataFrame, ci_of=()) -> str:
    """A markdown table; each column in ``ci_of`` is shown as 'value (lo-hi)' and its
    _lo/_hi columns are folded into it."""
    shown = df.copy()
    for c in ci_of:
        if c in shown and f"{c}_lo" in shown:
            shown[c] = [f"{_fmt(v)} ({_fmt(lo)}, {_fmt(hi)})" if lo is not None and not pd.isna(lo)
                        else _fmt(v) for v, lo, hi in zip(df[c], df[f"{c}_lo"], df[f"{c}_hi"])]
            shown = shown.drop(columns=[f"{c}_lo", f"{c}_hi"])
    cols = list(shown.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in shown.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def write_table(folder: Path, name: str, df: pd.DataFrame, ci_of=()) -> Path:
    """``name``.csv (every number, CIs as _lo/_hi columns) and ``name``.md."""
    df.to_csv(folder / f"{name}.csv", index=False)
    (folder / f"{name}.md").write_text(markdown_table(df, ci_of) + "\n")
    return folder / f"{name}.csv"


def _figure(**kw):
    from matplotlib.figure import Figure

    return Figure(**kw)


def line_figure(folder: Path, name: str, df: pd.DataFrame, *, x: str, y: str, group: str | None,
                title: str, xlabel: str | None = None, ylabel: str | None = None,
                logx: bool = False, reference: float | None = None, panels: str | None = None) -> Path:
    """Lines of ``y`` over ``x`` (one per ``group``) with their CI band (``y``_lo/_hi),
    one panel per value of ``panels``; writes ``name``.png and ``name``.csv (the plotted
    rows)."""
    df.to_csv(folder / f"{name}.csv", index=False)
    keys = list(dict.fromkeys(df[panels])) if panels else [None]
    ncol = min(4, len(keys))
    nrow = (len(keys) + ncol - 1) // ncol
    fig = _figure(figsize=(4.2 * ncol, 3.3 * nrow), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, key in zip(axes, keys):
        part = df if key is None else df[df[panels] == key]
        for g in (list(dict.fromkeys(part[group])) if group else [None]):
            d = part if g is None else part[part[group] == g]
            xs = d[x].to_numpy()
            numeric = np.issubdtype(np.asarray(xs).dtype, np.number)
            pos = xs if numeric else np.arange(len(xs))
            ax.plot(pos, d[y].astype(float), marker="o", label=None if g is None else str(g))
            if f"{y}_lo" in d:
                ax.fill_between(pos, d[f"{y}_lo"].astype(float), d[f"{y}_hi"].astype(float), alpha=0.15)
            if not numeric:
                ax.set_xticks(pos, [str(v) for v in xs], rotation=45, fontsize=7)
        if reference is not None:
            ax.axhline(reference, color="gray", ls="--", lw=1)
        if logx:
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ticks = sorted(set(np.round(part[x].astype(float), 1)))
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=7)
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(textwrap.fill(title, 55) if key is None else f"{key}", fontsize=9)
        ax.set_xlabel(xlabel or x)
        ax.set_ylabel(ylabel or y)
        if group:
            ax.legend(fontsize=7)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    if panels:
        fig.suptitle(title, fontsize=10)
    fig.savefig(folder / f"{name}.png", dpi=110)
    return folder / f"{name}.png"


def heatmap_figure(folder: Path, name: str, df: pd.DataFrame, *, x: str, y: str, value: str,
                   title: str) -> Path:
    """A heat map of ``value`` over the ``x`` by ``y`` grid, with the numbers written in."""
    df.to_csv(folder / f"{name}.csv", index=False)
    table = df.pivot_table(index=y, columns=x, values=value)
    fig = _figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(table.to_numpy(dtype=float), cmap="viridis", origin="lower")
    ax.set_xticks(range(table.shape[1]), [f"{v:g}" for v in table.columns])
    ax.set_yticks(range(table.shape[0]), [f"{v:g}" for v in table.index])
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            ax.text(j, i, f"{table.iat[i, j]:.3f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(textwrap.fill(title, 55), fontsize=9)
    fig.colorbar(im, ax=ax)
    fig.savefig(folder / f"{name}.png", dpi=110)
    return folder / f"{name}.png"


def finish(ctx: StudyContext, study: str, result: dict, seconds: float) -> dict:
    """Write ``<study>/result.json`` (the study is done) and return the result."""
    skipped = list(getattr(ctx.features, "skipped", []) or [])
    # Images the extraction could not decode are not in any row of any study: counted here,
    # and named in the features folder's problems.csv.gz.
    result = {"study": study, "seconds": round(seconds, 1), "medxfer_version": __version__,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "images_skipped_at_extraction": len(skipped),
              "images_used": int(len(ctx.features))} | result
    if skipped:
        log.warning("study %s: %d image(s) of the dataset could not be decoded at extraction and "
                    "are in no row (listed in the features folder's problems.csv.gz)", study, len(skipped))
    (ctx.folder(study) / "result.json").write_text(json.dumps(result, indent=2, default=str))
    log.info("study %s: done in %.0f s; %s", study, seconds, ctx.folder(study))
    return result
