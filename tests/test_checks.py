"""medxfer.checks: `inspect --check-images` names every problem image."""

import json

import numpy as np

from medxfer.cli import main

from .test_images import _png_header_only


def test_inspect_check_images_names_every_problem(sample_root, tmp_path, capsys):
    from PIL import Image

    src = sorted((sample_root / "images").glob("*.png"))[:2]
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "a.png").write_bytes(src[0].read_bytes())
    (d / "a_copy.png").write_bytes(src[0].read_bytes())          # duplicate pixels
    (d / "b.png").write_bytes(src[1].read_bytes()[:300])          # truncated
    Image.new("RGBA", (64, 64), (10, 20, 30, 255)).save(d / "c.png")   # unusual mode
    Image.fromarray(np.full((64, 64), 200, np.uint16)).save(d / "e.png")  # 8-bit data in 16 bits
    _png_header_only(d / "f.png", 20000, 20000)                   # oversized
    rows = ["path,patient_id,Effusion"] + [f"{d / n},{i},0" for i, n in enumerate(
        ["a.png", "a_copy.png", "b.png", "c.png", "e.png", "f.png"])]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    assert main(["inspect", str(tmp_path / "t.csv"), "--check-images", "--workers", "2", "--json"]) == 1
    found = json.loads(capsys.readouterr().out)["image_checks"]["problems"]
    kinds = {(p["kind"], p["path"].rsplit("/", 1)[-1]) for p in found}
    assert kinds == {("duplicate", "a.png"), ("duplicate", "a_copy.png"), ("unreadable", "b.png"),
                     ("unusual_mode", "c.png"), ("bit_depth", "e.png"), ("oversized", "f.png")}
    assert main(["inspect", str(tmp_path / "t.csv"), "--check-images", "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "image check: 6 images decoded; 1 bit_depth, 2 duplicate, 1 oversized" in out
