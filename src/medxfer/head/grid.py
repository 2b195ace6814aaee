"""Many settings of the bottleneck model trained in one pass over cached features.

All settings see the same minibatches. Their bottleneck matrices are concatenated, so the
dominant product z @ [W_1 ... W_S] is one large matrix multiply instead of S small ones,
and AdamW is applied per setting (each its own learning rate and weight decay). Training
and per-setting early stopping are the shared loop of :mod:`medxfer.head.training`; the
best epoch's weights of every setting are kept. Settings may differ in bottleneck_dim,
l1, l2, alpha, lr, weight_decay, imbalance (any option but "balanced_sampler", which
needs its own minibatches) and focal_gamma. Multi-label data only (per-finding sigmoids).

Each result is an ordinary fitted :class:`BottleneckClassifier`, so it predicts, saves and
loads like one trained alone, and it equals (up to float rounding) the same setting run in
a grid of one: initial weights (drawn as a lone BottleneckClassifier with this seed draws
them) and batch order depend only on ``random_state``, not on the other settings.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import GroupShuffleSplit
from torch.nn import functional as F

from ..settings import HeadSettings, TuneSettings, defaults
from .estimator import BottleneckClassifier, task_macro_auc
from .losses import IMBALANCE, entry_weights
from .net import BottleneckNet
from .training import early_stopping_loop

GRID_IMBALANCE = tuple(name for name, s in IMBALANCE.items() if not s.sampler)
_T = defaults(TuneSettings)


def fit_grid(X, Y, grid: list[dict], *, groups=None,
             validation_fraction: float = _T["validation_fraction"],
             batch_size: int = _T["batch_size"], max_epochs: int = _T["max_epochs"],
             patience: int = _T["patience"], random_state: int = 0,
             progress=None) -> list[BottleneckClassifier]:
    """Train every setting of ``grid`` (dicts of BottleneckClassifier parameters; unset ones
    take :class:`HeadSettings` defaults) at once.

    Parameters
    ----------
    X : (n, d) features.  Y : (n, L) labels 1/0/NaN.
    groups : (n,) patient ids; the validation part is patient-wise.
    progress : callable(epoch, info) after each epoch.

    Returns
    -------
    list of fitted BottleneckClassifier, in grid order, each with ``best_score_`` (its
    validation macro AUC) and ``validation_`` set.
    """
    X = np.asarray(X, dtype=np.float32)
    Y = np.asarray(Y, dtype=np.float32)
    if not 0 < validation_fraction < 1:
        raise ValueError(f"fit_grid needs a validation part: validation_fraction must be in (0, 1), "
                         f"got {validation_fraction}")
    shared = {"solver": "adamw", "batch_size": batch_size, "max_epochs": max_epochs, "patience": patience,
              "random_state": random_state, "validation_fraction": validation_fraction}
    params = [defaults(HeadSettings) | p | shared for p in grid]
    for p in params:
        BottleneckClassifier(**p).validate_params()
        if p["imbalance"] not in GRID_IMBALANCE or p["bottleneck_dim"] is None:
            raise ValueError(f"fit_grid supports bottleneck settings with imbalance in "
                             f"{GRID_IMBALANCE}; got {p}")
    g = np.arange(len(X)) if groups is None else np.asarray(groups)
    tr, va = next(GroupShuffleSplit(n_splits=1, test_size=validation_fraction,
                                    random_state=random_state).split(X, groups=g))
    out: list = [None] * len(params)
    # One pass per bottleneck width: padding every setting to the widest would waste most
    # of the big matrix multiply on zeros.
    ks = [p["bottleneck_dim"] for p in params]
    for k in sorted(set(ks)):
        idx = [i for i, kk in enumerate(ks) if kk == k]
        for i, est in zip(idx, _fit_same_width(X, Y, tr, va, [params[i] for i in idx], k,
                                               progress)):
            out[i] = est
    return out


def _fit_same_width(X, Y, tr, va, params: list[dict], k: int, progress) -> list[BottleneckClassifier]:
    Xt, Yt, Xv, Yv = X[tr], Y[tr], X[va], Y[va]
    S, d, L = len(params), X.shape[1], Y.shape[1]
    p0 = params[0]
    seed, batch_size = p0["random_state"], p0["batch_size"]
    template = BottleneckNet(d, k, L).standardize_like(Xt)
    mean, scale = template.mean, template.scale

    def col(name):
        return torch.tensor([float(p[name]) for p in params], dtype=torch.float32)

    lr, wd, l1, l2, alpha, gamma = (col(n) for n in ("lr", "weight_decay", "l1", "l2", "alpha", "focal_gamma"))
    strategies = [IMBALANCE[p["imbalance"]] for p in params]
    focal = torch.tensor([s.focal for s in strategies])
    weights = [s.label_weights(Yt, "multilabel", L, p["cb_beta"]) for s, p in zip(strategies, params)]
    wpos = torch.stack([torch.as_tensor(w["pos"], dtype=torch.float32) for w in weights])
    wneg = torch.stack([torch.as_tensor(w["neg"], dtype=torch.float32) for w in weights])

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the initialization a lone BottleneckClassifier draws
        init = BottleneckNet(d, k, L)
        W = init.bottleneck.weight.detach().T[:, None, :].repeat(1, S, 1).contiguous()  # (d, S, k)
        V = init.head.weight.detach().T[None].repeat(S, 1, 1).contiguous()  # (S, k, L)
        b = init.head.bias.detach()[None].repeat(S, 1).contiguous()  # (S, L)
        weights_ = [p.requires_grad_(True) for p in (W, V, b)]
        state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in weights_]
        best = [W.detach().clone(), V.detach().clone(), b.detach().clone()]
        xt = (torch.from_numpy(Xt) - mean) / scale
        xv = (torch.from_numpy(Xv) - mean) / scale
        yt = torch.from_numpy(Yt)
        n = len(xt)
        step = [0]

        def run_epoch(epoch, active):
            act = torch.from_numpy(active).float()  # stopped settings get lr 0
            order = torch.randperm(n)  # the batch order a lone estimator with this seed draws
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                z, y = xt[idx], yt[idx]
                h = (z @ W.reshape(d, S * k)).reshape(-1, S, k)  # (B, S, k)
                logits = torch.einsum("bsk,skl->bsl", h, V) + b  # (B, S, L)
                known = ~torch.isnan(y)
                t = torch.nan_to_num(y, nan=0.0)[:, None, :].expand_as(logits)
                per = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
                weight = entry_weights(logits, t, wpos[None], wneg[None], focal[None, :, None],
                                       gamma[None, :, None])
                ce = (per * weight * known[:, None, :]).sum((0, 2)) / known.sum().clamp(min=1)
                reg = l1 * h.abs().sum(2).mean(0) + l2 * h.pow(2).sum(2).mean(0)
                pen = alpha * (W.pow(2).sum((0, 2)) + V.pow(2).sum((1, 2)))
                loss = (ce + reg + pen).sum()  # settings are independent: their sum separates
                for prm in weights_:
                    prm.grad = None
                loss.backward()
                step[0] += 1
                with torch.no_grad():
                    _adamw(weights_, state, step[0], lr * act, wd)
            return None

        def scores():
            with torch.no_grad():
                hv = (xv @ W.reshape(d, S * k)).reshape(-1, S, k)
                lv = torch.einsum("bsk,skl->bsl", hv, V) + b
                pv = torch.sigmoid(lv).numpy()
            out = np.array([task_macro_auc(Yv, pv[:, s], "multilabel") for s in range(S)])
            if np.isnan(out).any():  # AUC undefined on this validation part: use the loss
                yv = torch.from_numpy(Yv)
                known = ~torch.isnan(yv)
                t = torch.nan_to_num(yv, nan=0.0)[:, None, :].expand_as(lv)
                per = F.binary_cross_entropy_with_logits(lv, t, reduction="none") * known[:, None, :]
                neg_loss = -(per.sum((0, 2)) / known.sum().clamp(min=1)).numpy()
                out = np.where(np.isnan(out), neg_loss, out)
            return out

        def keep(improved):
            s = torch.from_numpy(improved)
            best[0][:, s], best[1][s], best[2][s] = W.detach()[:, s], V.detach()[s], b.detach()[s]

        res = early_stopping_loop(n_settings=S, max_epochs=p0["max_epochs"], patience=p0["patience"],
                                  run_epoch=run_epoch, validate=scores, keep=keep,
                                  progress=progress)

    ests = []
    for s, p in enumerate(params):
        net = BottleneckNet(d, k, L)
        with torch.no_grad():
            net.mean.copy_(mean)
            net.scale.copy_(scale)
            net.bottleneck.weight.copy_(best[0][:, s].T)
            net.head.weight.copy_(best[1][s].T)
            net.head.bias.copy_(best[2][s])
        est = BottleneckClassifier.from_nets(p, [net], task="multilabel", best_epoch=res.best_epoch[s],
                                             best_score=res.best_score[s], history=res.history[s])
        est.validation_ = (Xv, Yv, est.predict_proba(Xv))
        est.validation_index_ = va
        ests.append(est)
    return ests


def _adamw(params, state, step, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.AdamW's update with a learning rate and decay per setting (dim S); a
    setting with lr = 0 (stopped) does not move."""
    shapes = ((1, -1, 1), (-1, 1, 1), (-1, 1))  # where S sits in W (d,S,K), V (S,K,L), b (S,L)
    for p, (m, v), shp in zip(params, state, shapes):
        g = p.grad
        lr_s, wd_s = lr.view(shp), wd.view(shp)
        p.mul_(1 - lr_s * wd_s)
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        mhat = m / (1 - b1 ** step)
        vhat = v / (1 - b2 ** step)
        p.sub_(lr_s * mhat / (vhat.sqrt() + eps))
