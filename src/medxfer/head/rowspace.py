"""Training on the row space: with fewer rows than features (n < d) and a weight penalty,
the same L-BFGS problem on r <= n - 1 coordinates, mapped back to the features after
training (used by :func:`medxfer.head.joint.fit_lbfgs_shared` and
:class:`medxfer.head.BottleneckClassifier` with ``solver="lbfgs"``)."""

from __future__ import annotations

import numpy as np
import torch

from .net import BottleneckNet


#: Train on the row space's coordinates when there are fewer rows than features and the
#: weight penalty is on (:func:`row_space`); False: always on the features themselves.
ROW_SPACE = True


def use_row_space(n_rows: int, d: int, alphas) -> bool:
    return ROW_SPACE and n_rows < d and all(a > 0 for a in alphas)


def first_layer(net: BottleneckNet) -> torch.nn.Linear:
    """The layer that meets the features: the bottleneck W, or the head when there is none."""
    return net.bottleneck if net.bottleneck is not None else net.head


def row_space(X: np.ndarray, rows, mean: np.ndarray, scale: np.ndarray
              ) -> tuple[torch.Tensor, np.ndarray]:
    """(B (d, r) with orthonormal columns spanning the standardized training rows, Z = Zs B
    (n, r) float32): the training rows in coordinates of their own row space.

    With fewer rows than features (n < d) and a positive weight penalty, every stationary
    point of the loss has its first-layer weights in the row space of the standardized
    training rows: the data part of their gradient is G^T Zs, which lies in it, so the
    penalty 2 alpha W is zero outside it. Training on Z with weights W_r (out, r) and
    mapping back by W = W_r B^T is then the same problem (the Frobenius penalty is the same
    for W_r and W_r B^T) over r <= n - 1 columns instead of d: the products and the
    L-BFGS vectors shrink by d / r."""
    part = X if rows is None else X[np.asarray(rows)]
    zs = (part.astype(np.float64) - mean) / scale
    u, sv, vt = np.linalg.svd(zs, full_matrices=False)
    r = int((sv > sv[0] * 1e-7).sum()) if len(sv) and sv[0] > 0 else 0
    r = max(r, 1)
    B = torch.from_numpy(np.ascontiguousarray(vt[:r].T).astype(np.float32))
    return B, np.ascontiguousarray((u[:, :r] * sv[:r]).astype(np.float32))


def reduced(net: BottleneckNet, B: torch.Tensor) -> BottleneckNet:
    """``net``'s twin on row-space coordinates: first weights W B, mean 0, scale 1."""
    k = net.bottleneck.out_features if net.bottleneck is not None else None
    with torch.random.fork_rng(devices=[]):  # its own draw is overwritten: the caller's
        small = BottleneckNet(B.shape[1], k, net.head.out_features)  # random state is left as it was
    with torch.no_grad():
        first_layer(small).weight.copy_(first_layer(net).weight @ B)
        if net.bottleneck is not None:
            small.head.weight.copy_(net.head.weight)
        small.head.bias.copy_(net.head.bias)
    return small


def expanded(small: BottleneckNet, net: BottleneckNet, B: torch.Tensor) -> BottleneckNet:
    """Back to the features: first weights W_r B^T, the head as trained."""
    with torch.no_grad():
        first_layer(net).weight.copy_(first_layer(small).weight @ B.T)
        if net.bottleneck is not None:
            net.head.weight.copy_(small.head.weight)
        net.head.bias.copy_(small.head.bias)
    return net
