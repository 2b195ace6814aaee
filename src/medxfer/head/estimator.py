"""The paper's model as a scikit-learn estimator over cached features.

    h = W^T z                       W in R^{d x k}, z standardized backbone features
    y = sigmoid(V^T h + b)          multi-label (ChestX-ray14): one sigmoid per finding
    y = softmax(V^T h + b)          single-label tasks
    L_total = L_ce + lambda1 * ||h||_1 + lambda2 * ||h||_F^2 (+ alpha * (||W||^2 + ||V||^2))

Every default comes from :class:`medxfer.settings.HeadSettings`; the loss is
:class:`medxfer.head.losses.HeadLoss`; training is the shared loop of
:mod:`medxfer.head.training`. scikit-learn's own ``check_estimator`` suite runs on it in the
tests, so cross-validation, grid search and pipelines from scikit-learn work with it.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.model_selection import GroupShuffleSplit
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from ..errors import ModelError, NotFittedError
from ..metrics import macro_auc
from ..settings import HeadSettings, defaults, validate
from .losses import HeadLoss
from ..engine import resolve_device
from .net import BottleneckNet, predict_proba_nets
from .training import early_stopping_loop

_D = defaults(HeadSettings)
#: Feature dtypes taken as they are (float16: the stored features, never copied whole to
#: float32; each chunk is cast where the math runs); anything else becomes float32.
FEATURE_DTYPES = [np.float32, np.float16]


def task_macro_auc(Y: np.ndarray, P: np.ndarray, task: str) -> float:
    """Macro AUC for either task (class codes one-hot encoded); NaN when no label has both
    classes among its known entries."""
    if task == "multiclass":
        Y = np.eye(P.shape[1])[np.asarray(Y)]
    out = macro_auc(Y, P)
    return float("nan") if out is None else out


def clear_fitted(est) -> None:
    """Remove every fitted attribute (name ending in "_") so that ``fit`` starts clean."""
    for name in [k for k in vars(est) if k.endswith("_") and not k.startswith("__")]:
        delattr(est, name)


def ravel_label_column(y: np.ndarray) -> np.ndarray:
    """y as given, or raveled (with scikit-learn's DataConversionWarning) when it is a
    column of class labels rather than one finding's 0/1/NaN."""
    if y.ndim == 2 and y.shape[1] == 1 and not _is_binary_column(y):
        from sklearn.exceptions import DataConversionWarning

        warnings.warn("A column-vector y was passed when a 1d array was expected; it holds "
                      "class labels, so it is raveled", DataConversionWarning, stacklevel=4)
        return y.ravel()
    return y


def _is_binary_column(y: np.ndarray) -> bool:
    try:
        v = y.astype(np.float64)
    except (TypeError, ValueError):
        return False
    return bool(np.isin(v[~np.isnan(v)], (0.0, 1.0)).all())


class BottleneckClassifier(ClassifierMixin, TransformerMixin, BaseEstimator):
    """Regularized bottleneck classifier over cached features.

    Parameters (defaults and ranges: :class:`medxfer.settings.HeadSettings`)
    ----------
    bottleneck_dim : int or None
        k, the width of the codes h. None drops the bottleneck (a linear head on z, the
        "linear probe" baseline; the code penalty then has nothing to act on).
    l1, l2 : lambda1 and lambda2 of L_reg on the codes (per-sample sums, batch mean).
    alpha : L2 penalty alpha * (||W||_F^2 + ||V||_F^2) on the weights (as in scikit-learn's
        MLP). The code penalty alone is scale-free (W small, V large gives the same
        predictions), so the weights need their own penalty or weight decay.
    solver : "adamw" (minibatches, early stopping on the validation part) or "lbfgs" (full
        batch on every training row for at most ``max_iter`` iterations; no early stopping,
        so the penalties alone control the fit: choose them by CV, e.g. with
        :class:`medxfer.head.BottleneckCV`).
    lr, weight_decay : AdamW learning rate and decoupled weight decay.
    batch_size, max_epochs, patience : minibatch size; epoch cap; epochs without a better
        validation macro AUC before stopping (the best epoch's weights are kept).
    imbalance : one of :data:`medxfer.head.losses.IMBALANCE`.
    focal_gamma, cb_beta : parameters of the "focal" and "class_balanced" options.
    task : {"auto", "multilabel", "multiclass"}; auto: multilabel for a 2-D y.
    validation_fraction : share of training patients held out for early stopping and
        thresholds when ``fit`` gets no ``eval_set`` (0 trains for ``max_epochs``).
    refit : after early stopping, retrain on all rows for the chosen number of epochs;
        ``validation_`` keeps the early-stopped model's validation predictions.
    n_ensemble : train this many members, each with its own patient-wise validation split
        and initialization (seeds random_state, random_state + 1, ...), and average their
        probabilities. ``validation_`` then holds out-of-bag predictions; ``transform``
        returns the first member's codes.
    random_state : seed of initialization, shuffling and the validation split.
    device : torch device for training ("auto": the GPU when present).

    Fitted attributes: ``members_`` (networks), ``task_``, ``classes_`` (multiclass),
    ``n_features_in_``, ``n_outputs_``, ``best_epoch_``, ``best_score_``, ``history_``,
    ``validation_`` (X_val, Y_val, P_val) or None, ``loss_terms_`` (each penalty's size on the
    training rows at the chosen solution).
    """

    def __init__(self, bottleneck_dim=_D["bottleneck_dim"], *, l1=_D["l1"], l2=_D["l2"],
                 alpha=_D["alpha"], solver=_D["solver"], max_iter=_D["max_iter"], lr=_D["lr"], weight_decay=_D["weight_decay"],
                 batch_size=_D["batch_size"], max_epochs=_D["max_epochs"],
                 patience=_D["patience"], imbalance=_D["imbalance"],
                 focal_gamma=_D["focal_gamma"], cb_beta=_D["cb_beta"], task=_D["task"],
                 validation_fraction=_D["validation_fraction"], refit=_D["refit"],
                 n_ensemble=_D["n_ensemble"], random_state=_D["random_state"],
                 device=_D["device"]):
        self.bottleneck_dim = bottleneck_dim
        self.l1 = l1
        self.l2 = l2
        self.alpha = alpha
        self.solver = solver
        self.max_iter = max_iter
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.imbalance = imbalance
        self.focal_gamma = focal_gamma
        self.cb_beta = cb_beta
        self.task = task
        self.validation_fraction = validation_fraction
        self.refit = refit
        self.n_ensemble = n_ensemble
        self.random_state = random_state
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # multilabel y (n, L) with 0/1/NaN
        tags.classifier_tags.multi_label = True
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.non_deterministic = False
        return tags

    def validate_params(self) -> None:
        """Raise ValueError naming the first parameter outside its range."""
        validate(self, type(self).__name__, HeadSettings)

    # ------------------------------------------------------------------ data

    def _targets(self, y) -> tuple[np.ndarray, str]:
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        y = np.asarray(y)
        task = self.task
        if task == "auto":
            y = ravel_label_column(y)  # scikit-learn's convention for a column of labels
        if task == "auto":
            task = "multilabel" if y.ndim == 2 else "multiclass"
        if task == "multilabel":
            if y.ndim != 2:
                raise ValueError(f"multilabel y must have shape (n_samples, n_labels), got {y.shape}")
            try:
                y = y.astype(np.float32)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"multilabel y must hold 0, 1 or NaN (unknown): {exc}") from exc
            bad = ~np.isnan(y) & (y != 0) & (y != 1)
            if bad.any():
                raise ValueError("multilabel y must hold 0, 1 or NaN (unknown); found "
                                 f"{np.unique(y[bad])[:5].tolist()}")
            return y, task
        if y.ndim != 1:
            raise ValueError(f"multiclass y must have shape (n_samples,), got {y.shape}")
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        return codes.astype(np.int64), task

    def _n_out(self, Y) -> int:
        return Y.shape[1] if self.task_ == "multilabel" else len(self.classes_)

    def _encode(self, y) -> np.ndarray:
        y = np.asarray(y)
        if self.task_ == "multilabel":
            return y.astype(np.float32)
        lookup = {c: i for i, c in enumerate(self.classes_)}
        unknown = [v for v in np.unique(y) if v not in lookup]
        if unknown:
            raise ValueError(f"y holds classes not seen in training: {unknown[:5]}")
        return np.array([lookup[v] for v in y], dtype=np.int64)

    # ------------------------------------------------------------------ fit

    def fit(self, X, y, *, groups=None, eval_set=None):
        """Train on features X (n, d) and labels y.

        Parameters
        ----------
        X : array of shape (n_samples, n_features).
        y : (n_samples, n_labels) with 1/0/NaN for multilabel, or (n_samples,) classes.
        groups : (n_samples,) patient ids; the internal validation split is patient-wise.
            Without them it is by image, which leaks patients with several images (warned).
        eval_set : (X_val, y_val) to use for early stopping instead of an internal split.
        """
        clear_fitted(self)  # a refit starts from a clean state
        self.validate_params()
        X = validate_data(self, X, dtype=FEATURE_DTYPES, ensure_min_samples=2)
        Y, task = self._targets(y)
        if len(Y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(Y)}")
        self.task_ = task
        n_out = self._n_out(Y)
        if self.n_ensemble > 1 and (eval_set is not None or self.validation_fraction <= 0):
            raise ValueError("n_ensemble > 1 needs internal validation splits: pass no eval_set "
                             "and a validation_fraction > 0")
        if groups is None and eval_set is None and self.validation_fraction > 0:
            warnings.warn(f"{type(self).__name__}.fit got no groups: the validation split is by "
                          "image, so images of one patient can sit on both sides. Pass "
                          "groups=patient_ids.", UserWarning, stacklevel=2)
        if self.task_ == "multiclass" and n_out < 2:
            return self._fit_constant(X, Y)
        g = np.arange(len(X)) if groups is None else np.asarray(groups)
        members, fits = [], []
        for i in range(self.n_ensemble):
            net, fit = self._fit_member(X, Y, g, eval_set, self.random_state + i)
            members.append(net)
            fits.append(fit)
        self.members_ = [net.cpu() for net in members]  # fitted models predict on the CPU
        self.n_outputs_ = n_out
        self.n_iter_ = max(f["n_iter"] for f in fits)
        if self.n_ensemble == 1:
            fit = fits[0]
            self.best_epoch_, self.best_score_, self.history_ = fit["best_epoch"], fit["best_score"], fit["history"]
            self.validation_ = fit["validation"]
            if "validation_index" in fit:
                self.validation_index_ = fit["validation_index"]
        else:
            P_sum, count = np.zeros((len(X), n_out)), np.zeros(len(X))
            for fit in fits:
                P_sum[fit["validation_index"]] += fit["validation"][2]
                count[fit["validation_index"]] += 1
            seen = count > 0
            Pv = (P_sum[seen] / count[seen][:, None]).astype(np.float32)
            self.validation_ = (X[seen], Y[seen], Pv)
            self.validation_index_ = np.flatnonzero(seen)
            self.best_epoch_ = int(np.median([f["best_epoch"] for f in fits]))
            self.member_best_epochs_ = [f["best_epoch"] for f in fits]
            self.member_validation_indices_ = [f["validation_index"] for f in fits]
            self.best_score_ = task_macro_auc(Y[seen], Pv, task)
            self.history_ = []
        self.loss_terms_ = HeadLoss(self, task, Y, n_out).terms(self.members_[0], X, Y)
        return self

    def _fit_constant(self, X, Y):
        """One class in y: predict it (scikit-learn's convention for one-class data)."""
        net = BottleneckNet(X.shape[1], self.bottleneck_dim, 1)
        with torch.no_grad():
            net.head.weight.zero_()
            net.head.bias.zero_()
        self.members_, self.n_outputs_, self.n_iter_ = [net.eval()], 1, 0
        self.best_epoch_, self.best_score_, self.history_, self.validation_ = 0, float("nan"), [], None
        self.loss_terms_ = {}
        return self

    def _fit_member(self, X, Y, groups, eval_set, seed: int):
        """One network: early-stopped on a patient-wise validation part (or eval_set)."""
        fit: dict = {}
        if eval_set is not None:
            Xv = validate_data(self, eval_set[0], dtype=FEATURE_DTYPES, reset=False)
            Xt, Yt, Yv = X, Y, self._encode(eval_set[1])
        elif self.validation_fraction > 0:
            split = GroupShuffleSplit(n_splits=1, test_size=self.validation_fraction, random_state=seed)
            tr, va = next(split.split(X, groups=groups))
            Xt, Yt, Xv, Yv = X[tr], Y[tr], X[va], Y[va]
            fit["validation_index"] = va
        else:
            Xt, Yt, Xv, Yv = X, Y, None, None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net, res = self._train_net(Xt, Yt, Xv, Yv)
            fit["validation"] = (Xv, Yv, predict_proba_nets([net], Xv, self.task_)) if Xv is not None else None
            if self.refit and Xv is not None and eval_set is None:
                torch.manual_seed(seed)  # retrain on every row for the epochs validation chose
                net, _ = self._train_net(X, Y, None, None, epochs=res.best_epoch[0])
        fit.update(best_epoch=res.best_epoch[0], best_score=res.best_score[0], history=res.history[0],
                   n_iter=res.n_iter)
        return net.eval(), fit

    def _train_net(self, Xt, Yt, Xv, Yv, epochs: int | None = None):
        dev = resolve_device(self.device)
        n_out = self._n_out(Yt)
        net = BottleneckNet(Xt.shape[1], self.bottleneck_dim, n_out).standardize_like(Xt).to(dev)
        loss_fn = HeadLoss(self, self.task_, Yt, n_out, dev)
        xt, yt = torch.from_numpy(Xt).to(dev), torch.from_numpy(Yt).to(dev)
        n = len(xt)
        sw = loss_fn.strategy.sample_weights(Yt, self.task_, n_out)
        sampler_w = torch.as_tensor(sw) if sw is not None else None
        best_state: list = [None]
        lbfgs = self.solver == "lbfgs"
        if lbfgs and sampler_w is not None:
            raise ValueError("imbalance='balanced_sampler' draws minibatches; solver='lbfgs' uses "
                             "every row at once: choose another imbalance option or solver='adamw'")
        full, basis = net, None
        from .rowspace import expanded, reduced, row_space, use_row_space

        if lbfgs and Xv is None and dev.type == "cpu" and use_row_space(n, Xt.shape[1], [self.alpha]):
            # Fewer rows than features: the same problem on the row space's coordinates
            # (medxfer.head.rowspace.row_space), mapped back to the features after training.
            basis, Z = row_space(Xt, None, net.mean.numpy(), net.scale.numpy())
            net, xt = reduced(net, basis), torch.from_numpy(Z)
        if lbfgs:
            opt = torch.optim.LBFGS(net.parameters(), lr=1.0, max_iter=self.max_iter,
                                    history_size=20, tolerance_grad=1e-7, tolerance_change=1e-10,
                                    line_search_fn="strong_wolfe")
        else:
            opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)

        def full_batch(epoch, active):
            net.train()

            def closure():
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net, xt, yt)
                loss.backward()
                return loss
            return float(opt.step(closure).detach())

        def run_epoch(epoch, active):
            net.train()
            order = (torch.multinomial(sampler_w, n, replacement=True) if sampler_w is not None
                     else torch.randperm(n))
            total = 0.0
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size].to(dev)
                loss = loss_fn(net, xt[idx], yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            return total / n

        def validate_epoch():
            score = task_macro_auc(Yv, predict_proba_nets([net], Xv, self.task_), self.task_)
            if math.isnan(score):  # no label has both classes in validation: use the loss
                with torch.no_grad():
                    logits, _ = net.eval()(torch.from_numpy(Xv).to(dev))
                    score = -float(loss_fn.ce(logits, torch.from_numpy(Yv).to(dev)))
            return np.array([score])

        def keep(improved):
            best_state[0] = copy.deepcopy(net.state_dict())

        # L-BFGS is one full-batch "epoch" of up to max_iter iterations: nothing to stop early.
        res = early_stopping_loop(n_settings=1, max_epochs=1 if lbfgs else (epochs or self.max_epochs),
                                  patience=self.patience, run_epoch=full_batch if lbfgs else run_epoch,
                                  validate=validate_epoch if Xv is not None else None, keep=keep)
        if best_state[0] is not None:
            net.load_state_dict(best_state[0])
        # iterations for L-BFGS (its state records them), epochs for AdamW
        res.n_iter = (int(opt.state_dict()["state"].get(0, {}).get("n_iter", 0)) if lbfgs
                      else res.epochs_run)
        if basis is not None:
            net = expanded(net, full, basis)
        return net.eval(), res

    # ------------------------------------------------------------------ predict

    @property
    def net_(self) -> BottleneckNet:
        """The first (or only) member's network."""
        self._check_fitted()
        return self.members_[0]

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "members_")

    def _check_fitted(self) -> None:
        if not hasattr(self, "members_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator.")

    def _check_X(self, X) -> np.ndarray:
        self._check_fitted()
        return validate_data(self, X, dtype=FEATURE_DTYPES, reset=False)

    def predict_proba(self, X) -> np.ndarray:
        """Probabilities, shape (n_samples, n_labels) (sigmoid) or (n_samples, n_classes)."""
        X = self._check_X(X)
        if self.task_ == "multiclass" and self.n_outputs_ == 1:
            return np.ones((len(X), 1), dtype=np.float32)
        return predict_proba_nets(self.members_, X, self.task_)

    def predict(self, X, threshold=0.5) -> np.ndarray:
        """Multilabel: (n, n_labels) 0/1 at ``threshold`` (scalar or per label);
        multiclass: (n,) most probable class."""
        p = self.predict_proba(X)
        if self.task_ == "multilabel":
            return (p >= np.asarray(threshold)).astype(np.int64)
        return self.classes_[p.argmax(1)]

    def transform(self, X) -> np.ndarray:
        """The codes h (n_samples, bottleneck_dim), or standardized z without bottleneck."""
        X = self._check_X(X)
        net = self.members_[0]
        with torch.no_grad():
            _, h = net.eval()(torch.from_numpy(X).to(net.device))
        return h.cpu().numpy()

    def score(self, X, y, sample_weight=None) -> float:
        """Macro AUC over labels with both classes present (NaN labels ignored)."""
        P = self.predict_proba(X)
        return task_macro_auc(self._encode(y), P, self.task_)

    # ------------------------------------------------------------------ state

    def to_state(self) -> tuple[dict, dict]:
        """(tensors, metadata): everything a fitted estimator is, for the model folder."""
        self._check_fitted()
        multi = len(self.members_) > 1
        tensors = {(f"member{i}." if multi else "") + k: v.detach().cpu().contiguous()
                   for i, net in enumerate(self.members_) for k, v in net.state_dict().items()}
        meta = {"class": type(self).__name__, "params": self.get_params(), "task": self.task_,
                "n_features_in": int(self.n_features_in_), "n_outputs": int(self.n_outputs_),
                "n_members": len(self.members_),
                "member_bottleneck_dims": [None if net.bottleneck is None else
                                           int(net.bottleneck.out_features) for net in self.members_],
                "classes": self.classes_.tolist() if self.task_ == "multiclass" else None,
                "best_epoch": int(self.best_epoch_),
                "best_score": float(self.best_score_) if np.isfinite(self.best_score_) else None,
                "loss_terms": getattr(self, "loss_terms_", {})}
        return tensors, meta

    @classmethod
    def from_state(cls, tensors: dict, meta: dict) -> "BottleneckClassifier":
        """Inverse of :meth:`to_state`; ModelError when the tensors do not fit the metadata."""
        params = meta["params"]
        n = int(meta.get("n_members", params.get("n_ensemble", 1)))
        dims = meta.get("member_bottleneck_dims") or [params["bottleneck_dim"]] * n
        nets = []
        for i in range(n):
            prefix = f"member{i}." if n > 1 else ""
            net = BottleneckNet(meta["n_features_in"], dims[i], meta["n_outputs"])
            try:
                net.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            except (RuntimeError, KeyError) as exc:
                raise ModelError(f"the weights do not fit the model description: {exc}") from exc
            nets.append(net)
        return cls.from_nets(params, nets, task=meta["task"], classes=meta.get("classes"),
                             best_epoch=meta.get("best_epoch", 0),
                             best_score=meta.get("best_score"),
                             loss_terms=meta.get("loss_terms", {}))

    @classmethod
    def from_nets(cls, params: dict, nets: list[BottleneckNet], *, task: str, classes=None,
                  best_epoch: int = 0, best_score=None, history=None, validation=None,
                  loss_terms=None) -> "BottleneckClassifier":
        """A fitted estimator around networks trained elsewhere (the grid trainer,
        fine-tuning, a model folder)."""
        est = cls(**params)
        est.validate_params()
        est.members_ = [net.eval() for net in nets]
        est.task_ = task
        if classes is not None:
            est.classes_ = np.asarray(classes)
        est.n_features_in_ = int(nets[0].mean.shape[0])
        est.n_outputs_ = int(nets[0].head.out_features)
        est.best_epoch_ = int(best_epoch)
        est.best_score_ = float("nan") if best_score is None else float(best_score)
        est.history_ = list(history or [])
        est.validation_ = validation
        est.loss_terms_ = dict(loss_terms or {})
        return est
