"""Baselines trained in the same code path as the paper's model, for honest comparison."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import scipy.sparse as sp
import sklearn
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, validate_data

from .errors import NotFittedError
from .metrics import macro_auc
from .settings import LOGISTIC_CS
from .splits import patient_kfold

log = logging.getLogger(__name__)

#: The default C grid: half-decade steps from 1e-6 to 1. Wide frozen features (1000s of
#: dimensions, a few hundred images) often want a C far below 1e-3.
_SPARSE = ("csr", "csc", "coo")  # other formats are converted first, then checked for NaN
DEFAULT_CS = LOGISTIC_CS


def _row_space(X: np.ndarray) -> np.ndarray | None:
    """An orthonormal basis (d, r) of the row space of X when X is wider than tall, else None.

    With an L2 penalty on w and an unpenalized intercept, the optimal w lies in the row
    space of the training X (representer theorem), and for orthonormal B the problem in
    c = B^T w on the features X @ B has the same objective: the fit on the r <= n rotated
    columns gives the same decision function as the fit on all d columns (up to solver
    tolerance), 5-20 times faster on frozen features (d in the thousands, n in the hundreds).
    """
    n, d = X.shape
    if d <= n:
        return None
    _, s, vt = np.linalg.svd(X, full_matrices=False)
    keep = s > (s[0] if len(s) else 0) * 1e-10
    return vt[keep].T if keep.any() else vt[:1].T


def _rotate(X: np.ndarray, basis) -> np.ndarray:
    return X if basis is None else X @ basis


class TunedLogisticRegression(ClassifierMixin, BaseEstimator):
    """One L2-regularized logistic regression per finding on standardized features, with
    one C for all findings chosen by patient-wise K-fold CV on the training data (mean
    macro AUC over findings).

    Targets
    -------
    * 2-D ``y`` of shape (n, n_findings) with 0/1/NaN (multilabel): one model per
      finding; NaN means "unknown" and leaves that image out of that finding's fit and
      scoring. ``predict_proba`` gives (n, n_findings) probabilities of each finding,
      ``predict`` 0/1 at 0.5, ``classes_`` is ``arange(n_findings)``.
    * 1-D ``y`` of class labels (binary or multiclass, any label type): one-vs-rest
      models, ``predict`` returns labels from ``classes_``, ``predict_proba`` (n,
      n_classes) sums to 1. NaN is refused here (use the 2-D form for unknown labels).

    A finding (2-D form) whose known labels are all equal gets a constant prediction
    (its decision function is then +-inf); a 1-D ``y`` with one class is refused.

    Parameters
    ----------
    Cs : the grid of inverse regularization strengths searched.
    n_splits : folds of the inner CV (fewer when there are fewer patients).
    class_weight : "balanced" (each finding / one-vs-rest problem balanced), None, or a
        dict {label: weight} (1-D form: keys are class labels; 2-D form: keys 0/1).
    random_state : seed of the fold assignment.

    ``fit(X, y, groups=patient_ids)`` keeps every patient's images in one inner fold.
    Sparse X is accepted and densified (the features are standardized, so centred).

    Attributes
    ----------
    C_ : the chosen C.  cv_scores_ : {C: macro AUC of the pooled inner out-of-fold
    predictions} (NaN where undefined).
    C_fallback_ : True when no C could be scored and C_ is the grid's first, unchosen.
    C_at_edge_ : True when C_ is the smallest or largest of ``Cs`` (a warning is logged
    when its score still beats the next C by more than 0.001: the best C may lie outside).
    validation_ : (X, Y, inner out-of-fold probabilities at C_), 2-D form with a C grid only.
    classes_, n_features_in_, scaler_, models_ (fitted on the standardized features
    rotated onto ``basis_``, the training rows' span, when there are more features than
    images: the same decision function, much faster; None otherwise).
    """

    def __init__(self, Cs=DEFAULT_CS, *, n_splits=5, class_weight="balanced", random_state=0):
        self.Cs = Cs
        self.n_splits = n_splits
        self.class_weight = class_weight
        self.random_state = random_state

    # ------------------------------------------------------------------ targets

    def _targets(self, y, n_samples: int):
        """(Y 0/1/NaN matrix, sample weights or None); sets classes_ and _multilabel."""
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target "
                             "y is None.")
        if sp.issparse(y):
            y = y.toarray()
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1 and not _is_binary_indicator(y):
            warnings.warn("A column-vector y was passed when a 1d array was expected; it is "
                          "read as class labels. (A 2-D y of 0/1/NaN is read as findings.)",
                          DataConversionWarning, stacklevel=3)
            y = y.ravel()
        check_consistent_length(np.empty((n_samples, 0)), y)
        if y.ndim == 2:
            if not _is_binary_indicator(y):
                raise ValueError("Unknown label type: a 2-D y must hold one column per finding "
                                 "with 0, 1 or NaN (unknown); this one has other (e.g. "
                                 "continuous, negative or infinite) values.")
            self._multilabel = True
            Y = y.astype(np.float64)
            self.classes_ = np.arange(Y.shape[1])
            return Y, None
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D (class labels) or 2-D (findings), got shape {y.shape}")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError("Input y contains NaN or infinity. Unknown labels are allowed only "
                             "in a 2-D y of shape (n, n_findings) with 0/1/NaN.")
        check_classification_targets(y)
        self._multilabel = False
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in the "
                             f"data, but the data contain only one class: {self.classes_[0]!r}")
        Y = (codes[:, None] == np.arange(len(self.classes_))[None, :]).astype(np.float64)
        if len(self.classes_) == 2:
            Y = Y[:, 1:]  # one model: the second class against the first
        weights = None
        if isinstance(self.class_weight, dict):
            weights = np.array([float(self.class_weight.get(c, 1.0)) for c in self.classes_])[codes]
        return Y, weights

    def _column_class_weight(self):
        return None if isinstance(self.class_weight, dict) and not self._multilabel \
            else self.class_weight

    # ------------------------------------------------------------------ fitting

    def _fit_fixed(self, X, Y, C, weights=None, warm=None):
        """One model per finding at C; ``warm`` (the models at the previous, smaller C of the
        path) starts each solver where that one ended: same optimum, far fewer iterations."""
        models = []
        cw = self._column_class_weight()
        for j in range(Y.shape[1]):
            known = ~np.isnan(Y[:, j])
            y = Y[known, j]
            if 0 < y.sum() < len(y):
                prev = warm[j] if warm is not None else None
                m = prev.set_params(C=C) if isinstance(prev, LogisticRegression) else \
                    LogisticRegression(C=C, class_weight=cw, max_iter=3000, warm_start=True)
                sw = None if weights is None else weights[known]
                models.append(m.fit(X[known], y.astype(int), sample_weight=sw))
            else:
                models.append(float(np.mean(y)) if known.any() else 0.0)
        return models

    @staticmethod
    def _decision(models, X):
        with np.errstate(divide="ignore"):
            return np.column_stack([m.decision_function(X) if hasattr(m, "decision_function")
                                    else np.full(len(X), logit(m)) for m in models])

    @classmethod
    def _proba(cls, models, X):
        # expit of the decision is exactly what LogisticRegression.predict_proba computes.
        return expit(cls._decision(models, X))

    def fit(self, X, y, *, groups=None):
        """Fit on features X (n, d) and labels y (see the class docstring).

        groups : (n,) patient ids; the inner CV keeps each patient in one fold
        (default: each image its own patient).
        """
        for name in ("models_", "validation_"):  # a refit that fails leaves it unfitted
            self.__dict__.pop(name, None)
        # X is validated (finite, 2-D) once here; the hundreds of inner fits (C x finding x
        # fold) skip scikit-learn's per-call checks of what is already checked.
        X = validate_data(self, X, accept_sparse=_SPARSE, dtype=np.float64, reset=True)
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            return self._fit(X, y, groups)

    def _fit(self, X, y, groups):
        if sp.issparse(X):
            X = X.toarray()
        Y, weights = self._targets(y, X.shape[0])
        Cs = [float(c) for c in np.atleast_1d(self.Cs)]
        if not Cs or any(not np.isfinite(c) or c <= 0 for c in Cs):
            raise ValueError(f"Cs must be positive finite numbers, got {self.Cs!r}")
        self.cv_scores_ = {C: np.nan for C in Cs}
        if len(set(Cs)) > 1:
            groups = np.arange(len(X)) if groups is None else np.asarray(groups)
            check_consistent_length(X, groups)
            n_groups = len(np.unique(groups.astype(str)))
            if n_groups < 2:
                raise ValueError("choosing C by inner CV needs at least 2 patients (groups); "
                                 "pass a single C, e.g. Cs=(1e-3,)")
            n_splits = min(int(self.n_splits), n_groups)
            folds = patient_kfold(groups, n_splits, Y=Y, seed=self.random_state)
            # Scored on the pooled out-of-fold predictions (as BottleneckCV is): a C so small
            # that every probability sits near 0.5 with a fold-dependent offset ranks well
            # inside each fold but not across them, and a deployed model must rank new
            # patients against each other, not within one fold. Each fold walks the C path
            # from small to large, warm-starting every fit from the previous one.
            oof = {C: np.full(Y.shape, np.nan) for C in Cs}
            for tr, te in folds:
                # The scaler is fitted inside the fold, on its training rows only, so no
                # statistic of the held-out fold reaches the model that scores it.
                sc = StandardScaler().fit(X[tr])
                Xtr_s, Xte_s = sc.transform(X[tr]), sc.transform(X[te])
                models, basis = None, _row_space(Xtr_s)
                Xtr, Xte = _rotate(Xtr_s, basis), _rotate(Xte_s, basis)
                for C in sorted(set(Cs)):
                    models = self._fit_fixed(Xtr, Y[tr], C,
                                             None if weights is None else weights[tr], warm=models)
                    oof[C][te] = self._proba(models, Xte)
            for C in Cs:
                auc = macro_auc(Y, oof[C])
                self.cv_scores_[C] = np.nan if auc is None else float(auc)
        finite = [C for C in Cs if not np.isnan(self.cv_scores_[C])]
        # First best in grid order (ties go to the earlier C).
        self.C_ = max(finite, key=self.cv_scores_.get) if finite else Cs[0]
        # No C could be scored (every inner fold lacked a class for every finding): the
        # first C is a fallback, not a choice; said and recorded.
        self.C_fallback_ = len(set(Cs)) > 1 and not finite
        if self.C_fallback_:
            log.warning("TunedLogisticRegression could score no C by inner CV (no finding has "
                        "both classes in the inner folds); C=%g, the grid's first, is used "
                        "unchosen (C_fallback_ = True)", self.C_)
        self.C_at_edge_ = bool(finite) and len(set(Cs)) > 1 and self.C_ in (min(Cs), max(Cs))
        if len(set(Cs)) > 1 and self._multilabel:
            # Inner out-of-fold probabilities at the chosen C (as BottleneckCV keeps): for
            # thresholds chosen on training patients only.
            self.validation_ = (X, Y, oof[self.C_])
        grid = sorted(set(Cs))
        low = self.C_ == grid[0]
        nxt = (grid[1] if low else grid[-2]) if len(grid) > 1 else self.C_
        # A score still rising at the edge means the optimum may lie outside the grid; a
        # flat one (the fit has converged to its limit, as at tiny C) does not.
        if self.C_at_edge_ and self.cv_scores_[self.C_] - self.cv_scores_[nxt] > 1e-3:
            wider = "Cs=np.logspace(-8, 0, 17)" if low else "Cs=np.logspace(-6, 2, 17)"
            log.warning("TunedLogisticRegression chose C=%g, the %s value of its grid (inner-CV "
                        "macro AUC %.4f, %.4f at C=%g), so the best C may lie outside it; "
                        "widen the grid, e.g. %s.", self.C_, "smallest" if low else "largest",
                        self.cv_scores_[self.C_], self.cv_scores_[nxt], nxt, wider)
        self.scaler_ = StandardScaler().fit(X)
        Xs = self.scaler_.transform(X)
        self.basis_ = _row_space(Xs)
        self.models_ = self._fit_fixed(_rotate(Xs, self.basis_), Y, self.C_, weights)
        return self

    # ------------------------------------------------------------------ prediction

    def _check_X(self, X):
        if not hasattr(self, "models_"):
            raise NotFittedError("This TunedLogisticRegression instance is not fitted yet. Call "
                                 "'fit' with appropriate arguments before using this estimator.")
        X = validate_data(self, X, accept_sparse=_SPARSE, dtype=np.float64, reset=False)
        if sp.issparse(X):
            X = X.toarray()
        return _rotate(self.scaler_.transform(X), self.basis_)

    def decision_function(self, X) -> np.ndarray:
        """Log-odds: (n, n_findings) in the 2-D form; (n,) for two classes (of
        ``classes_[1]``); (n, n_classes) one-vs-rest for more."""
        Xs = self._check_X(X)
        D = self._decision(self.models_, Xs)
        return D[:, 0] if not self._multilabel and len(self.classes_) == 2 else D

    def predict_proba(self, X) -> np.ndarray:
        """(n, n_findings) probabilities of each finding in the 2-D form; (n, n_classes)
        class probabilities (rows sum to 1) in the 1-D form."""
        Xs = self._check_X(X)
        P = self._proba(self.models_, Xs)
        if self._multilabel:
            return P
        if len(self.classes_) == 2:
            return np.column_stack([1 - P[:, 0], P[:, 0]])
        total = P.sum(axis=1, keepdims=True)
        zero = total[:, 0] == 0
        P[zero], total[zero] = 1.0, P.shape[1]
        return P / total

    def predict(self, X) -> np.ndarray:
        """0/1 per finding (at probability 0.5) in the 2-D form; class labels in the 1-D."""
        Xs = self._check_X(X)
        D = self._decision(self.models_, Xs)
        if self._multilabel:
            return (D > 0).astype(int)
        if len(self.classes_) == 2:
            return self.classes_[(D[:, 0] > 0).astype(int)]
        return self.classes_[np.argmax(D, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # accepted, densified
        tags.input_tags.allow_nan = False  # NaN is allowed in y (2-D form), never in X
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = True
        # multi-output means multiclass-multioutput in sklearn; each output here is binary.
        tags.target_tags.multi_output = False
        return tags


def _is_binary_indicator(y: np.ndarray) -> bool:
    """True for a numeric array of 0, 1 and NaN only."""
    if y.dtype.kind not in "biuf":
        return False
    v = y.astype(np.float64)
    return bool(np.all((v == 0) | (v == 1) | np.isnan(v)))
