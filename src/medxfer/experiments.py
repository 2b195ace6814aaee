"""Patient-wise cross-validation of the paper's model beside its baselines, on one set of
folds, with pooled out-of-fold predictions, per-fold spread and paired differences.

Every model gets only the outer training part and makes its own choices on it (nested CV).
Models compared (all on the same cached features and folds):
    logistic_regression        one L2 logistic regression per finding, C by inner
                               patient-wise CV (the baseline a reviewer runs first)
    linear_head                the network without bottleneck (a linear probe), its weight
                               penalty chosen by inner CV, fold models averaged
    bottleneck_cv              BottleneckCV over DEFAULT_CV_GRID (low-rank bottleneck or
                               linear head or their blend, by inner patient-wise CV), fold
                               models averaged, raw probabilities
    medxfer_train              what `medxfer train` deploys: bottleneck_cv followed by Platt
                               scaling fitted on its inner out-of-fold predictions
    bottleneck_cv_code_penalty the same grid with the paper's code penalty on
                               (lambda1 = lambda2 = 1e-3 on the bottleneck settings)
    bottleneck_adamw_es        the previous default: k=256, lambda1=lambda2=1e-4, alpha=1e-2,
                               AdamW minibatches, early stopping on one validation split
With tune=True, bottleneck_cv_wide (a wider grid of widths and penalties) is added.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from .backbones import BackboneIdentity
from .baselines import TunedLogisticRegression
from .features import FeatureSet
from .head import BottleneckClassifier, BottleneckCV
from .metrics import (apply_calibration, choose_thresholds, evaluate_predictions, fit_calibration,
                      macro_auc, paired_bootstrap_auc, threshold_fallbacks)
from .settings import (BOTTLENECK_GRID, CODE_PENALTY_GRID, DEFAULT_CV_GRID, LINEAR_GRID,
                       PAPER_GRID, PREVIOUS_DEFAULT, WIDE_CV_GRID, HeadSettings, defaults)
from .splits import check_no_patient_overlap, patient_kfold

log = logging.getLogger(__name__)

class CalibratedBottleneckCV:
    """What `medxfer train` deploys: BottleneckCV, then per-finding Platt scaling fitted on
    its out-of-fold predictions (medxfer.model_io.package does the same)."""

    def __init__(self, grid=None, *, n_repeats: int = 1, random_state: int = 0):
        self.grid = grid
        self.n_repeats = n_repeats
        self.random_state = random_state

    def fit(self, X, Y, *, groups):
        self.cv_ = BottleneckCV(self.grid, n_repeats=self.n_repeats,
                                random_state=self.random_state).fit(X, Y, groups=groups)
        self.best_params_ = self.cv_.best_params_
        _, Yv, Pv = self.cv_.validation_
        self.calibration_ = fit_calibration(Yv, Pv, "platt")
        return self

    def predict_proba(self, X):
        return apply_calibration(self.cv_.predict_proba(X), self.calibration_)

    @property
    def validation_(self):
        """(X, Y, calibrated out-of-fold probabilities) of the training rows."""
        X, Y, P = self.cv_.validation_
        return X, Y, apply_calibration(P, self.calibration_)


def _bottleneck(**over):
    return lambda seed: BottleneckClassifier(**(defaults(HeadSettings) | over | {"random_state": seed}))


def _cv(grid):
    return lambda seed: BottleneckCV(grid, random_state=seed)


def _lr(seed):
    return TunedLogisticRegression(random_state=seed)


def _train(seed):
    return CalibratedBottleneckCV(random_state=seed)


#: Every named model of `medxfer cv` and the studies: name -> factory(seed) of an estimator
#: with fit(X, Y, groups=) and predict_proba. One name means one model everywhere.
MODELS = {
    "logistic_regression": _lr,  # C by inner patient-wise CV: the baseline a reviewer runs first
    "linear_head": _cv(LINEAR_GRID),  # the network without bottleneck, alpha by inner CV
    "bottleneck_cv": _cv(DEFAULT_CV_GRID),  # what train selects, raw probabilities (no Platt)
    "medxfer_train": _train,  # what `medxfer train` deploys
    "bottleneck_cv_code_penalty": _cv(CODE_PENALTY_GRID),
    "bottleneck_adamw_es": _bottleneck(**PREVIOUS_DEFAULT),
    "bottleneck_cv_wide": _cv(WIDE_CV_GRID),
    # the compare study's rows: the structure without and with the paper's regularizer
    "bottleneck_no_code_penalty": lambda seed: BottleneckCV(BOTTLENECK_GRID, blend=False,
                                                            random_state=seed),
    "paper_method": lambda seed: BottleneckCV(PAPER_GRID, blend=False, random_state=seed),
}

#: The lineups: which of MODELS each command or study runs, in its table's order.
LINEUPS = {
    "cv": ("logistic_regression", "linear_head", "bottleneck_cv", "medxfer_train",
           "bottleneck_cv_code_penalty", "bottleneck_adamw_es"),
    "cv_tune": ("logistic_regression", "linear_head", "bottleneck_cv", "medxfer_train",
                "bottleneck_cv_code_penalty", "bottleneck_adamw_es", "bottleneck_cv_wide"),
    "compare": ("logistic_regression", "linear_head", "bottleneck_no_code_penalty",
                "paper_method", "medxfer_train"),
    "efficiency": ("logistic_regression", "linear_head", "medxfer_train"),
}


def lineup(name: str) -> dict:
    """name -> factory(seed) of the lineup ``name`` (a key of LINEUPS), in its order."""
    return {m: MODELS[m] for m in LINEUPS[name]}


def default_models(tune: bool = False) -> dict:
    """The models of `medxfer cv` (``tune``: with the wider grid)."""
    return lineup("cv_tune" if tune else "cv")


def _chosen(est) -> list[dict] | None:
    if not hasattr(est, "best_params_"):
        return None
    bp = est.best_params_ if isinstance(est.best_params_, list) else [est.best_params_]
    return [{p: b[p] for p in ("bottleneck_dim", "alpha", "l1", "l2")} for b in bp]


def rows_key(*parts) -> str:
    """A short hash of row-index arrays: a cached unit is found again only for the very
    same training and test rows."""
    import hashlib

    h = hashlib.sha256()
    for p in parts:
        h.update(np.asarray(p, dtype=np.int64).tobytes() + b"|")
    return h.hexdigest()[:12]


def training_thresholds(est) -> list | None:
    """F1-best per-finding thresholds chosen on the estimator's out-of-fold predictions of
    its own training rows (``validation_``), as `medxfer train` chooses them; None when it
    keeps none."""
    v = getattr(est, "validation_", None)
    if v is None:
        return None
    return [float(t) for t in choose_thresholds(np.asarray(v[1]), np.asarray(v[2]))]


def thresholds_rule(r: dict, name: str) -> str:
    """How a model's F1 thresholds in a :func:`fold_predictions` result were chosen, with
    the fallbacks counted: "training folds", "training folds (3 finding-folds at 0.5)" or
    "0.5" (a model that keeps no training predictions)."""
    if r["thresholds"].get(name) is None:
        return "0.5"
    n = r.get("threshold_fallbacks", {}).get(name, 0)
    return "training folds" + (f" ({n} finding-folds at 0.5: no both classes)" if n else "")


def _fit_unit(make, seed: int, X, Y, groups, tr, te):
    """One (model, fold) unit: fit on the fold's training rows, predict its test rows."""
    t = time.time()
    est = make(seed).fit(X[tr], Y[tr], groups=groups[tr])
    pred = est.predict_proba(X[te])
    v = getattr(est, "validation_", None)
    return pred, {"seconds": time.time() - t, "chosen": _chosen(est),
                  "thresholds": training_thresholds(est),
                  "threshold_fallbacks": None if v is None else len(threshold_fallbacks(np.asarray(v[1])))}


