"""Many settings of the bottleneck model trained in one pass over cached features.

All settings see the same minibatches. Their bottleneck matrices are concatenated, so the
dominant product z @ [W_1 ... W_S] is one large matrix multiply instead of S small ones,
and AdamW is applied per setting (each its own learning rate and weight decay). Each setting
has its own early stopping on validation macro AUC; the best epoch's weights of every
setting are kept. Settings may differ in bottleneck_dim (padded and masked), l1, l2, alpha,
lr, weight_decay, imbalance ("none", "pos_weight", "class_balanced", "focal") and
focal_gamma. Multi-label data only (per-finding sigmoid heads).

Each result is an ordinary fitted :class:`BottleneckClassifier`, so it predicts, saves and
loads like one trained alone, and it equals (up to float rounding) the same setting run in
a grid of one: initial weights (drawn as a lone BottleneckClassifier with this seed draws
them) and batch order depend only on ``random_state``, not on the other settings.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.model_selection import GroupShuffleSplit
from torch.nn import functional as F

from .model import BottleneckClassifier, _macro_auc, _Net

GRID_IMBALANCE = ("none", "pos_weight", "class_balanced", "focal")


def fit_grid(X, Y, grid: list[dict], *, groups=None, validation_fraction: float = 0.2,
             batch_size: int = 512, max_epochs: int = 100, patience: int = 5,
             random_state: int = 0, progress=None) -> list[BottleneckClassifier]:
    """Train every setting of ``grid`` (dicts of BottleneckClassifier parameters) at once.

    Parameters
    ----------
    X : (n, d) features.  Y : (n, L) labels 1/0/NaN.
    groups : (n,) patient ids; the validation part is patient-wise.

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
    ks_all = [p.get("bottleneck_dim", 128) for p in grid]
    if len(set(ks_all)) > 1:
        # One pass per bottleneck width: padding every setting to the widest would waste
        # most of the big matrix multiply on zeros.
        out: list = [None] * len(grid)
        for k in sorted(set(ks_all), key=str):
            idx = [i for i, kk in enumerate(ks_all) if kk == k]
            for i, e in zip(idx, fit_grid(X, Y, [grid[i] for i in idx], groups=groups,
                                          validation_fraction=validation_fraction,
                                          batch_size=batch_size, max_epochs=max_epochs,
                                          patience=patience, random_state=random_state,
                                          progress=progress)):
                out[i] = e
        return out
    ests = []
    for params in grid:
        e = BottleneckClassifier(**(params | {"batch_size": batch_size, "max_epochs": max_epochs,
                                              "patience": patience, "random_state": random_state,
                                              "validation_fraction": validation_fraction}))
        e._validate_params()
        if e.imbalance not in GRID_IMBALANCE or e.bottleneck_dim is None:
            raise ValueError(f"fit_grid supports bottleneck settings with imbalance in "
                             f"{GRID_IMBALANCE}; got {params}")
        e.task_ = "multilabel"
        ests.append(e)
    g = np.arange(len(X)) if groups is None else np.asarray(groups)
    tr, va = next(GroupShuffleSplit(n_splits=1, test_size=validation_fraction,
                                    random_state=random_state).split(X, groups=g))
    Xt, Yt, Xv, Yv = X[tr], Y[tr], X[va], Y[va]
    S, d, L = len(ests), X.shape[1], Y.shape[1]
    ks = [e.bottleneck_dim for e in ests]
    K = max(ks)
    mean = torch.from_numpy(Xt.mean(0))
    scale = torch.from_numpy(Xt.std(0) + 1e-6)

    with torch.random.fork_rng(devices=[]):
        # The same initialization a lone BottleneckClassifier with this seed would draw.
        inits = []
        for k in sorted(set(ks)):
            torch.manual_seed(random_state)
            inits.append((k, _Net(d, k, L)))
        init = dict(inits)
        W = torch.zeros(d, S, K)
        V = torch.zeros(S, K, L)
        b = torch.zeros(S, L)
        mask = torch.zeros(1, S, K)
        for s, k in enumerate(ks):
            W[:, s, :k] = init[k].bottleneck.weight.detach().T
            V[s, :k] = init[k].head.weight.detach().T
            b[s] = init[k].head.bias.detach()
            mask[0, s, :k] = 1
        params = [p.requires_grad_(True) for p in (W, V, b)]
        state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]

        def col(name, dtype=torch.float32):
            return torch.tensor([float(getattr(e, name)) for e in ests], dtype=dtype)
        lr, wd, l1, l2, alpha, gamma = (col(n) for n in ("lr", "weight_decay", "l1", "l2", "alpha", "focal_gamma"))
        focal = torch.tensor([e.imbalance == "focal" for e in ests])
        wpos = torch.stack([torch.as_tensor(e._loss_weights(Yt)["pos"], dtype=torch.float32)
                            if e.imbalance != "focal" else torch.ones(L) for e in ests])
        wneg = torch.stack([torch.as_tensor(e._loss_weights(Yt)["neg"], dtype=torch.float32)
                            if e.imbalance != "focal" else torch.ones(L) for e in ests])

        xt = (torch.from_numpy(Xt) - mean) / scale
        xv = (torch.from_numpy(Xv) - mean) / scale
        yt = torch.from_numpy(Yt)
        n = len(xt)
        best = torch.full((S,), -math.inf)
        best_W, best_V, best_b = W.detach().clone(), V.detach().clone(), b.detach().clone()
        best_epoch = [0] * S
        bad = torch.zeros(S, dtype=torch.long)
        active = torch.ones(S, dtype=torch.bool)
        history = [[] for _ in range(S)]
        step = 0
        torch.manual_seed(random_state)
        for epoch in range(1, max_epochs + 1):
            order = torch.randperm(n)
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                z, y = xt[idx], yt[idx]
                h = (z @ W.reshape(d, S * K)).reshape(-1, S, K) * mask  # (B, S, K)
                logits = torch.einsum("bsk,skl->bsl", h, V) + b  # (B, S, L)
                known = ~torch.isnan(y)
                t = torch.nan_to_num(y, nan=0.0)[:, None, :].expand_as(logits)
                per = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
                p = torch.sigmoid(logits)
                pt = torch.where(t > 0.5, p, 1 - p)
                weight = torch.where(focal[None, :, None], (1 - pt) ** gamma[None, :, None],
                                     torch.where(t > 0.5, wpos[None], wneg[None]))
                ce = (per * weight * known[:, None, :]).sum((0, 2)) / known.sum().clamp(min=1)
                reg = l1 * h.abs().sum(2).mean(0) + l2 * h.pow(2).sum(2).mean(0)
                pen = alpha * ((W * mask).pow(2).sum((0, 2)) + V.pow(2).sum((1, 2)))
                loss = (ce + reg + pen).sum()  # settings are independent: their sum separates
                for prm in params:
                    prm.grad = None
                loss.backward()
                step += 1
                with torch.no_grad():
                    _adamw(params, state, step, lr * active, wd)
                    W.mul_(mask)
            with torch.no_grad():
                hv = (xv @ W.reshape(d, S * K)).reshape(-1, S, K)
                pv = torch.sigmoid(torch.einsum("bsk,skl->bsl", hv, V) + b).numpy()
            for s in range(S):
                if not active[s]:
                    continue
                score = _macro_auc(Yv, pv[:, s], "multilabel")
                history[s].append({"epoch": epoch, "val_macro_auc": score})
                if score > best[s] + 1e-6:
                    best[s], best_epoch[s], bad[s] = score, epoch, 0
                    best_W[:, s], best_V[s], best_b[s] = W[:, s].detach(), V[s].detach(), b[s].detach()
                else:
                    bad[s] += 1
                    if bad[s] >= patience:
                        active[s] = False
            if progress:
                progress(f"epoch {epoch}: {int(active.sum())} of {S} settings still improving")
            if not active.any():
                break

    for s, e in enumerate(ests):
        k = ks[s]
        net = _Net(d, k, L)
        with torch.no_grad():
            net.mean.copy_(mean)
            net.scale.copy_(scale)
            net.bottleneck.weight.copy_(best_W[:, s, :k].T)
            net.head.weight.copy_(best_V[s, :k].T)
            net.head.bias.copy_(best_b[s])
        e.net_ = net.eval()
        e.n_features_in_, e.n_outputs_ = d, L
        e.best_epoch_, e.best_score_, e.history_ = best_epoch[s], float(best[s]), history[s]
        e.validation_ = (Xv, Yv, e._proba(Xv))
    return ests


def _adamw(params, state, step, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.AdamW's update with a learning rate and decay per setting (dim S)."""
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
