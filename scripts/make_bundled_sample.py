"""Rebuild the bundled ChestX-ray14 sample from ../shared/data/nih14-sample.

Downsizes every image to 256x256 (Lanczos, the image's own mode kept, so the 5 RGBA
images of the release stay RGBA) and copies the official metadata table and the
bounding-box table trimmed to the rows of the bundled images (header and rows unchanged,
in their original order). SOURCES.md in the destination is kept by hand. Run from the
repository root:

    python scripts/make_bundled_sample.py [SOURCE] [DEST]
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

from PIL import Image

SIZE = 256
TABLES = ("Data_Entry_2017_v2020.csv.gz", "BBox_List_2017.csv.gz")


def trim_table(src: Path, dest: Path, image_ids: set[str]) -> int:
    """Copy a gzipped release table keeping its header and the rows of ``image_ids``
    (first field); returns the number of rows kept. Written with a fixed gzip time stamp
    so that rebuilding gives the same bytes."""
    with gzip.open(src, "rt", newline="") as f:
        header, *rows = f.read().splitlines()
    kept = [r for r in rows if r.split(",", 1)[0] in image_ids]
    with open(dest, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(("\n".join([header, *kept]) + "\n").encode())
    return len(kept)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    src = Path(argv[0] if argv else "../shared/data/nih14-sample")
    dest = Path(argv[1] if len(argv) > 1 else "src/medxfer/sample_data/nih14-mini")
    if not (src / "images").is_dir():
        print(f"source folder '{src}' has no images/ folder", file=sys.stderr)
        return 2
    (dest / "images").mkdir(parents=True, exist_ok=True)
    names = set()
    for path in sorted((src / "images").glob("*.png")):
        with Image.open(path) as im:
            small = im.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
            small.save(dest / "images" / path.name, optimize=True)
        names.add(path.name)
    for name in TABLES:
        n = trim_table(src / name, dest / name, names)
        print(f"{name}: {n} rows for the {len(names)} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