def unit_key(tag: str, name: str, k: int, fold) -> str:
    """A (model, fold) unit's key in a study's ledger."""
    return f"{tag}{name}-fold{k + 1}-{rows_key(*fold)}"


def shared_unit_key(name: str, seed: int, fold) -> str:
    """The same unit's key in the run's shared cache: model, seed and rows only."""
    return f"{name}-seed{seed}-{rows_key(*fold)}"


def fit_units(models: dict, X, Y, groups, cells, *, seed: int = 0, store=None, shared=None,
              jobs: int = 1):
    """Every (model, fold) unit of several fold lists at once: ``cells`` is [(tag, folds)]
    (e.g. each learning-curve point's folds). Yields ``((cell index, fold index, model
    name), (pred, meta))`` in that order (cell, fold, model). Units already in ``store``
    (or ``shared``) are read back; the others are fitted in ``jobs`` worker processes from
    one queue (:func:`medxfer.cores.resumable_units`), so no worker waits at the end of a
    cell for the last unit of it, and each is put in ``store`` (and ``shared``) as it
    arrives."""
    from functools import partial

    from .cores import resumable_units

    for _, folds in cells:
        for tr, te in folds:
            check_no_patient_overlap(groups, tr, te)
    units = [(c, k, name) for c, (_, folds) in enumerate(cells) for k in range(len(folds))
             for name in models]
    key = lambda c, k, name: unit_key(cells[c][0], name, k, cells[c][1][k])  # noqa: E731
    skey = lambda c, k, name: shared_unit_key(name, seed, cells[c][1][k])  # noqa: E731

    def get(u):
        hit = store.get(key(*u)) if store is not None else None
        if hit is None and shared is not None:  # a unit another study of the run fitted
            hit = shared.get(skey(*u))
            if hit is not None and store is not None:
                store.put(key(*u), *hit)
        return hit

    def put(u, result):
        if store is not None:
            store.put(key(*u), *result)
        if shared is not None:
            shared.put(skey(*u), *result)

    calls = [(u, partial(_fit_unit, models[u[2]], seed, X, Y, groups, *cells[u[0]][1][u[1]]))
             for u in units]
    for i, result in resumable_units(calls, get=get, put=put, jobs=jobs):
        yield units[i], result


