"""Decode every image of a dataset once, in parallel, and name each problem before an hour
of extraction finds it (`medxfer inspect DATA --check-images`).

Problems found, one row each:

    unreadable      missing, empty, truncated or not an image (the reader's message)
    oversized       more pixels than --max-pixels (refused from the header, not decoded)
    unusual_mode    a colour, alpha, palette or float image where a radiograph is grayscale
                    (it is converted to luminance; worth knowing, not an error)
    bit_depth       pixel values that use a small part of their range (e.g. a 16-bit file
                    whose maximum is below 256: 8-bit data stored as 16-bit, dark as read)
    duplicate       the same decoded pixels under two or more names (a leak across patients
                    or splits when they are labelled differently)
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .errors import MedxferError
from .images import DEFAULT_MAX_PIXELS, DICOM_SUFFIXES, load_image

GRAY_MODES = {"L", "I;16", "I;16B", "I;16L", "I;16N", "I", "1"}


def check_one(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """{"path", "problems": [(kind, detail)], "sha1": of the decoded pixels or None}."""
    problems: list[tuple[str, str]] = []
    mode = None
    if Path(path).suffix.lower() not in DICOM_SUFFIXES:
        try:
            with Image.open(path) as im:
                mode = im.mode
        except Exception:  # load_image below names the problem
            pass
    try:
        gray = load_image(path, max_pixels)
    except MedxferError as exc:
        kind = ("oversized" if "above the limit" in str(exc) else
                "too_small" if "smaller than the" in str(exc) else "unreadable")
        return {"path": path, "problems": [(kind, str(exc))], "sha1": None}
    if mode is not None and mode not in GRAY_MODES:
        problems.append(("unusual_mode", f"'{path}' is mode {mode} (converted to luminance)"))
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I") and gray.max() < 256 / 65535:
        problems.append(("bit_depth", f"'{path}' is stored as 16-bit but its maximum is below 256: "
                                      "8-bit data read as 16-bit looks almost black; convert it "
                                      "to an 8-bit PNG"))
    digest = hashlib.sha1(np.ascontiguousarray(gray).tobytes() + str(gray.shape).encode()).hexdigest()
    return {"path": path, "problems": problems, "sha1": digest}


def _check(args):
    return check_one(*args)


def check_images(paths, *, max_pixels: int = DEFAULT_MAX_PIXELS, workers: int | None = None,
                 progress: bool = False) -> list[dict]:
    """Problems of every file in ``paths``: a list of {"kind", "path", "detail"}."""
    paths = [str(p) for p in paths]
    workers = max(1, (os.cpu_count() or 2) if workers is None else workers)
    jobs = [(p, max_pixels) for p in paths]
    if workers == 1:
        results = [check_one(*j) for j in tqdm(jobs, desc="check images", unit="img",
                                                disable=not progress)]
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = list(tqdm(pool.map(_check, jobs, chunksize=8), total=len(jobs),
                                desc="check images", unit="img", disable=not progress))
    found = [{"kind": k, "path": r["path"], "detail": d} for r in results for k, d in r["problems"]]
    by_hash: dict[str, list[str]] = {}
    for r in results:
        if r["sha1"] is not None:
            by_hash.setdefault(r["sha1"], []).append(r["path"])
    for same in by_hash.values():
        if len(same) > 1:
            for p in same:
                others = [o for o in same if o != p]
                found.append({"kind": "duplicate", "path": p,
                              "detail": f"'{p}' has the same pixels as {', '.join(repr(o) for o in others)}"})
    return found
