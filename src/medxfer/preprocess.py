"""Preprocessing from a decoded grayscale image to a backbone input tensor.

A :class:`Preprocessing` is stored in every features manifest and model folder, so a
model always knows exactly how its inputs were made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "lanczos": Image.Resampling.LANCZOS}


@dataclass(frozen=True)
class Preprocessing:
    """Resize the whole image (no crop: findings reach the edges of a radiograph) to a
    square of ``size``, replicate gray to 3 channels, normalize per channel."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(size=int(d["size"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
                   interpolation=d.get("interpolation", "bilinear"))

    def resize(self, gray: np.ndarray) -> np.ndarray:
        """(H, W) float32 in [0, 1] -> (size, size) float32, antialiased."""
        if gray.shape == (self.size, self.size):
            return gray.astype(np.float32, copy=False)
        im = Image.fromarray(np.ascontiguousarray(gray, dtype=np.float32), mode="F")
        im = im.resize((self.size, self.size), _RESAMPLE[self.interpolation])
        return np.asarray(im, dtype=np.float32)

    def to_tensor(self, gray_resized: np.ndarray) -> torch.Tensor:
        """(size, size) in [0, 1] -> normalized (3, size, size) float32 tensor."""
        x = torch.tensor(gray_resized, dtype=torch.float32).clamp_(0, 1)
        x = x.unsqueeze(0).expand(3, -1, -1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return (x - mean) / std

    def __call__(self, gray: np.ndarray) -> torch.Tensor:
        return self.to_tensor(self.resize(gray))