def fold_predictions(models: dict, X, Y, groups, folds, *, seed: int = 0, store=None,
                     tag: str = "", on_unit=None, on_fold=None, jobs: int = 1,
                     shared=None) -> dict:
    """Out-of-fold probabilities of each model on the same folds: fit on each fold's
    training rows, predict its test rows.

    Parameters
    ----------
    models : name -> factory(seed) of an estimator with fit(X, Y, groups=) and predict_proba.
    folds : list of (train rows, test rows); test rows of different folds are disjoint.
    store : optional object with ``get(key) -> (array, meta) or None`` and ``put(key, array,
        meta)`` (a study's ledger): finished (model, fold) units are read back, not refitted,
        so an interrupted run resumes. ``tag`` prefixes the keys.
    on_unit : called with (model name, fold number) after each unit.
    on_fold : called with (fold number, {model name: that fold's macro AUC}) after each fold.
    shared : optional store of the same kind for the whole run (the studies' unit cache,
        :attr:`medxfer.studies.common.StudyContext.units`), keyed by model name, seed and
        rows only (no ``tag``): a unit one study fitted (compare's models on the full
        folds) is read back by another (efficiency's 100% point), never fitted twice.
        A model name means one model everywhere (:data:`MODELS`), so the key is enough.
    jobs : worker processes (joblib) for the units not in ``store``, each with its share of
        the cores (0: one per core this process was given, :func:`medxfer.cores.worker_split`);
        every unit is seeded by ``seed`` alone, so the results are those of the serial run
        (jobs=1), in the same order.

    Returns {"oof": {name: (n, L) with NaN outside the test rows}, "per_fold": {name: [macro
    AUC of each fold]}, "seconds": {name}, "chosen": [{model, fold, chosen}],
    "threshold_fallbacks": {name: findings x folds whose threshold stayed at 0.5},
    "thresholds": {name: (n, L) thresholds of each row's fold model (chosen on its training
    rows, :func:`training_thresholds`), or None for a model that keeps no such predictions}}.
    """
    units = ((k, name, r) for (_, k, name), r in fit_units(
        models, X, Y, groups, [(tag, folds)], seed=seed, store=store, shared=shared, jobs=jobs))
    return collect_folds(models, Y, folds, units, on_unit=on_unit, on_fold=on_fold)


