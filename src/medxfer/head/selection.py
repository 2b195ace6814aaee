"""Penalties chosen by inner patient-wise K-fold CV, and the fold models averaged.

On a few hundred radiographs, one early-stopping split is noise: the epoch it picks and the
validation AUC it reports swing with which patients fell into it. :class:`BottleneckCV`
instead trains every setting of a small grid full-batch (L-BFGS) on each of K patient-wise
folds' training parts, scores it by the macro AUC of the pooled out-of-fold predictions,
keeps the best setting, and deploys the average of its K fold models (R*K with n_repeats=R). Each training row was
held out of exactly one fold, so the out-of-fold predictions (``validation_``) are
predictions of the deployed members on patients they never saw (each row by the member(s)
that did not train on it, not by the average): calibration and thresholds are fitted on
them.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from ..settings import (DEFAULT_CV_GRID, HeadSettings, SelectionSettings, check_of, check_value,
                        defaults)
from ..splits import patient_kfold
from .estimator import FEATURE_DTYPES, BottleneckClassifier, clear_fitted, ravel_label_column, task_macro_auc
from .joint import fit_lbfgs_shared
from .losses import HeadLoss

log = logging.getLogger(__name__)

#: BottleneckCV's own parameters, checked against the `medxfer train` options they mirror.
CONSTRAINTS = {"n_splits": ("inner_folds", SelectionSettings),
               "n_repeats": ("inner_repeats", SelectionSettings),
               "holdout_from": ("holdout_from", SelectionSettings)}
_S = defaults(SelectionSettings)

def _auc(Y, P) -> float:
    return task_macro_auc(Y, P, "multilabel")


class BottleneckCV(ClassifierMixin, BaseEstimator):
    """Inner-CV selection over ``grid`` and averaging over folds (multi-label y).

    Parameters
    ----------
    grid : list of dicts of BottleneckClassifier parameters (default DEFAULT_CV_GRID).
    params : base parameters every setting starts from (default: HeadSettings with
        solver="lbfgs"; validation_fraction is always 0: the folds do the validation).
    n_splits : K of the patient-wise inner folds.
    n_repeats : R, the number of K-fold partitions (seeds random_state .. random_state+R-1).
        Each setting's out-of-fold predictions are averaged over the R partitions before
        they are scored (a steadier choice than one partition's), and all R*K fold models
        are averaged in the deployed model.
    holdout_from : from this many rows on, one patient-wise validation part (the first of
        the K folds, 1/K of the patients) replaces the K folds and the repeats: every setting
        is trained once on the rest, scored on that part, and the chosen one's model is
        deployed (None: always K folds). At ChestX-ray14's size the part holds thousands of
        patients, K times cheaper than the folds (docs/full_scale.md).
    blend : also try the average of the best bottleneck setting and the best linear-head
        setting, and keep it when its pooled out-of-fold macro AUC is higher than the best
        single setting's (then ``best_params_`` lists both and all 2*R*K fold models average).
    random_state : seed of the folds and of every member.

    Fitted attributes: ``best_params_``, ``best_score_`` (pooled out-of-fold macro AUC of
    the chosen setting: optimistic, it won the selection), ``cv_results_`` (one row per
    setting), ``best_estimator_`` (a BottleneckClassifier whose members are the R*K fold
    models), ``validation_`` (X, Y, out-of-fold probabilities of the chosen setting; with
    the holdout, those of the validation part), ``validation_index_`` (holdout only: its
    rows), ``selection_`` ("inner_cv" or "holdout").

    With solver "lbfgs" (the default) the settings of a fold are trained together, each by
    its own L-BFGS, sharing every pass over the fold's rows (:mod:`medxfer.head.joint`).
    """

    def __init__(self, grid=None, *, params=None, n_splits=_S["inner_folds"],
                 n_repeats=_S["inner_repeats"], holdout_from=_S["holdout_from"], blend=True,
                 random_state=0):
        self.grid = grid
        self.params = params
        self.blend = blend
        self.n_splits = n_splits
        self.n_repeats = n_repeats
        self.holdout_from = holdout_from
        self.random_state = random_state

    def _base(self) -> dict:
        return (defaults(HeadSettings) | {"solver": "lbfgs"} | dict(self.params or {})
                | {"validation_fraction": 0.0, "n_ensemble": 1, "refit": False,
                   "random_state": self.random_state})

    def fit(self, X, Y, *, groups=None, progress=None):
        clear_fitted(self)  # e.g. no blend_score_ left from an earlier fit
        if Y is None:
            raise ValueError("BottleneckCV requires y to be passed, but the target y is None")
        X = validate_data(self, X, dtype=FEATURE_DTYPES, ensure_min_samples=2)
        Y = ravel_label_column(np.asarray(Y))
        if Y.ndim == 1:
            # Single-label y (binary or multiclass): selected one-vs-rest on its one-hot
            # columns, probabilities renormalized over the classes (scikit-learn's contract).
            check_classification_targets(Y)
            self.classes_, codes = np.unique(Y, return_inverse=True)
            if len(self.classes_) < 2:
                raise ValueError(f"BottleneckCV needs at least 2 classes in y; got 1 class "
                                 f"({self.classes_[0]!r})")
            Y = np.eye(len(self.classes_), dtype=np.float32)[codes]
        Y = np.asarray(Y, dtype=np.float32)
        if Y.ndim != 2 or len(Y) != len(X):
            raise ValueError(f"BottleneckCV needs multilabel Y of shape (n_samples, n_labels) "
                             f"or a 1-D y of n_samples={len(X)} classes; got {Y.shape}")
        for name, (field_name, table) in CONSTRAINTS.items():
            check_value(name, getattr(self, name), check_of(table, field_name), "BottleneckCV")
        groups = np.arange(len(X)) if groups is None else np.asarray(groups)
        grid = list(self.grid or DEFAULT_CV_GRID)
        base = self._base()
        settings = [base | g for g in grid]
        for s in settings:
            BottleneckClassifier(**s).validate_params()
        n_groups = len(np.unique(groups.astype(str)))
        if n_groups < 2:
            raise ValueError("BottleneckCV needs at least 2 patients (groups) for its inner CV")
        # Fewer patients than folds: one patient per fold (as TunedLogisticRegression does).
        holdout = self.holdout_from is not None and len(X) >= self.holdout_from
        partitions = [patient_kfold(groups, min(self.n_splits, n_groups), Y=Y, seed=self.random_state + r)
                      for r in range(self.n_repeats)]
        if holdout:  # one fold of the first partition is the validation part
            tr, te = partitions[0][0]
            partitions = [[(tr, te)]]
            self.validation_index_ = np.sort(te)
            scored = self.validation_index_
        else:
            scored = np.arange(len(X))
        self.selection_ = "holdout" if holdout else "inner_cv"
        oofs = [np.zeros(Y.shape, dtype=np.float32) for _ in settings]
        members: list[list] = [[] for _ in settings]
        seconds = np.zeros(len(settings))
        shared = all(st["solver"] == "lbfgs" and st["imbalance"] != "balanced_sampler"
                     for st in settings)
        n_fits, done = sum(len(f) for f in partitions), 0
        for r, folds in enumerate(partitions):  # repeat r: as a run with seed random_state + r
            for tr, te in folds:
                t0 = time.time()
                seed = self.random_state + r
                if shared:  # every setting's L-BFGS shares each pass over the fold's rows
                    nets, _, _ = fit_lbfgs_shared(X, Y[tr], settings, seed=seed, rows=tr)
                    fitted = [BottleneckClassifier.from_nets(st | {"random_state": seed}, [net],
                                                             task="multilabel") for st, net in zip(settings, nets)]
                    seconds += (time.time() - t0) / len(settings)
                else:
                    fitted = []
                    for i, st in enumerate(settings):
                        t1 = time.time()
                        fitted.append(BottleneckClassifier(**(st | {"random_state": seed})).fit(
                            X[tr], Y[tr], groups=groups[tr]))
                        seconds[i] += time.time() - t1
                for i, m in enumerate(fitted):
                    oofs[i][te] += m.predict_proba(X[te]) / len(partitions)
                    members[i].append(m)
                done += 1
                log.info("fold %d/%d: %d settings trained in %.1f s", done, n_fits,
                         len(settings), time.time() - t0)
        runs = []  # (score, setting, fold members, oof) per grid point
        self.cv_results_ = []
        for i, (g, st) in enumerate(zip(grid, settings)):
            score = _auc(Y[scored], oofs[i][scored])
            runs.append((score, st, members[i], oofs[i]))
            self.cv_results_.append(dict(g) | {"oof_macro_auc": score,
                                               "seconds": round(float(seconds[i]), 2)})
            log.info("setting %d/%d %s: %s macro AUC %s", i + 1, len(grid), g,
                     "validation" if holdout else "out-of-fold",
                     "n/a (no finding has both classes in the folds)" if np.isnan(score)
                     else f"{score:.4f}")
            if progress is not None:
                progress(i + 1, len(grid), g, score)
        ok = [r for r in runs if not np.isnan(r[0])]
        if not ok:
            raise ValueError("no setting gave a defined out-of-fold macro AUC: every finding "
                             "needs positives and negatives among the training rows")
        chosen = [max(ok, key=lambda r: r[0])]
        if self.blend:
            # The best low-rank bottleneck and the best linear head make different errors;
            # their average is kept when its out-of-fold AUC beats the better one alone.
            low = [r for r in ok if r[1]["bottleneck_dim"] is not None]
            lin = [r for r in ok if r[1]["bottleneck_dim"] is None]
            if low and lin:
                pair = [max(low, key=lambda r: r[0]), max(lin, key=lambda r: r[0])]
                blend = (pair[0][3] + pair[1][3]) / 2
                self.blend_score_ = _auc(Y[scored], blend[scored])
                if self.blend_score_ > chosen[0][0]:
                    chosen = pair
        self.best_params_ = [r[1] for r in chosen] if len(chosen) > 1 else chosen[0][1]
        oof = np.mean([r[3] for r in chosen], axis=0).astype(np.float32)[scored]
        Xs = X if not holdout else X[scored]
        self.best_score_ = _auc(Y[scored], oof)
        members = [m for r in chosen for m in r[2]]
        terms = [HeadLoss(m, "multilabel", Y, Y.shape[1]).terms(m.members_[0], X, Y)
                 for m in members]  # the chosen members' penalties on every training row
        self.best_estimator_ = BottleneckClassifier.from_nets(
            chosen[0][1], [m.members_[0] for m in members], task="multilabel", best_epoch=0,
            best_score=self.best_score_, validation=(Xs, Y[scored], oof), loss_terms=terms[0])
        self.best_estimator_.member_loss_terms_ = terms
        self.validation_ = (Xs, Y[scored], oof)
        self.n_outputs_ = Y.shape[1]
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Mean probability of the fold models, shape (n_samples, n_labels)."""
        from ..errors import NotFittedError

        if not hasattr(self, "best_estimator_"):
            raise NotFittedError("This BottleneckCV instance is not fitted yet. Call 'fit' with "
                                 "appropriate arguments before using this estimator.")
        P = self.best_estimator_.predict_proba(X)
        if hasattr(self, "classes_"):  # single-label y: one-vs-rest scores renormalized
            P = P / np.clip(P.sum(1, keepdims=True), 1e-12, None)
        return P

    def predict(self, X, threshold=0.5) -> np.ndarray:
        """Multilabel: 0/1 per label at ``threshold``; single-label: the likeliest class."""
        P = self.predict_proba(X)
        if hasattr(self, "classes_"):
            return self.classes_[P.argmax(1)]
        return (P >= np.asarray(threshold)).astype(np.int64)

    def score(self, X, y, sample_weight=None) -> float:
        """Multilabel: macro AUC; single-label: accuracy (scikit-learn's default)."""
        if hasattr(self, "classes_"):
            return ClassifierMixin.score(self, X, y, sample_weight=sample_weight)
        return _auc(np.asarray(y, dtype=np.float32), self.predict_proba(X))
