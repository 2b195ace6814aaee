"""The network of the paper's model: standardization, bottleneck W, head V, b.

    z = (x - mean) / scale        standardized backbone features, statistics of the training rows
    h = W^T z                     W in R^{d x k}; no bottleneck (k = None) gives h = z
    logits = V^T h + b
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class BottleneckNet(nn.Module):
    """Returns (logits (n, n_out), codes h (n, k))."""

    def __init__(self, d: int, k: int | None, n_out: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("scale", torch.ones(d))
        self.bottleneck = nn.Linear(d, k, bias=False) if k else None
        self.head = nn.Linear(k or d, n_out)

    def standardize_like(self, X: np.ndarray | torch.Tensor) -> "BottleneckNet":
        """Set mean and scale from training rows X (n, d)."""
        x = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X, np.float32)
        with torch.no_grad():
            self.mean.copy_(torch.from_numpy(x.mean(0)))
            self.scale.copy_(torch.from_numpy(x.std(0) + 1e-6))
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = (x - self.mean) / self.scale
        h = self.bottleneck(z) if self.bottleneck is not None else z
        return self.head(h), h

    @property
    def device(self) -> torch.device:
        return self.head.weight.device


def probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Per-finding sigmoid (multilabel) or softmax over classes (multiclass)."""
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, -1)


def predict_proba_nets(nets: list[nn.Module], X, task: str, *, batch_size: int = 65536) -> np.ndarray:
    """Mean probability over ``nets`` for X (n, d); inputs go to each net's own device, the
    one code path for every caller (estimator, grid, fine-tuning)."""
    X = np.asarray(X, dtype=np.float32)
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
