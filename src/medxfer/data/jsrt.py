"""JSRT (Japanese Society of Radiological Technology): 154 radiographs with a lung nodule
(``JPCLN001``-``JPCLN154``) and 93 without (``JPCNN001``-``JPCNN093``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..images import IMAGE_SUFFIXES
from .contract import Dataset, Problem
from .public import first_image_named, images_named
from .registry import register_reader

_PATTERN = r"JPC(LN|NN)\d{3}"
#: The clinical data files of the release, one line per image.
JSRT_DATA_FILES = ("CLNDAT_EN.txt", "CNNDAT_EN.txt", "CLNDAT_EN.TXT", "CNNDAT_EN.TXT")


def _clinical(root: Path) -> dict[str, tuple[float | None, str | None, str]]:
    """Image stem -> (age, sex, the line) from whichever JSRT data files are present. A line
    starts with the image name; the age is the number just before the word male/female."""
    out = {}
    for name in JSRT_DATA_FILES:
        for f in root.rglob(name):
            for line in f.read_text(errors="replace").splitlines():
                m = re.match(r"\s*(JPC(?:LN|NN)\d{3})", line)
                if not m:
                    continue
                sm = re.search(r"(\d+(?:\.\d+)?)\s+(male|female)\b", line, re.I)
                age, sex = (float(sm.group(1)), "F" if sm.group(2).lower() == "female" else "M") \
                    if sm else (None, None)
                out[m.group(1)] = (age, sex, " ".join(line.split()))
    return out


def read_jsrt(root: str | Path) -> Dataset:
    """Read JSRT converted to a format medxfer decodes (PNG, TIFF, ...).

    The finding "Nodule" comes from the file names: ``JPCLN*`` (lung nodule, 1) and
    ``JPCNN*`` (no nodule, 0). Age and sex come from ``CLNDAT_EN.txt`` / ``CNNDAT_EN.txt``
    where present (the whole line, with the nodule's size, position and diagnosis, is kept
    as ``clinical``). The release's ``.IMG`` files (2048 x 2048 raw 12-bit) are not read:
    convert them to PNG first. There are no patient ids: each image is its own patient
    (``patient_ids_from="file_name"``).
    """
    root = Path(root)
    files = images_named(root, _PATTERN)
    if not files:
        raw = images_named(root, _PATTERN, suffixes={".img"})
        if raw:
            raise DataError(f"'{root}' holds JSRT's raw .IMG files (e.g. {min(raw)}.IMG), which "
                            "medxfer does not decode: convert them to PNG (2048 x 2048, 12-bit "
                            "big-endian) and read the folder of PNG files")
        raise DataError(f"no JPCLN*/JPCNN* images under '{root}'")
    info = _clinical(root)
    problems: list[Problem] = []
    rows = []
    for stem, path in sorted(files.items()):
        age, sex, line = info.get(stem, (None, None, ""))
        if stem not in info and info:
            problems.append(Problem("no_clinical_data", str(path), f"{stem} is in no JSRT data file"))
        rows.append((path.name, str(path), stem, age, sex, line, float(stem[3:5] == "LN"),
                     path.stat().st_size))
    table = pd.DataFrame(rows, columns=["image_id", "path", "patient_id", "age", "sex", "clinical",
                                        "_y", "file_size"])
    table["view"] = "PA"
    y = table.pop("_y").to_numpy(np.float32)[:, None]
    return Dataset(table, y, ("Nodule",), name=f"JSRT at {root}", problems=tuple(problems),
                   format="jsrt", patient_ids_from="file_name")


@register_reader("jsrt", description="JSRT (JPCLN*/JPCNN* images: nodule / no nodule)",
                 read=read_jsrt, priority=25)
def _jsrt(path: Path) -> str | None:
    if not path.is_dir():
        return None
    first = first_image_named(path, _PATTERN, suffixes=IMAGE_SUFFIXES | {".img"})
    return None if first is None else f"holds images named JPCLN*/JPCNN*, e.g. {first.as_posix()}"
