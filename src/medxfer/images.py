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
  Compressed transfer syntaxes (JPEG baseline, lossless, JPEG-LS, JPEG 2000, RLE) decode
  through pydicom with GDCM (python-gdcm, a dependency); 12-bit JPEG Extended needs the
  pylibjpeg-libjpeg plugin (GPL-3.0, not installed by medxfer). RGB and YBR secondary
  captures are converted to luminance as colour PNGs are; a multi-frame file gives its
  first frame; files without pixel data (reports, plans, waveforms) are refused by name.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError
from .settings import MAX_PIXELS, MIN_IMAGE_SIDE

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
DICOM_SUFFIXES = {".dcm", ".dicom"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"} | DICOM_SUFFIXES
#: Images with more pixels are refused before decoding (8000 x 8000; radiographs are at most
#: about 4300 x 3500, mammograms 4096 x 5625): a 20000 x 20000 file would need 1.6 GB per
#: decoded float copy in every worker. `--max-pixels` changes it.
DEFAULT_MAX_PIXELS = MAX_PIXELS  # one definition, in medxfer.settings


def _oversized(path: Path, w: int, h: int, max_pixels: int) -> ImageReadError:
    return ImageReadError(path, f"the image is {w} x {h} = {w * h:,} pixels, above the limit of "
                          f"{max_pixels:,}", "Downsize it, or raise the limit with --max-pixels "
                          "if it really is a radiograph this large.")


def _too_small(path: Path, w: int, h: int, min_side: int) -> ImageReadError | None:
    if min(w, h) >= min_side:
        return None
    return ImageReadError(path, f"the image is {w} x {h} pixels, smaller than the "
                          f"{min_side} x {min_side} medxfer reads",
                          "A chest radiograph is hundreds of pixels wide: use the full image.")


def load_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS, *,
               min_side: int = MIN_IMAGE_SIDE) -> np.ndarray:
    """Read one image file.

    ``max_pixels``: larger images are refused from their header, before decoding (None:
    no limit beyond Pillow's own decompression-bomb guard). ``min_side``: images narrower
    or lower are refused (medxfer.settings.MIN_IMAGE_SIDE; tests of the pixel arithmetic
    use 1).

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
        return _load_dicom(path, max_pixels, min_side)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit decides
            im_ctx = Image.open(path)
        with im_ctx as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise _oversized(path, w, h, max_pixels)
            if (small := _too_small(path, w, h, min_side)) is not None:
                raise small
            im.load()
            im = ImageOps.exif_transpose(im)
            return pil_to_gray(im)
    except ImageReadError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageReadError(path, "not a readable image format",
                             "Convert it to PNG, JPEG or DICOM.") from exc
    except Image.DecompressionBombError as exc:
        # Pillow refuses at open (over twice its own limit), before our check could run.
        w, h = _header_size(path)
        raise _oversized(path, w, h, max_pixels or 2 * Image.MAX_IMAGE_PIXELS) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"the file is corrupt or truncated ({exc})",
                             "Copy the file again from its source.") from exc


def _header_size(path: Path) -> tuple[int, int]:
    """Width and height from the header alone, Pillow's bomb guard lifted for that read
    (no pixel is decoded)."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as im:
            return im.size
    finally:
        Image.MAX_IMAGE_PIXELS = old


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


def _load_dicom(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                min_side: int = MIN_IMAGE_SIDE) -> np.ndarray:
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as exc:  # pragma: no cover - pydicom is a dependency
        raise ImageReadError(path, "pydicom is not installed", "pip install pydicom") from exc
    try:
        ds = pydicom.dcmread(path)
        w, h = int(getattr(ds, "Columns", 0) or 0), int(getattr(ds, "Rows", 0) or 0)
    except pydicom.errors.InvalidDicomError as exc:
        raise ImageReadError(path, "not a DICOM Part 10 file (no 'DICM' file meta header)",
                             "Export it again from the archive as a DICOM file.") from exc
    except Exception as exc:  # pydicom raises many types for bad files
        raise ImageReadError(path, f"not a readable DICOM file ({exc})",
                             "Export the image again from the archive.") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        kind = str(getattr(ds, "Modality", "") or getattr(ds, "SOPClassUID", "") or "DICOM")
        raise ImageReadError(path, f"this DICOM file holds no image ({kind} without pixel data, "
                             "e.g. a report, plan or waveform)", "Give medxfer image files only.")
    if max_pixels is not None and w * h > max_pixels:
        raise _oversized(path, w, h, max_pixels)
    if (small := _too_small(path, w, h, min_side)) is not None:
        raise small
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for bad files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "JPEG Extended" in str(exc):
            fix = ("12-bit JPEG Extended needs a decoder medxfer does not install: "
                   "pip install pylibjpeg pylibjpeg-libjpeg (GPL-3.0), or export uncompressed.")
        else:
            fix = "Export the image again uncompressed, or install the decoder plugin pydicom names."
        raise ImageReadError(path, f"DICOM pixel data cannot be decoded ({first})", fix) from exc
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        # A radiograph is one frame; a multi-frame file (cine, tomosynthesis, a volume) gives
        # its first, as documented.
        arr = arr[0]
    if samples == 3 and arr.ndim == 3 and arr.shape[-1] == 3:
        # Colour (secondary captures): pydicom returns RGB (YBR is converted on decoding);
        # to luminance with the same weights as a colour PNG.
        pi = str(getattr(ds, "PhotometricInterpretation", "")).upper()
        if pi.startswith("YBR") and not _converted_to_rgb(ds):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, pi, "RGB")
        top = float(2 ** int(getattr(ds, "BitsStored", 8) or 8) - 1)
        return np.clip((np.asarray(arr, dtype=np.float32) @ _LUMA) / top, 0.0, 1.0)
    if arr.ndim != 2:
        raise ImageReadError(path, f"expected one 2-D grayscale frame, got shape {arr.shape} "
                             f"({samples} samples per pixel, {frames} frames)",
                             "Export a single grayscale or RGB frame.")
    arr = apply_modality_lut(arr, ds)
    arr = apply_voi_lut(arr, ds, index=0) if _has_voi(ds) else arr
    arr = np.asarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ImageReadError(path, "the pixel data holds NaN or infinite values",
                             "Export the image again from the archive.")
    lo, hi = float(arr.min()), float(arr.max())
    arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        arr = 1.0 - arr
    return arr


def _converted_to_rgb(ds) -> bool:
    """pydicom 3 converts YBR pixel data to RGB when decoding (its default as_rgb=True);
    older versions leave YBR."""
    import pydicom

    return int(pydicom.__version__.split(".")[0]) >= 3


def _has_voi(ds) -> bool:
    return "VOILUTSequence" in ds or "WindowCenter" in ds


def dicom_patient_id(path: str | Path) -> str | None:
    """PatientID from a DICOM header, or None when absent."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    value = str(getattr(ds, "PatientID", "") or "").strip()
    return value or None
