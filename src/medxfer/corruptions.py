"""Image disturbances at five severities, for the disturbance study and for augmentation.

Each corruption acts on a decoded grayscale radiograph as the model sees it: a float32
(H, W) array in [0, 1] after the resize to the backbone's input size (so a severity means
the same on every source resolution, and a study reuses the decoded-image cache).
Severity 0 is the identity (the clean image, unchanged); severities 1-5 grow as below.
Built on torchvision.transforms.v2 (blur, rotation, JPEG, resize, contrast, gamma) and
NumPy's generators (noise). Random parts (noise, rotation sign) are drawn from a generator
seeded by (seed, image key, corruption, severity), so a corrupted image is the same in
every run and every worker.

=================  ==========================================  ============================
name               what                                        severities 1..5
=================  ==========================================  ============================
gaussian_noise     additive Gaussian noise, sigma in [0,1]     0.02 0.04 0.08 0.12 0.16
                   intensity units (electronic noise)
poisson_noise      quantum (photon) noise: Poisson(x N) / N,   300 100 50 25 12
                   N photons per unit intensity (low dose)
blur               Gaussian blur, sigma as a share of the      0.002 0.004 0.008 0.012 0.016
                   image side (0.5 ... 4 px at 260 px)
contrast           contrast towards the mean by a factor       0.8 0.6 0.45 0.3 0.2
gamma              gamma curve x ** g (darker mid-tones)       1.2 1.5 2.0 2.5 3.0
jpeg               JPEG re-compression at a quality            80 50 30 15 8
downsample         down by a factor and back up (bilinear)     1.5 2 3 4 6
rotation           small rotation, random sign, black fill     2 4 6 8 10 degrees
=================  ==========================================  ============================

:class:`RandomCorruption` applies a random corruption at a random severity up to a cap,
as training augmentation on (1, H, W) tensors (e.g. to harden a fine-tuned model).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from .errors import MedxferError, unknown_name_message

SEVERITIES = (1, 2, 3, 4, 5)

#: name -> (parameter at severities 1..5, unit)
LEVELS: dict[str, tuple[tuple[float, ...], str]] = {
    "gaussian_noise": ((0.02, 0.04, 0.08, 0.12, 0.16), "sigma"),
    "poisson_noise": ((300, 100, 50, 25, 12), "photons per unit intensity"),
    "blur": ((0.002, 0.004, 0.008, 0.012, 0.016), "sigma / image side"),
    "contrast": ((0.8, 0.6, 0.45, 0.3, 0.2), "contrast factor"),
    "gamma": ((1.2, 1.5, 2.0, 2.5, 3.0), "gamma"),
    "jpeg": ((80, 50, 30, 15, 8), "JPEG quality"),
    "downsample": ((1.5, 2, 3, 4, 6), "factor"),
    "rotation": ((2, 4, 6, 8, 10), "degrees"),
}
CORRUPTIONS = tuple(LEVELS)


def parameter(name: str, severity: int) -> float | None:
    """The corruption's parameter at ``severity`` (None at severity 0)."""
    check(name, severity)
    return None if severity == 0 else LEVELS[name][0][severity - 1]


def check(name: str, severity: int) -> None:
    if name not in LEVELS:
        raise MedxferError(unknown_name_message("corruption", name, CORRUPTIONS))
    if not isinstance(severity, (int, np.integer)) or not 0 <= severity <= 5:
        raise MedxferError(f"corruption severity must be an int from 0 (clean) to 5; got {severity!r}")


def _apply(name: str, v: float, t: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """t: (1, H, W) float32 in [0, 1]."""
    h, w = t.shape[-2:]
    if name == "gaussian_noise":
        return t + torch.from_numpy(rng.normal(0.0, v, size=t.shape).astype(np.float32))
    if name == "poisson_noise":
        lam = t.clamp(0, 1).numpy().astype(np.float64) * v
        return torch.from_numpy((rng.poisson(lam) / v).astype(np.float32))
    if name == "blur":
        sigma = v * max(h, w)
        k = int(2 * np.ceil(3 * sigma) + 1)
        return F.gaussian_blur(t, [k, k], [sigma, sigma])
    if name == "contrast":
        return F.adjust_contrast(t, v)
    if name == "gamma":
        return F.adjust_gamma(t.clamp(0, 1), v)
    if name == "jpeg":
        u8 = (t.clamp(0, 1) * 255).round().to(torch.uint8)
        return F.jpeg(u8, int(v)).to(torch.float32) / 255
    if name == "downsample":
        small = [max(1, round(h / v)), max(1, round(w / v))]
        down = F.resize(t, small, interpolation=F.InterpolationMode.BILINEAR, antialias=True)
        return F.resize(down, [h, w], interpolation=F.InterpolationMode.BILINEAR, antialias=False)
    if name == "rotation":
        sign = 1.0 if rng.random() < 0.5 else -1.0
        return F.rotate(t, sign * float(v), interpolation=F.InterpolationMode.BILINEAR, fill=0.0)
    raise AssertionError(name)


def corrupt(gray: np.ndarray, name: str, severity: int, *, seed: int = 0, key: str = "") -> np.ndarray:
    """``gray`` (H, W) float32 in [0, 1] corrupted by ``name`` at ``severity`` (0: returned
    unchanged). ``key`` (e.g. the image path) and ``seed`` fix the random draws."""
    check(name, severity)
    if severity == 0:
        return gray
    rng = np.random.default_rng([seed, zlib.crc32(key.encode()), CORRUPTIONS.index(name), severity])
    t = torch.from_numpy(np.ascontiguousarray(gray, dtype=np.float32)).unsqueeze(0)
    out = _apply(name, parameter(name, severity), t, rng).clamp(0, 1)
    return out[0].numpy().astype(np.float32, copy=False)


@dataclass(frozen=True)
class Corruption:
    """One corruption at one severity, as a callable on (H, W) arrays; recorded in the
    manifest of the features it made, so corrupted features never pass for clean ones."""

    name: str
    severity: int
    seed: int = 0

    def __post_init__(self):
        check(self.name, self.severity)

    def __call__(self, gray: np.ndarray, key: str = "") -> np.ndarray:
        return corrupt(gray, self.name, self.severity, seed=self.seed, key=key)

    def as_dict(self) -> dict | None:
        if self.severity == 0:
            return None  # the identity: the same features as a clean extraction
        return {"name": self.name, "severity": int(self.severity), "seed": int(self.seed),
                "parameter": parameter(self.name, self.severity)}


class RandomCorruption(torch.nn.Module):
    """Training augmentation: with probability ``p``, one of ``names`` at a severity drawn
    from 1..``max_severity``, on a (1, H, W) float tensor in [0, 1]."""

    def __init__(self, names=CORRUPTIONS, max_severity: int = 2, p: float = 0.5,
                 generator: np.random.Generator | None = None):
        super().__init__()
        for n in names:
            check(n, max_severity)
        self.names, self.max_severity, self.p = tuple(names), int(max_severity), float(p)
        self.rng = generator or np.random.default_rng()

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if self.max_severity == 0 or self.rng.random() >= self.p:
            return t
        name = self.names[self.rng.integers(len(self.names))]
        sev = int(self.rng.integers(1, self.max_severity + 1))
        return _apply(name, parameter(name, sev), t.float(), self.rng).clamp(0, 1)
