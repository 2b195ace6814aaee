"""Decode one radiograph file into a grayscale float array in [0, 1].

Every source ends in the same representation, so a backbone sees the same numbers for
the same anatomy whatever the file format:

- 8-bit grayscale ("L"): divided by 255.
- 16-bit grayscale ("I;16", or "I" from a 16-bit PNG): divided by 65535, the real bit
  depth of the file, never by 255 (that would saturate every pixel).
- RGB, RGBA, palette: alpha is dropped (ChestX-ray14 ships 5 RGBA files whose alpha is
  fully opaque) and colour is converted to luminance with ITU-R 601-2 weights
  (L = 0.299 R + 0.587 G + 0.114 B), the same rule as Pillow's "L" conversion.
- JPEG and other formats with EXIF orientation: rotated upright first.
- DICOM (.dcm): modality LUT (rescale slope/intercept), then the VOI LUT or window,
  MONOCHROME1 inverted so bone is bright, then scaled to [0, 1] by its own range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
DICOM_SUFFIXES = {".dcm", ".dicom"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"} | DICOM_SUFFIXES


def load_image(path: str | Path) -> np.ndarray:
    """Read one image file.

    Returns
    -------
    ndarray of shape (H, W), float32, values in [0, 1].

    Raises
    ------
    ImageReadError
        Naming the file, when it is missing, empty, truncated or of an unknown format.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "no such file", "Check the path or the images folder.")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "the file is empty (0 bytes)",
                             "Copy the file again from its source.")
    if path.suffix.lower() in DICOM_SUFFIXES:
        return _load_dicom(path)
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            return pil_to_gray(im)
    except UnidentifiedImageError as exc:
        raise ImageReadError(path, "not a readable image format",
                             "Convert it to PNG, JPEG or DICOM.") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"the file is corrupt or truncated ({exc})",
                             "Copy the file again from its source.") from exc


def pil_to_gray(im: Image.Image) -> np.ndarray:
    """Convert a decoded Pillow image to float32 (H, W) in [0, 1] (rules in module doc)."""
    mode = im.mode
    if mode == "L":
        return np.asarray(im, dtype=np.float32) / 255.0
    if mode == "1":
        return np.asarray(im, dtype=np.float32)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(im).astype(np.float32) / 65535.0
    if mode == "I":
        arr = np.asarray(im)
        # Pillow opens some 16-bit grayscale PNGs as 32-bit "I"; their values stay <= 65535.
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError(f"32-bit integer pixels outside 0..65535 (mode {mode})")
        return arr.astype(np.float32) / 65535.0
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if mode == "LA":
        return np.asarray(im.getchannel("L"), dtype=np.float32) / 255.0
    rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
    return (rgb @ _LUMA) / 255.0


def _load_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as exc:  # pragma: no cover - pydicom is a dependency
        raise ImageReadError(path, "pydicom is not installed", "pip install pydicom") from exc
    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for bad files
        raise ImageReadError(path, f"DICOM pixel data cannot be decoded ({exc})",
                             "Install the decoder plugin pydicom names, or export the "
                             "image uncompressed.") from exc
    if arr.ndim != 2:
        raise ImageReadError(path, f"expected one 2-D grayscale frame, got shape {arr.shape}",
                             "Export a single frame.")
    arr = apply_modality_lut(arr, ds)
    arr = apply_voi_lut(arr, ds, index=0) if _has_voi(ds) else arr
    arr = np.asarray(arr, dtype=np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        arr = 1.0 - arr
    return arr


def _has_voi(ds) -> bool:
    return "VOILUTSequence" in ds or "WindowCenter" in ds


def dicom_patient_id(path: str | Path) -> str | None:
    """PatientID from a DICOM header, or None when absent."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    value = str(getattr(ds, "PatientID", "") or "").strip()
    return value or None
