"""Is this input like the images the model was trained on? A distance in feature space and,
for DICOM, the header's own word.

Feature distance: the training features are standardized and projected on their first r
principal components (r <= 64); an input's score is its Mahalanobis distance there plus
the standardized norm of what the components leave out (so an input unlike anything in
training scores high even in directions training never varied in), divided by the
training-scale so typical scores sit near 1. The threshold is the ``quantile`` (0.99) of
out-of-fold scores of the training images (5 folds: each scored by a model fitted without
it), so about 1% of new images like the training ones are flagged: a known false-alarm
rate, not an in-sample one. Stored in the model folder as ``ood.safetensors``.

DICOM: a Modality other than a radiograph's (CR, DX, DR, RG; OT "other", as many
secondary-capture exports say, and an absent Modality pass) or a BodyPartExamined other
than chest (absent passes) is flagged whatever the score.
"""

from __future__ import annotations

import numpy as np

RADIOGRAPH_MODALITIES = {"CR", "DX", "DR", "RG", "OT", ""}
CHEST_PARTS = {"CHEST", "THORAX", "LUNG", "LUNGS", "PORTABLE CHEST", ""}


class FeatureDistance:
    """Fitted on training features; ``score(X)`` and ``flag(X)``."""

    def __init__(self, mean, scale, components, variances, residual_scale, norm, threshold, quantile):
        self.mean, self.scale = np.asarray(mean, np.float32), np.asarray(scale, np.float32)
        self.components = np.asarray(components, np.float32)
        self.variances = np.asarray(variances, np.float32)
        self.residual_scale = float(residual_scale)
        self.norm = float(norm)
        self.threshold = float(threshold)
        self.quantile = float(quantile)

    @classmethod
    def fit(cls, X, *, groups=None, quantile: float = 0.99, max_components: int = 64,
            n_splits: int = 5, seed: int = 0) -> "FeatureDistance":
        """``groups``: patient IDs, so the out-of-fold scores behind the threshold are of
        patients the fitted part never saw (a patient's other images would score too low)."""
        X = np.asarray(X)
        if X.dtype not in (np.float16, np.float32):
            X = X.astype(np.float32)
        n = len(X)
        if n < 10:
            raise ValueError("the out-of-distribution score needs at least 10 training images")
        rng = np.random.default_rng(seed)
        groups = np.arange(n) if groups is None else np.asarray(groups).astype(str)
        uniq, inv = np.unique(groups, return_inverse=True)
        n_splits = max(2, min(n_splits, len(uniq)))
        fold = (rng.permutation(len(uniq)) % n_splits)[inv]
        oof = np.empty(n, np.float64)
        if n - np.bincount(fold).max() > X.shape[1]:
            # Tall: every fold's parts from per-fold sums and Gram matrices, one pass over X.
            folds = _fold_moments(X, fold, n_splits)
            for k in range(n_splits):
                part = _parts_from_moments(_without(folds, k), max_components, X, fold != k)
                oof[fold == k] = _raw_score(X[fold == k], *part)
            parts = _parts_from_moments(_without(folds, None), max_components, X, None)
        else:
            for k in range(n_splits):
                part = _fit_parts(X[fold != k].astype(np.float32), max_components)
                oof[fold == k] = _raw_score(X[fold == k], *part)
            parts = _fit_parts(X.astype(np.float32), max_components)
        norm = float(np.median(oof)) or 1.0
        return cls(*parts, norm=norm, threshold=float(np.quantile(oof / norm, quantile)),
                   quantile=quantile)

    def score(self, X) -> np.ndarray:
        """Distance from the training features; about 1 for a typical training-like image."""
        return _raw_score(np.asarray(X), self.mean, self.scale, self.components,
                          self.variances, self.residual_scale) / self.norm

    def flag(self, X) -> np.ndarray:
        return self.score(X) > self.threshold

    def to_state(self) -> tuple[dict, dict]:
        import torch

        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in
                   (("mean", self.mean), ("scale", self.scale), ("components", self.components),
                    ("variances", self.variances))}
        return tensors, {"residual_scale": self.residual_scale, "norm": self.norm,
                         "threshold": self.threshold, "quantile": self.quantile,
                         "components": int(len(self.components))}

    @classmethod
    def from_state(cls, tensors: dict, meta: dict) -> "FeatureDistance":
        return cls(tensors["mean"].numpy(), tensors["scale"].numpy(), tensors["components"].numpy(),
                   tensors["variances"].numpy(), meta["residual_scale"], meta["norm"],
                   meta["threshold"], meta["quantile"])


