"""The paper's model: a regularized linear bottleneck and a discriminant head.

    h = W^T z                       W in R^{d x k}, z standardized backbone features
    y = sigmoid(V^T h + b)          multi-label (ChestX-ray14): one sigmoid per finding
    y = softmax(V^T h + b)          single-label tasks
    L_total = L_ce + lambda1 * ||h||_1 + lambda2 * ||h||_F^2

Normalization: both regularizer terms are averaged over the samples of a batch (sum over
the k code entries of one sample, mean over samples), so lambda1 and lambda2 mean the same
at any batch size. L_ce is averaged over the known (non-NaN) label entries of the batch;
unknown labels contribute nothing to the loss or its gradient.

:class:`BottleneckClassifier` is a scikit-learn estimator over feature arrays, so
cross-validation, grid search and pipelines from scikit-learn work with it.
"""

from __future__ import annotations

import copy
import math
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import GroupShuffleSplit
from torch import nn
from torch.nn import functional as F

from .errors import NotFittedError
from .metrics import macro_auc

IMBALANCE_OPTIONS = ("none", "pos_weight", "class_balanced", "focal", "balanced_sampler")
TASKS = ("auto", "multilabel", "multiclass")

# Parameter constraints as data: (kind, low, high, low_inclusive); kinds: int, float,
# int_or_none, choice. One message template for all (see _validate_params).
_CONSTRAINTS = {
    "bottleneck_dim": ("int_or_none", 1, math.inf, True),
    "l1": ("float", 0.0, math.inf, True),
    "l2": ("float", 0.0, math.inf, True),
    "lr": ("float", 0.0, math.inf, False),
    "weight_decay": ("float", 0.0, math.inf, True),
    "alpha": ("float", 0.0, math.inf, True),
    "batch_size": ("int", 1, math.inf, True),
    "max_epochs": ("int", 1, math.inf, True),
    "patience": ("int", 1, math.inf, True),
    "imbalance": ("choice", IMBALANCE_OPTIONS),
    "focal_gamma": ("float", 0.0, math.inf, True),
    "cb_beta": ("float", 0.0, 1.0, True),
    "task": ("choice", TASKS),
    "validation_fraction": ("float", 0.0, 1.0, True),
    "random_state": ("int", 0, math.inf, True),
    "n_ensemble": ("int", 1, math.inf, True),
}