def collect_folds(models: dict, Y, folds, units, *, on_unit=None, on_fold=None) -> dict:
    """:func:`fold_predictions`' result from its units: ``units`` yields (fold index, model
    name, (pred, meta)) in the order fold, model (as :func:`fit_units` does)."""
    Y = np.asarray(Y)
    oof = {m: np.full(Y.shape, np.nan) for m in models}
    thresholds = {m: np.full(Y.shape, np.nan) for m in models}
    per_fold = {m: [] for m in models}
    seconds = {m: 0.0 for m in models}
    chosen, fallbacks = [], {}
    last = list(models)[-1]
    for k, name, (pred, meta) in units:
        te = folds[k][1]
        oof[name][te] = pred
        if meta.get("thresholds") is not None:
            thresholds[name][te] = np.asarray(meta["thresholds"])[None, :]
        seconds[name] += meta["seconds"]
        if meta.get("threshold_fallbacks") is not None:
            fallbacks[name] = fallbacks.get(name, 0) + int(meta["threshold_fallbacks"])
        if meta.get("chosen"):
            chosen.append({"model": name, "fold": k + 1, "chosen": meta["chosen"]})
        per_fold[name].append(macro_auc(Y[te], oof[name][te]))
        if on_unit is not None:
            on_unit(name, k + 1)
        if on_fold is not None and name == last:  # the fold's units come in the models' order
            on_fold(k + 1, {m: per_fold[m][-1] for m in models})
    thresholds = {m: None if np.isnan(t).all() else t for m, t in thresholds.items()}
    return {"oof": oof, "per_fold": per_fold, "seconds": seconds, "chosen": chosen,
            "thresholds": thresholds, "threshold_fallbacks": fallbacks}


def cross_validate(fs: FeatureSet, *, n_splits: int = 5, seed: int = 0, tune: bool = False,
                   models: dict | None = None, n_boot: int = 1000, progress=None,
                   on_unit=None) -> dict:
    """Out-of-fold predictions and metrics for each model on the same patient-wise folds.

    Returns {"folds": n, "models": {name: {"pooled": metrics of pooled OOF predictions,
    "per_fold_macro_auc": [...], "mean", "sd", "seconds"}}, "paired_vs_logistic_regression":
    {name: paired bootstrap of the macro-AUC difference}, "oof": {name: (n, L) array}}.
    """
    X, Y, groups = fs.X, fs.Y, fs.dataset.patient_ids
    names = list(fs.dataset.label_names)
    folds = patient_kfold(groups, n_splits, Y=Y, seed=seed)
    models = dict(models or default_models(tune))

    def fold_done(k, aucs):
        line = f"fold {k}/{n_splits}: " + ", ".join(
            f"{n} {'n/a' if v is None else format(v, '.3f')}" for n, v in aucs.items())
        log.info(line)
        if progress is not None:
            progress(k, n_splits, line)

    r = fold_predictions(models, X, Y, groups, folds, seed=seed, on_unit=on_unit, on_fold=fold_done)
    oof, per_fold, seconds, chosen = r["oof"], r["per_fold"], r["seconds"], r["chosen"]
    out = {"folds": n_splits, "seed": seed, "n_images": int(len(Y)),
           "n_patients": int(len(np.unique(groups))), "models": {}, "paired_vs_logistic_regression": {}}
    for name in models:
        pooled = evaluate_predictions(Y, oof[name], names, groups=groups, n_boot=n_boot, seed=seed)
        vals = [v for v in per_fold[name] if v is not None]
        out["models"][name] = {"pooled_macro_auc": pooled["macro_auc"],
                               "pooled_macro_auc_ci95": pooled["macro_auc_ci95"],
                               "per_fold_macro_auc": per_fold[name],
                               "mean": float(np.mean(vals)) if vals else None,
                               "sd": float(np.std(vals)) if vals else None,
                               "seconds": round(seconds[name], 1), "pooled": pooled}
        if name != "logistic_regression" and "logistic_regression" in models:
            out["paired_vs_logistic_regression"][name] = paired_bootstrap_auc(
                Y, oof["logistic_regression"], oof[name], groups=groups, n_boot=n_boot, seed=seed)
    if chosen:
        out["tuned_choices"] = chosen
    out["oof"] = oof
    return out


