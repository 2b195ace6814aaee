"""The network of the paper's model: standardization, bottleneck W, head V, b.

    z = (x - mean) / scale        standardized backbone features, statistics of the training rows
    h = W^T z                     W in R^{d x k}; no bottleneck (k = None) gives h = z
    logits = V^T h + b

In training, the first product (W^T z, or V^T z without a bottleneck) is taken over row
chunks of x (:class:`StandardizedProduct`): x may be the stored float16 features, each chunk
is standardized in float32 on the fly, and the backward pass recomputes the chunk instead
of keeping z. The peak memory of a full-batch step is then x itself plus one chunk, not
two float32 copies of the whole matrix (docs/full_scale.md).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


#: Rows per chunk of the standardized product: 4096 x 4,952 float32 is 81 MB.
CHUNK_ROWS = 4096


class StandardizedProduct(torch.autograd.Function):
    """((x - mean) / scale) @ weight.T over row chunks of x, differentiable in ``weight``
    only (x is data; mean and scale are buffers). x can be float16: each chunk is cast to
    float32 before the arithmetic, so the math is that of the float32 formula. ``rows``
    (optional, int64) selects x's rows chunk by chunk, so a fold's training rows are never
    copied out of the whole matrix."""

    # The division by scale is folded into the weights: ((x - m) / s) W^T = (x - m) (W / s)^T
    # and G^T ((x - m) / s) = (G^T (x - m)) / s, so a chunk costs one elementwise pass
    # (x - m, which casts float16 to float32 as it subtracts) instead of three (cast,
    # subtract, divide); the subtraction stays before the product, so a near-constant
    # column (tiny s) loses nothing to cancellation.

    @staticmethod
    def forward(ctx, x, mean, scale, weight, rows=None):
        ctx.save_for_backward(x, mean, scale, weight, rows)
        n = len(x) if rows is None else len(rows)
        out = weight.new_empty((n, weight.shape[0]))
        scaled = (weight / scale).T
        for start in range(0, n, CHUNK_ROWS):
            centred = _chunk(x, rows, start) - mean.to(weight.dtype)
            torch.matmul(centred.to(weight.dtype), scaled, out=out[start:start + CHUNK_ROWS])
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, mean, scale, weight, rows = ctx.saved_tensors
        grad = torch.zeros_like(weight)
        for start in range(0, len(grad_out), CHUNK_ROWS):
            centred = _chunk(x, rows, start) - mean.to(weight.dtype)
            grad.addmm_(grad_out[start:start + CHUNK_ROWS].T, centred.to(weight.dtype))
        return None, None, None, grad.div_(scale), None


def _chunk(x: torch.Tensor, rows: torch.Tensor | None, start: int) -> torch.Tensor:
    if rows is None:
        return x[start:start + CHUNK_ROWS]
    return x.index_select(0, rows[start:start + CHUNK_ROWS])


def column_moments(x: np.ndarray, chunk: int = CHUNK_ROWS, rows=None) -> tuple[np.ndarray, np.ndarray]:
    """Column means and population variances of x (n, d) (or of its ``rows``), two passes in
    float64 over row chunks (any float dtype; memory: one chunk)."""
    n = len(x) if rows is None else len(rows)
    part = (lambda a: x[a:a + chunk]) if rows is None else (lambda a: x[rows[a:a + chunk]])  # noqa: E731
    total = np.zeros(x.shape[1])
    for start in range(0, n, chunk):
        total += part(start).sum(0, dtype=np.float64)
    mean = total / max(n, 1)
    sq = np.zeros(x.shape[1])
    for start in range(0, n, chunk):
        sq += np.square(part(start).astype(np.float64) - mean).sum(0)
    return mean, sq / max(n, 1)


def _chunked(x: torch.Tensor, layer: nn.Linear) -> bool:
    """Training on data (x needs no gradient, the layer does) outside an export trace."""
    return (torch.is_grad_enabled() and layer.weight.requires_grad and not x.requires_grad
            and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export())


class BottleneckNet(nn.Module):
    """Returns (logits (n, n_out), codes h (n, k)); h is None for a linear head in training
    (z is never materialized there)."""

    def __init__(self, d: int, k: int | None, n_out: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("scale", torch.ones(d))
        self.bottleneck = nn.Linear(d, k, bias=False) if k else None
        self.head = nn.Linear(k or d, n_out)

    def standardize_like(self, X: np.ndarray | torch.Tensor) -> "BottleneckNet":
        """Set mean and scale (population standard deviation + 1e-6) from training rows X
        (n, d), in float64 over row chunks: no float32 copy of X."""
        x = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
        mean, var = column_moments(x)
        with torch.no_grad():
            self.mean.copy_(torch.from_numpy(mean.astype(np.float32)))
            self.scale.copy_(torch.from_numpy((np.sqrt(var) + 1e-6).astype(np.float32)))
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        first = self.bottleneck if self.bottleneck is not None else self.head
        if _chunked(x, first):
            out = StandardizedProduct.apply(x, self.mean, self.scale, first.weight)
            if self.bottleneck is None:  # the linear head on z; z is not materialized
                return out + self.head.bias, None
            return self.head(out), out
        z = (x.to(self.mean.dtype) - self.mean) / self.scale
        h = self.bottleneck(z) if self.bottleneck is not None else z
        return self.head(h), h

    @property
    def device(self) -> torch.device:
        return self.head.weight.device


def probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Per-finding sigmoid (multilabel) or softmax over classes (multiclass)."""
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, -1)


def predict_proba_nets(nets: list[nn.Module], X, task: str, *, batch_size: int = 16384) -> np.ndarray:
    """Mean probability over ``nets`` for X (n, d); inputs go to each net's own device in
    batches (float16 X stays float16 until a batch is cast), the one code path for every
    caller (estimator, grid, fine-tuning)."""
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float16):
        X = X.astype(np.float32)
    out = []
    with torch.no_grad():
        for net in nets:
            net.eval()
            parts = []
            for start in range(0, max(len(X), 1), batch_size):
                x = torch.from_numpy(X[start:start + batch_size]).to(net.device)
                parts.append(probabilities(net(x)[0], task).cpu())
            out.append(torch.cat(parts))
    return torch.stack(out).mean(0).numpy()