class _Net(nn.Module):
    def __init__(self, d: int, k: int | None, n_out: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("scale", torch.ones(d))
        self.bottleneck = nn.Linear(d, k, bias=False) if k else None
        self.head = nn.Linear(k or d, n_out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = (x - self.mean) / self.scale
        h = self.bottleneck(z) if self.bottleneck is not None else z
        return self.head(h), h


class BottleneckClassifier(ClassifierMixin, BaseEstimator):
    """Regularized bottleneck classifier over cached features.

    Parameters
    ----------
    bottleneck_dim : int or None, default=128
        k, the width of the codes h. None drops the bottleneck (a linear head on z, the
        "linear probe" baseline; the regularizer then has no codes to act on).
    l1, l2 : float, default=1e-3, 1e-3
        lambda1 and lambda2 of L_reg on the codes (per-sample sums, batch mean).
    lr, weight_decay : AdamW learning rate and decoupled weight decay.
    batch_size, max_epochs, patience : minibatch size; epoch cap; epochs without a better
        validation macro AUC before stopping (the best epoch's weights are kept).
    imbalance : {"none", "pos_weight", "class_balanced", "focal", "balanced_sampler"}
        "pos_weight": positives of each finding weighted by negatives/positives;
        "class_balanced": weights from the effective number of samples
        (1 - beta) / (1 - beta^n) (Cui et al., 2019) for positives and negatives;
        "focal": focal loss with ``focal_gamma``; "balanced_sampler": minibatches drawn
        with replacement, each image weighted by the rarest finding it carries.
    task : {"auto", "multilabel", "multiclass"}
        auto: multilabel for a 2-D y (n, n_labels), multiclass for a 1-D y.
    alpha : float, default=0
        L2 penalty alpha * (||W||_F^2 + ||V||_F^2) on the weights, added to the loss (as in
        scikit-learn's MLP). The code penalty alone is scale-free (W small, V large gives
        the same predictions), so small data needs this or weight decay.
    refit : bool, default=False
        After early stopping on the internal validation part, retrain on all rows for the
        chosen number of epochs. ``validation_`` keeps the early-stopped model's validation
        predictions for choosing thresholds.
    validation_fraction : share of training patients held out for early stopping and
        thresholds when ``fit`` gets no ``eval_set`` (0 trains for ``max_epochs``).
    n_ensemble : int, default=1
        Train this many members, each with its own patient-wise validation split and
        initialization (seeds random_state, random_state + 1, ...), and average their
        probabilities. Small data gains from it: early stopping on a small validation part
        is noisy. ``validation_`` then holds out-of-bag predictions: for each row that was in
        some member's validation part, the mean over those members. ``transform`` returns the
        first member's codes.
    random_state : seed of initialization, shuffling and the validation split.
    """

    def __init__(self, bottleneck_dim=128, *, l1=1e-3, l2=1e-3, lr=1e-3, weight_decay=1e-2,
                 alpha=0.0, refit=False, batch_size=64, max_epochs=200, patience=20, imbalance="pos_weight",
                 focal_gamma=2.0, cb_beta=0.999, task="auto", validation_fraction=0.2,
                 n_ensemble=1, random_state=0, device="cpu"):
        self.bottleneck_dim = bottleneck_dim
        self.l1 = l1
        self.l2 = l2
        self.lr = lr
        self.weight_decay = weight_decay
        self.alpha = alpha
        self.refit = refit
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.imbalance = imbalance
        self.focal_gamma = focal_gamma
        self.cb_beta = cb_beta
        self.task = task
        self.validation_fraction = validation_fraction
        self.n_ensemble = n_ensemble
        self.random_state = random_state
        self.device = device

    # ------------------------------------------------------------------ validation

    def _validate_params(self) -> None:
        name = type(self).__name__
        for param, rule in _CONSTRAINTS.items():
            value = getattr(self, param)
            if rule[0] == "choice":
                if value not in rule[1]:
                    raise ValueError(f"The '{param}' parameter of {name} must be a str among "
                                     f"{{{', '.join(repr(c) for c in rule[1])}}}. Got {value!r} instead.")
                continue
            kind, lo, hi, lo_incl = rule
            if kind == "int_or_none" and value is None:
                continue
            is_int = isinstance(value, Integral) and not isinstance(value, bool)
            ok_type = is_int if kind in ("int", "int_or_none") else (
                isinstance(value, Real) and not isinstance(value, bool))
            in_range = ok_type and (value >= lo if lo_incl else value > lo) and value <= hi
            if not in_range:
                what = {"int": "an int", "int_or_none": "an int or None", "float": "a float"}[kind]
                left = "[" if lo_incl else "("
                right = "inf)" if hi == math.inf else f"{hi}]"
                raise ValueError(f"The '{param}' parameter of {name} must be {what} in the range "
                                 f"{left}{lo}, {right}. Got {value!r} instead.")

    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator.")

    # ------------------------------------------------------------------ data

    def _targets(self, y) -> tuple[np.ndarray, str]:
        y = np.asarray(y)
        task = self.task
        if task == "auto":
            task = "multilabel" if y.ndim == 2 else "multiclass"
        if task == "multilabel":
            if y.ndim != 2:
                raise ValueError(f"multilabel y must have shape (n_samples, n_labels), got {y.shape}")
            y = y.astype(np.float32)
            bad = ~np.isnan(y) & (y != 0) & (y != 1)
            if bad.any():
                raise ValueError("multilabel y must hold 0, 1 or NaN (unknown); found "
                                 f"{np.unique(y[bad])[:5].tolist()}")
            return y, task
        if y.ndim != 1:
            raise ValueError(f"multiclass y must have shape (n_samples,), got {y.shape}")
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"multiclass y needs at least 2 classes, got {self.classes_.tolist()}")
        return codes.astype(np.int64), task

    # ------------------------------------------------------------------ fit

    def fit(self, X, y, *, groups=None, eval_set=None):
        """Train on features X (n, d) and labels y.

        Parameters
        ----------
        X : array of shape (n_samples, n_features).
        y : (n_samples, n_labels) with 1/0/NaN for multilabel, or (n_samples,) classes.
        groups : (n_samples,) patient ids; the internal validation split is patient-wise.
        eval_set : (X_val, y_val) to use for early stopping instead of an internal split.
        """
        self._validate_params()
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"X must have shape (n_samples, n_features), got {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or infinite values; drop those rows first")
        Y, task = self._targets(y)
        if len(Y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(Y)}")
        self.task_ = task
        if self.n_ensemble > 1:
            return self._fit_ensemble(X, y, Y, groups, eval_set)
        if eval_set is not None:
            Xv = np.asarray(eval_set[0], dtype=np.float32)
            Yv = self._encode_eval(eval_set[1])
            Xt, Yt = X, Y
        elif self.validation_fraction > 0:
            g = np.arange(len(X)) if groups is None else np.asarray(groups)
            split = GroupShuffleSplit(n_splits=1, test_size=self.validation_fraction,
                                      random_state=self.random_state)
            tr, va = next(split.split(X, groups=g))
            Xt, Yt, Xv, Yv = X[tr], Y[tr], X[va], Y[va]
            self.validation_index_ = va
        else:
            Xt, Yt, Xv, Yv = X, Y, None, None

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            self._train(Xt, Yt, Xv, Yv)
            # Predictions of the early-stopped model on data it did not train on: the
            # only honest place to choose decision thresholds.
            self.validation_ = (Xv, Yv, self._proba(Xv)) if Xv is not None else None
            if self.refit and Xv is not None and eval_set is None:
                # Retrain on all training rows for the epoch count validation picked.
                best_epoch, best_score, history = self.best_epoch_, self.best_score_, self.history_
                torch.manual_seed(self.random_state)
                self._train(X, Y, None, None, epochs=best_epoch)
                self.best_epoch_, self.best_score_, self.history_ = best_epoch, best_score, history
        self.n_features_in_ = X.shape[1]
        return self

    def _fit_ensemble(self, X, y, Y, groups, eval_set):
        if eval_set is not None or self.validation_fraction <= 0:
            raise ValueError("n_ensemble > 1 needs internal validation splits: pass no eval_set "
                             "and a validation_fraction > 0")
        members, epochs = [], []
        P_sum = np.zeros((len(X), self._n_out(Y)))
        count = np.zeros(len(X))
        for i in range(self.n_ensemble):
            m = BottleneckClassifier(**(self.get_params() | {"n_ensemble": 1,
                                                             "random_state": self.random_state + i}))
            m.fit(X, y, groups=groups)
            members.append(m.net_)
            epochs.append(m.best_epoch_)
            va = m.validation_index_
            P_sum[va] += m.validation_[2]
            count[va] += 1
        seen = count > 0
        Pv = P_sum[seen] / count[seen][:, None]
        self.members_ = members
        self.net_ = members[0]
        self.validation_ = (X[seen], Y[seen], Pv.astype(np.float32))
        self.best_epoch_ = int(np.median(epochs))
        self.member_best_epochs_ = epochs
        self.best_score_ = _macro_auc(Y[seen], Pv, self.task_)
        self.history_ = []
        self.n_outputs_ = self._n_out(Y)
        self.n_features_in_ = X.shape[1]
        return self

    def _encode_eval(self, y):
        y = np.asarray(y)
        if self.task_ == "multilabel":
            return y.astype(np.float32)
        lookup = {c: i for i, c in enumerate(self.classes_)}
        return np.array([lookup[v] for v in y], dtype=np.int64)

    def _n_out(self, Y) -> int:
        return Y.shape[1] if self.task_ == "multilabel" else len(self.classes_)

    def _loss_weights(self, Y: np.ndarray) -> dict:
        """Per-finding (or per-class) weights for the chosen imbalance option."""
        if self.task_ == "multilabel":
            known = ~np.isnan(Y)
            pos = np.nansum(Y, axis=0)
            neg = known.sum(axis=0) - pos
            if self.imbalance == "pos_weight":
                return {"pos": np.clip(neg / np.maximum(pos, 1), 1.0, 1e3), "neg": np.ones_like(pos)}
            if self.imbalance == "class_balanced":
                b = self.cb_beta
                eff = lambda n: (1 - b) / np.maximum(1 - b ** np.maximum(n, 1), 1e-12)  # noqa: E731
                wp, wn = eff(pos), eff(neg)
                norm = 2.0 / (wp + wn)  # keep the mean weight of a finding at 1
                return {"pos": wp * norm, "neg": wn * norm}
            return {"pos": np.ones_like(pos), "neg": np.ones_like(pos)}
        counts = np.bincount(Y, minlength=len(self.classes_)).astype(np.float64)
        if self.imbalance == "pos_weight":
            w = counts.sum() / np.maximum(counts, 1) / len(counts)
        elif self.imbalance == "class_balanced":
            b = self.cb_beta
            w = (1 - b) / np.maximum(1 - b ** np.maximum(counts, 1), 1e-12)
            w = w * len(w) / w.sum()
        else:
            w = np.ones_like(counts)
        return {"class": w}

    def _ce(self, logits: torch.Tensor, y: torch.Tensor, w: dict) -> torch.Tensor:
        if self.task_ == "multiclass":
            if self.imbalance == "focal":
                logp = F.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
                return (-(1 - logp.exp()) ** self.focal_gamma * logp).mean()
            return F.cross_entropy(logits, y, weight=w["class"])
        known = ~torch.isnan(y)
        t = torch.nan_to_num(y, nan=0.0)
        per = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
        if self.imbalance == "focal":
            p = torch.sigmoid(logits)
            pt = torch.where(t > 0.5, p, 1 - p)
            per = per * (1 - pt) ** self.focal_gamma
        else:
            per = per * torch.where(t > 0.5, w["pos"], w["neg"])
        per = per * known
        return per.sum() / known.sum().clamp(min=1)

    def _reg(self, h: torch.Tensor) -> torch.Tensor:
        if self.bottleneck_dim is None or (self.l1 == 0 and self.l2 == 0):
            return h.new_zeros(())
        return self.l1 * h.abs().sum(1).mean() + self.l2 * h.pow(2).sum(1).mean()

    def _weight_penalty(self, net: nn.Module) -> torch.Tensor:
        """alpha * (||W||_F^2 + ||V||_F^2); biases are not penalized."""
        if not self.alpha:
            return torch.zeros(())
        return self.alpha * sum(p.pow(2).sum() for n, p in net.named_parameters() if n.endswith("weight"))

    def _sample_weights(self, Y: np.ndarray) -> np.ndarray:
        if self.task_ == "multiclass":
            counts = np.bincount(Y, minlength=len(self.classes_))
            return 1.0 / counts[Y]
        pos = np.nansum(Y, axis=0)
        inv = 1.0 / np.maximum(pos, 1)
        neg_w = 1.0 / max(1, int((np.nan_to_num(Y) == 0).all(axis=1).sum()))
        w = np.where(np.nan_to_num(Y) == 1, inv, 0).max(axis=1)
        return np.where(w > 0, w, neg_w)

    def _train(self, Xt, Yt, Xv, Yv, epochs: int | None = None) -> None:
        dev = torch.device(self.device)
        d, n_out = Xt.shape[1], self._n_out(Yt)
        net = _Net(d, self.bottleneck_dim, n_out).to(dev)
        net.mean.copy_(torch.from_numpy(Xt.mean(0)))
        net.scale.copy_(torch.from_numpy(Xt.std(0) + 1e-6))
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        w = {k: torch.as_tensor(v, dtype=torch.float32, device=dev)
             for k, v in self._loss_weights(Yt).items()}
        xt = torch.from_numpy(Xt).to(dev)
        yt = torch.from_numpy(Yt).to(dev)
        n = len(xt)
        sampler_w = torch.as_tensor(self._sample_weights(Yt)) if self.imbalance == "balanced_sampler" else None
        best, best_state, best_epoch, bad = -math.inf, None, 0, 0
        history = []
        max_epochs = epochs or self.max_epochs
        for epoch in range(1, max_epochs + 1):
            net.train()
            order = (torch.multinomial(sampler_w, n, replacement=True) if sampler_w is not None
                     else torch.randperm(n))
            total = 0.0
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size].to(dev)
                logits, h = net(xt[idx])
                loss = self._ce(logits, yt[idx], w) + self._reg(h) + self._weight_penalty(net)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            record = {"epoch": epoch, "train_loss": total / n}
            if Xv is not None:
                self.net_ = net
                score = _macro_auc(Yv, self._proba(Xv), self.task_)
                record["val_macro_auc"] = score
                if math.isnan(score):  # no finding has both classes in validation
                    score = -self._val_loss(Xv, Yv, w)
                if score > best + 1e-6:
                    best, best_state, best_epoch, bad = score, copy.deepcopy(net.state_dict()), epoch, 0
                else:
                    bad += 1
            history.append(record)
            if Xv is not None and bad >= self.patience:
                break
        if best_state is not None:
            net.load_state_dict(best_state)
        self.net_ = net.eval()
        self.best_epoch_ = best_epoch if Xv is not None else max_epochs
        self.best_score_ = best if Xv is not None else float("nan")
        self.history_ = history
        self.n_outputs_ = n_out

    def _val_loss(self, Xv, Yv, w) -> float:
        with torch.no_grad():
            logits, _ = self.net_(torch.from_numpy(Xv).to(self.device))
            return float(self._ce(logits, torch.from_numpy(Yv).to(self.device), w))

    # ------------------------------------------------------------------ predict

    def _proba(self, X) -> np.ndarray:
        x = torch.as_tensor(np.asarray(X, dtype=np.float32), device=self.device)
        nets = getattr(self, "members_", None) or [self.net_]
        outs = []
        with torch.no_grad():
            for net in nets:
                logits, _ = net.eval()(x)
                outs.append(torch.sigmoid(logits) if self.task_ == "multilabel"
                            else torch.softmax(logits, 1))
        return torch.stack(outs).mean(0).cpu().numpy()

    def predict_proba(self, X) -> np.ndarray:
        """Probabilities, shape (n_samples, n_labels) (sigmoid) or (n_samples, n_classes)."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has shape {X.shape}; this model expects (n, {self.n_features_in_})")
        return self._proba(X)

    def predict(self, X, threshold=0.5) -> np.ndarray:
        """Multilabel: (n, n_labels) 0/1 at ``threshold`` (scalar or per label);
        multiclass: (n,) most probable class."""
        p = self.predict_proba(X)
        if self.task_ == "multilabel":
            return (p >= np.asarray(threshold)).astype(np.int64)
        return self.classes_[p.argmax(1)]

    def transform(self, X) -> np.ndarray:
        """The codes h, shape (n_samples, bottleneck_dim) (standardized z without bottleneck)."""
        self._check_fitted()
        with torch.no_grad():
            _, h = self.net_(torch.as_tensor(np.asarray(X, dtype=np.float32), device=self.device))
        return h.cpu().numpy()

    def score(self, X, y, sample_weight=None) -> float:
        """Macro AUC over labels with both classes present (NaN labels ignored)."""
        self._check_fitted()
        y = np.asarray(y)
        if self.task_ == "multiclass":
            y = self._encode_eval(y)
        return _macro_auc(y, self.predict_proba(X), self.task_)


def _macro_auc(Y: np.ndarray, P: np.ndarray, task: str) -> float:
    """metrics.macro_auc for either task (class codes one-hot encoded); NaN when no label
    has both classes among its known entries."""
    if task == "multiclass":
        Y = np.eye(P.shape[1])[Y]
    out = macro_auc(Y, P)
    return float("nan") if out is None else out
