"""The loss of the paper's model: L_total = L_ce + L_reg (+ the weight penalty).

    L_ce    per-finding binary cross-entropy (multilabel) or softmax cross-entropy
            (multiclass), averaged over the known (non-NaN) label entries of a batch;
            unknown labels contribute nothing to the loss or its gradient
    L_reg   lambda1 * ||h||_1 + lambda2 * ||h||_F^2 on the codes, each a per-sample sum
            averaged over the batch, so lambda1 and lambda2 mean the same at any batch size
    alpha * (||W||_F^2 + ||V||_F^2)   an L2 penalty on the weights (biases excluded)

Class imbalance is a table of strategies (:data:`IMBALANCE`), each giving per-finding (or
per-class) weights, an optional focal modulation and optional sampling weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class Imbalance:
    """One imbalance option. ``weighting``: "uniform", "inverse" (positives weighted by
    negatives/positives) or "effective" (Cui et al., 2019: (1 - beta) / (1 - beta^n));
    ``focal``: multiply each entry by (1 - p_t)^gamma; ``sampler``: draw minibatches with
    replacement, each image weighted by the rarest finding it carries."""

    name: str
    weighting: str = "uniform"
    focal: bool = False
    sampler: bool = False
    doc: str = ""

    def label_weights(self, Y: np.ndarray, task: str, n_classes: int, cb_beta: float) -> dict:
        """{"pos", "neg"} (L,) arrays for multilabel Y (n, L) 1/0/NaN; {"class"} (C,) for
        multiclass class codes Y (n,)."""
        if task == "multilabel":
            known = ~np.isnan(Y)
            pos = np.nansum(Y, axis=0)
            neg = known.sum(axis=0) - pos
            if self.weighting == "inverse":
                return {"pos": np.clip(neg / np.maximum(pos, 1), 1.0, 1e3), "neg": np.ones_like(pos)}
            if self.weighting == "effective":
                wp, wn = _effective(pos, cb_beta), _effective(neg, cb_beta)
                norm = 2.0 / (wp + wn)  # keep the mean weight of a finding at 1
                return {"pos": wp * norm, "neg": wn * norm}
            return {"pos": np.ones_like(pos), "neg": np.ones_like(pos)}
        counts = np.bincount(Y, minlength=n_classes).astype(np.float64)
        if self.weighting == "inverse":
            w = counts.sum() / np.maximum(counts, 1) / len(counts)
        elif self.weighting == "effective":
            w = _effective(counts, cb_beta)
            w = w * len(w) / w.sum()
        else:
            w = np.ones_like(counts)
        return {"class": w}

    def sample_weights(self, Y: np.ndarray, task: str, n_classes: int) -> np.ndarray | None:
        if not self.sampler:
            return None
        if task == "multiclass":
            counts = np.bincount(Y, minlength=n_classes)
            return 1.0 / counts[Y]
        pos = np.nansum(Y, axis=0)
        inv = 1.0 / np.maximum(pos, 1)
        Y0 = np.nan_to_num(Y)
        neg_w = 1.0 / max(1, int((Y0 == 0).all(axis=1).sum()))
        w = np.where(Y0 == 1, inv, 0).max(axis=1)
        return np.where(w > 0, w, neg_w)


def _effective(n, beta: float) -> np.ndarray:
    return (1 - beta) / np.maximum(1 - beta ** np.maximum(n, 1), 1e-12)


#: The imbalance options, by name.
IMBALANCE = {s.name: s for s in (
    Imbalance("none", doc="no reweighting"),
    Imbalance("pos_weight", "inverse", doc="positives of each finding weighted by negatives/positives"),
    Imbalance("class_balanced", "effective", doc="weights from the effective number of samples"),
    Imbalance("focal", focal=True, doc="focal loss with focal_gamma"),
    Imbalance("balanced_sampler", sampler=True, doc="minibatches drawn by the rarest finding"),
)}


def entry_weights(logits: torch.Tensor, t: torch.Tensor, wpos, wneg, focal, gamma) -> torch.Tensor:
    """Weight of each (row, finding) BCE entry. Broadcasts over leading setting axes, so the
    grid trainer uses it for many settings at once: ``focal`` (bool) and ``gamma`` shaped to
    broadcast against ``logits``; ``wpos``/``wneg`` against its last axes."""
    p = torch.sigmoid(logits)
    pt = torch.where(t > 0.5, p, 1 - p)
    return torch.where(torch.as_tensor(focal), (1 - pt) ** gamma, torch.where(t > 0.5, wpos, wneg))


class HeadLoss:
    """L_ce + L_reg + weight penalty for one setting, with label weights from the training
    labels. ``params`` is anything with the HeadSettings attributes (an estimator)."""

    def __init__(self, params, task: str, Y_train: np.ndarray, n_classes: int,
                 device: torch.device | str = "cpu"):
        self.task = task
        self.strategy = IMBALANCE[params.imbalance]
        self.l1, self.l2, self.alpha = float(params.l1), float(params.l2), float(params.alpha)
        self.gamma = float(params.focal_gamma)
        self.has_codes = params.bottleneck_dim is not None
        self.weights = {k: torch.as_tensor(v, dtype=torch.float32, device=device)
                        for k, v in self.strategy.label_weights(Y_train, task, n_classes,
                                                                params.cb_beta).items()}

    def ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.task == "multiclass":
            if self.strategy.focal:
                logp = F.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
                return (-(1 - logp.exp()) ** self.gamma * logp).mean()
            return F.cross_entropy(logits, y, weight=self.weights["class"])
        known, t, fixed, count = self._targets(y)
        per = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
        if fixed is not None:  # no focal term: each entry's weight depends on its label only
            return (per * fixed).sum() / count
        per = per * entry_weights(logits, t, self.weights["pos"], self.weights["neg"],
                                  self.strategy.focal, self.gamma) * known
        return per.sum() / count

    def _targets(self, y: torch.Tensor):
        """(known mask, targets with 0 for unknown, the entries' fixed weights times the
        mask or None with a focal term, the count of known entries), kept for the last y
        (full-batch L-BFGS asks with the same labels hundreds of times)."""
        hit = getattr(self, "_last", None)
        if hit is not None and hit[0] is y:
            return hit[1]
        known = ~torch.isnan(y)
        t = torch.nan_to_num(y, nan=0.0)
        fixed = None
        if not self.strategy.focal:
            fixed = torch.where(t > 0.5, self.weights["pos"], self.weights["neg"]) * known
        out = (known, t, fixed, known.sum().clamp(min=1))
        self._last = (y, out)
        return out

    def code_l1(self, h: torch.Tensor) -> torch.Tensor:
        return self.l1 * h.abs().sum(1).mean() if self.has_codes and self.l1 else h.new_zeros(())

    def code_l2(self, h: torch.Tensor) -> torch.Tensor:
        return self.l2 * h.pow(2).sum(1).mean() if self.has_codes and self.l2 else h.new_zeros(())

    def reg(self, h: torch.Tensor) -> torch.Tensor:
        """L_reg = lambda1 * ||h||_1 + lambda2 * ||h||_F^2 (per-sample sums, batch mean)."""
        return self.code_l1(h) + self.code_l2(h)

    def weight_penalty(self, net: nn.Module) -> torch.Tensor:
        """alpha * (||W||_F^2 + ||V||_F^2); biases are not penalized."""
        if not self.alpha:
            return torch.zeros((), device=next(net.parameters()).device)
        return self.alpha * sum(p.pow(2).sum() for n, p in net.named_parameters()
                                if n.endswith("weight"))

    def __call__(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.total(*net(x), y, net)

    def total(self, logits: torch.Tensor, h: torch.Tensor, y: torch.Tensor,
              net: nn.Module) -> torch.Tensor:
        """L_ce + L_reg + the weight penalty of ``net``, from outputs computed elsewhere (e.g.
        through DistributedDataParallel, which wraps the backbone and ``net`` together).
        ``h`` is None for a linear head trained on chunks (no codes to penalize)."""
        reg = self.reg(h) if h is not None else 0.0
        return self.ce(logits, y) + reg + self.weight_penalty(net)

    def terms(self, net: nn.Module, X: np.ndarray, Y: np.ndarray) -> dict:
        """Each term's size on (X, Y) and the sparsity of the codes: what the training
        summary reports, so a reader sees whether the paper's regularizer acts."""
        X = np.asarray(X)
        with torch.no_grad():
            y = torch.as_tensor(Y, device=net.device)
            logits, codes = [], []
            for i in range(0, len(X), 16384):  # batches: no float32 copy of X
                out, h = net.eval()(torch.as_tensor(X[i:i + 16384], device=net.device))
                logits.append(out)
                if self.has_codes:  # a linear head's h is z itself (n x d): not kept
                    codes.append(h)
            logits = torch.cat(logits)
            h = torch.cat(codes) if self.has_codes else logits.new_zeros((1, 1))
            top = h.abs().max().clamp(min=1e-12)
            return {"ce": float(self.ce(logits, y)), "code_l1": float(self.code_l1(h)),
                    "code_l2": float(self.code_l2(h)),
                    "weight_penalty": float(self.weight_penalty(net)),
                    "code_near_zero_fraction": float((h.abs() < 1e-2 * top).float().mean())
                    if self.has_codes else None}
