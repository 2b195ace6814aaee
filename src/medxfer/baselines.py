"""Baselines trained in the same code path as the paper's model, for honest comparison."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from .errors import NotFittedError
from .metrics import macro_auc
from .splits import patient_kfold


class TunedLogisticRegression(ClassifierMixin, BaseEstimator):
    """One L2-regularized logistic regression per finding on standardized features, with
    one C for all findings chosen by patient-wise K-fold CV on the training data (mean
    macro AUC). NaN labels are left out of each finding's fit."""

    def __init__(self, Cs=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1), *, n_splits=5,
                 class_weight="balanced", random_state=0):
        self.Cs = Cs
        self.n_splits = n_splits
        self.class_weight = class_weight
        self.random_state = random_state

    def _fit_fixed(self, X, Y, C):
        models = []
        for j in range(Y.shape[1]):
            known = ~np.isnan(Y[:, j])
            y = Y[known, j]
            if 0 < y.sum() < len(y):
                m = LogisticRegression(C=C, class_weight=self.class_weight, max_iter=3000)
                models.append(m.fit(X[known], y.astype(int)))
            else:
                models.append(float(np.nanmean(Y[:, j])) if known.any() else 0.0)
        return models

    @staticmethod
    def _proba(models, X):
        return np.column_stack([m.predict_proba(X)[:, 1] if hasattr(m, "predict_proba")
                                else np.full(len(X), m) for m in models])

    def fit(self, X, Y, *, groups=None):
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        self.scaler_ = StandardScaler().fit(X)
        Xs = self.scaler_.transform(X)
        groups = np.arange(len(X)) if groups is None else np.asarray(groups)
        folds = patient_kfold(groups, self.n_splits, Y=Y, seed=self.random_state)
        self.cv_scores_ = {}
        for C in self.Cs:
            scores = []
            for tr, te in folds:
                P = self._proba(self._fit_fixed(Xs[tr], Y[tr], C), Xs[te])
                auc = macro_auc(Y[te], P)
                scores.append(np.nan if auc is None else auc)
            self.cv_scores_[C] = float(np.nanmean(scores))
        self.C_ = max(self.cv_scores_, key=self.cv_scores_.get)
        self.models_ = self._fit_fixed(Xs, Y, self.C_)
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X) -> np.ndarray:
        if not hasattr(self, "models_"):
            raise NotFittedError("This TunedLogisticRegression instance is not fitted yet. Call "
                                 "'fit' with appropriate arguments before using this estimator.")
        return self._proba(self.models_, self.scaler_.transform(np.asarray(X, dtype=np.float64)))
