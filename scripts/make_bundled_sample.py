"""Rebuild the bundled ChestX-ray14 sample from ../shared/data/nih14-sample.

Downsizes every image to 256x256 (Lanczos, the image's own mode kept, so the 5 RGBA
images of the release stay RGBA), copies the complete official metadata table and
the bounding-box table unchanged, and writes SOURCES.md. Run from the repository root:

    python scripts/make_bundled_sample.py [SOURCE] [DEST]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from PIL import Image

SIZE = 256


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    src = Path(argv[0] if argv else "../shared/data/nih14-sample")
    dest = Path(argv[1] if len(argv) > 1 else "src/medxfer/sample_data/nih14-mini")
    if not (src / "images").is_dir():
        print(f"source folder '{src}' has no images/ folder", file=sys.stderr)
        return 2
    (dest / "images").mkdir(parents=True, exist_ok=True)
    for path in sorted((src / "images").glob("*.png")):
        with Image.open(path) as im:
            small = im.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
            small.save(dest / "images" / path.name, optimize=True)
    for name in ("Data_Entry_2017_v2020.csv.gz", "BBox_List_2017.csv.gz"):
        shutil.copyfile(src / name, dest / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