def paired_differences(result: dict, Y, groups, pairs=None, *, n_boot: int = 1000) -> dict:
    """Paired patient-bootstrap macro-AUC differences between models of one
    :func:`cross_validate` result (its ``oof`` predictions of labels ``Y`` of patients
    ``groups``: the same images and folds).

    pairs : [(a, b), ...] (default: every pair in the result's model order). Returns
    {"b - a": paired bootstrap of b - a}. This, not the fold SD, is the yardstick for
    "model b beats model a": the fold SD mixes fold-to-fold variation that both models share.
    """
    oof = result["oof"]
    names = list(result["models"])
    pairs = pairs or [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    return {f"{b} - {a}": paired_bootstrap_auc(Y, oof[a], oof[b], groups=groups, n_boot=n_boot,
                                               seed=result["seed"]) for a, b in pairs}


def compare_feature_sets(fs_a: FeatureSet, fs_b: FeatureSet, *, models: dict, n_splits: int = 5,
                         seed: int = 0, n_boot: int = 1000, progress=None) -> dict:
    """Is feature set B better than A for each model? The same models on the same
    patient-wise outer folds of the same images (each choosing its own settings inside every
    outer training part), then per model the paired patient-bootstrap difference of the
    pooled out-of-fold macro AUC, B - A, with its 95% CI.

    Returns {"a": cross_validate result on A (without predictions), "b": the same on B,
    "paired": {model: paired bootstrap of B - A}}.
    """
    ids_a = fs_a.dataset.table["image_id"].to_numpy()
    ids_b = fs_b.dataset.table["image_id"].to_numpy()
    if len(ids_a) != len(ids_b) or (ids_a != ids_b).any():
        raise ValueError("the two feature sets hold other images (or another order); extract "
                         "both from the same dataset")
    ra = cross_validate(fs_a, n_splits=n_splits, seed=seed, models=models, n_boot=n_boot,
                        progress=progress)
    rb = cross_validate(fs_b, n_splits=n_splits, seed=seed, models=models, n_boot=n_boot,
                        progress=progress)
    paired = {m: paired_bootstrap_auc(fs_a.Y, ra["oof"][m], rb["oof"][m],
                                      groups=fs_a.dataset.patient_ids, n_boot=n_boot, seed=seed)
              for m in models}
    strip = lambda r: {k: v for k, v in r.items() if k != "oof"}  # noqa: E731
    return {"a": strip(ra), "b": strip(rb), "paired": paired}


def concat_features(folders) -> FeatureSet:
    """Several features folders of the same images side by side (columns concatenated),
    e.g. three backbones; refuses folders whose rows differ."""
    sets = [FeatureSet.load(f) for f in folders]
    ids = sets[0].dataset.table["image_id"].to_numpy()
    for f, fs in zip(folders[1:], sets[1:]):
        if len(fs) != len(ids) or (fs.dataset.table["image_id"].to_numpy() != ids).any():
            raise ValueError(f"features folder '{f}' holds other images (or another order) "
                             f"than '{folders[0]}'; extract both from the same dataset")
    X = np.hstack([fs.features.astype(np.float32) for fs in sets])
    members = tuple(BackboneIdentity.from_dict(fs.manifest["backbone"]) for fs in sets)
    ident = BackboneIdentity(name="+".join(m.name for m in members), feature_dim=int(X.shape[1]),
                             pooling="+".join(dict.fromkeys(str(m.pooling) for m in members)),
                             members=members)
    manifest = sets[0].manifest | {"backbone": ident.as_dict()}
    return FeatureSet(X, sets[0].dataset, manifest, sets[0].skipped)


def write_cv(result: dict, out: str | Path, *, title: str) -> Path:
    """cv.json (everything but the predictions), cv.md (the table) and
    oof_predictions.npz (each model's pooled out-of-fold probabilities) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "oof_predictions.npz", **result["oof"])
    (out / "cv.json").write_text(json.dumps({k: v for k, v in result.items() if k != "oof"},
                                            indent=2, default=str))
    (out / "cv.md").write_text(f"# {title}\n\n{cv_table(result)}\n")
    return out


def cv_table(result: dict) -> str:
    """Markdown table of a :func:`cross_validate` result."""
    lines = ["| model | pooled OOF macro AUC (95% CI) | per-fold mean ± SD | vs logistic regression (95% CI) |",
             "|---|---|---|---|"]
    for name, m in result["models"].items():
        ci = m["pooled_macro_auc_ci95"]
        d = result["paired_vs_logistic_regression"].get(name)
        diff = "—" if d is None else f"{d['difference']:+.3f} ({d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f})"
        lines.append(f"| {name} | {m['pooled_macro_auc']:.3f} ({ci[0]:.3f}-{ci[1]:.3f}) | "
                     f"{m['mean']:.3f} ± {m['sd']:.3f} | {diff} |")
    return "\n".join(lines)