def _fit_parts(X: np.ndarray, max_components: int):
    mean = X.mean(0)
    scale = X.std(0)
    scale[scale < 1e-6] = 1.0
    Z = (X - mean) / scale
    r = int(min(max_components, len(X) - 1, X.shape[1]))
    s, comps = _top_components(Z, r)
    var = (s ** 2) / max(1, len(X) - 1)
    var = np.maximum(var, 1e-6)
    resid = Z - (Z @ comps.T) @ comps
    rscale = float(np.sqrt((resid ** 2).sum(1).mean())) or 1.0
    return mean, scale, comps, var, 1.0 / rscale


def _top_components(Z: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """The r largest singular values of Z and their right singular vectors (r, d), exactly.
    More rows than columns (a large training set): eigenvectors of the d x d Gram matrix,
    accumulated in float64 over row blocks, instead of an SVD of the tall matrix (4x faster
    at 8,000 x 4,952 on 2 cores, equal to the SVD to 4e-8, no n x d factor in memory; tiny
    eigenvalues of a rank-deficient matrix stay tiny, under the variance floor). Otherwise
    the n x n Gram matrix Z Z^T: its top r eigenvectors u give the components Z^T u / s
    (a full thin SVD of a near-square 4,800 x 4,952 matrix took minutes on 2 cores)."""
    if Z.shape[0] > Z.shape[1]:
        G = np.zeros((Z.shape[1], Z.shape[1]), np.float64)
        for i in range(0, len(Z), 8192):  # float64 products, 8,192 rows at a time
            c = Z[i:i + 8192].astype(np.float64)
            G += c.T @ c
        w, v = _top_eigh(G, r)
        return np.sqrt(np.maximum(w, 0.0)).astype(np.float32), v.T.astype(np.float32)
    Z64 = Z.astype(np.float64)
    w, u = _top_eigh(Z64 @ Z64.T, r)
    w = np.maximum(w, 0.0)
    s = np.sqrt(w)
    v = (Z64.T @ u) / np.where(s > 0, s, 1.0)
    return s.astype(np.float32), v.T.astype(np.float32)


_ROWS = 8192  # rows per block of the products below


def _raw_score(X, mean, scale, comps, var, rscale) -> np.ndarray:
    """Scores of X's rows, 8,192 rows at a time in float32 (X may be float16)."""
    out = np.empty(len(X), np.float64)
    for i in range(0, len(X), _ROWS):
        Z = (np.asarray(X[i:i + _ROWS], np.float32) - mean) / scale
        proj = Z @ comps.T
        maha = (proj ** 2 / var).sum(1) / max(1, len(var))
        resid = Z - proj @ comps
        out[i:i + _ROWS] = np.sqrt(maha) + np.sqrt((resid ** 2).sum(1)) * rscale
    return out


def _fold_moments(X, fold, n_splits) -> dict:
    """Per fold: row count, column sums and Gram matrix of (x - c), c the column means of X
    (shifted so that float32 block products lose nothing to large means); one pass over X.
    The Gram matrices are float32 (K x d x d: 490 MB at d = 4,952 and 5 folds), summed in
    float64 where the folds are combined."""
    c = np.zeros(X.shape[1])
    for i in range(0, len(X), _ROWS):
        c += X[i:i + _ROWS].sum(0, dtype=np.float64)
    c /= len(X)
    c32 = c.astype(np.float32)
    from scipy.linalg.blas import ssyrk

    d = X.shape[1]
    count = np.bincount(fold, minlength=n_splits)
    sums = np.zeros((n_splits, d))
    grams = np.zeros((n_splits, d, d), np.float32)
    for i in range(0, len(X), _ROWS):
        B = np.asarray(X[i:i + _ROWS], np.float32) - c32
        f = fold[i:i + _ROWS]
        for k in np.unique(f):
            b = B[f == k]
            sums[k] += b.sum(0, dtype=np.float64)
            # b^T b by BLAS syrk (one triangle: half the products of b.T @ b), in place:
            # b.T and grams[k].T are the Fortran-ordered views syrk takes without a copy
            ssyrk(1.0, np.ascontiguousarray(b).T, trans=0, beta=1.0, c=grams[k].T, overwrite_c=1)
    for k in range(n_splits):  # syrk filled the lower triangle (C order): mirror it
        grams[k] += np.triu(grams[k].T, 1)
    return {"c": c, "count": count, "sums": sums, "grams": grams}


def _without(folds: dict, k) -> tuple:
    """(n, shifted sums, shifted Gram, c) of every fold but k (k None: all rows)."""
    keep = [j for j in range(len(folds["count"])) if j != k]
    G = np.zeros(folds["grams"].shape[1:])
    for j in keep:
        G += folds["grams"][j]
    return int(folds["count"][keep].sum()), folds["sums"][keep].sum(0), G, folds["c"]


#: From this dimension on, the top eigenpairs come from Lanczos iterations (ARPACK), not a
#: full tridiagonalization: 6 x 23 s at d = 4,952 on 2 cores (docs/full_scale.md).
LANCZOS_FROM = 2000


def _top_eigh(G: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """The r largest eigenvalues (descending) and their eigenvectors (columns) of the
    symmetric G, to machine precision: ARPACK's Lanczos with tol=0 (converged to machine
    precision, a fixed start vector) for large G, LAPACK's subset eigh otherwise."""
    d = len(G)
    if d >= LANCZOS_FROM and r < d // 2:
        from scipy.sparse.linalg import eigsh

        w, v = eigsh(G, k=r, which="LA", tol=0, v0=np.ones(d))
    else:
        from scipy.linalg import eigh

        w, v = eigh(G, subset_by_index=[d - r, d - 1])
    order = np.argsort(w)[::-1]
    return w[order], v[:, order]


def _parts_from_moments(moments: tuple, max_components: int, X, rows):
    """:func:`_fit_parts` of X's ``rows`` (a mask; None: all) from their moments: the
    standardized Gram matrix is D^-1 (G - n u u^T) D^-1 (u = mean - c) and its top r
    eigenvectors are the components. The mean squared residual is the trace less their
    eigenvalues; where that is under 0.1% of the trace (a difference of near-equal numbers,
    0 where the components span every direction) it is measured on the rows themselves, in
    float32 block by block as scores measure it."""
    n, sums, G, c = moments
    u = sums / n
    mean = c + u
    scale = np.sqrt(np.maximum(np.diag(G) / n - u * u, 0.0))
    scale[scale < 1e-6] = 1.0
    Gz = G  # in place: D^-1 (G - n u u^T) D^-1, no other d x d copy
    Gz -= n * np.outer(u, u)
    Gz /= scale[:, None]
    Gz /= scale[None, :]
    d = len(Gz)
    r = int(min(max_components, n - 1, d))
    w, v = _top_eigh(Gz, r)
    s = np.sqrt(np.maximum(w, 0.0))
    var = np.maximum((s ** 2) / max(1, n - 1), 1e-6)
    mean, scale, comps = mean.astype(np.float32), scale.astype(np.float32), v.T.astype(np.float32)
    trace = float(np.trace(Gz))
    resid_sq = trace - float(np.maximum(w, 0.0).sum())
    if resid_sq > 1e-3 * trace:  # what the components leave is not a rounding remainder
        rscale = float(np.sqrt(resid_sq / n)) or 1.0
        return mean, scale, comps, var.astype(np.float32), 1.0 / rscale
    resid_sq = 0.0
    for i in range(0, len(X), _ROWS):
        B = np.asarray(X[i:i + _ROWS], np.float32)
        if rows is not None:
            B = B[rows[i:i + _ROWS]]
        Z = (B - mean) / scale
        resid_sq += float(((Z - (Z @ comps.T) @ comps) ** 2).sum())
    rscale = float(np.sqrt(resid_sq / n)) or 1.0
    return mean, scale, comps, var.astype(np.float32), 1.0 / rscale


def dicom_header_flags(path) -> list[str]:
    """Reasons a DICOM file is not a chest radiograph by its own header (empty when it looks
    like one or says nothing); [] for other files."""
    from pathlib import Path

    from .images import DICOM_SUFFIXES

    if Path(path).suffix.lower() not in DICOM_SUFFIXES:
        return []
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # the decoder reports unreadable files
        return []
    out = []
    modality = str(getattr(ds, "Modality", "") or "").upper().strip()
    part = str(getattr(ds, "BodyPartExamined", "") or "").upper().strip()
    if modality not in RADIOGRAPH_MODALITIES:
        out.append(f"DICOM Modality is {modality}, not a radiograph (CR/DX)")
    if part not in CHEST_PARTS:
        out.append(f"DICOM BodyPartExamined is {part}, not CHEST")
    return out


def ood_reasons(path, score: float | None, distance: FeatureDistance | None) -> list[str]:
    """Why an input is out of distribution: its DICOM header (dicom_header_flags) and a
    feature distance above the threshold; empty when neither. The one rule behind predict
    and the service."""
    why = dicom_header_flags(path)
    if distance is not None and score is not None and score > distance.threshold:
        why.append(f"features far from the training images (score {score:.2f} > "
                   f"{distance.threshold:.2f})")
    return why
