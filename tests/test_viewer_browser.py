"""The viewer at the service's / in a real browser: Debian's headless Chromium, driven over
the DevTools protocol (tests/cdp.py), against a service on loopback.

MEDXFER_VIEWER_MODEL=MODEL runs it on that model folder instead of the tiny test model,
MEDXFER_VIEWER_IMAGE=FILE uploads that radiograph, and MEDXFER_VIEWER_SCREENSHOT=FILE.png
keeps the 1280x800 screenshot there (how docs/img/viewer.png is made; DEVELOPERS.md)."""

import json
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from .cdp import CHROMIUM, Browser
from .test_serve import _post, running

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")
pytest.importorskip("websocket")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (.ci/run installs it)")]


@pytest.fixture(scope="module")
def viewer(tiny_trained):
    from medxfer.serve import create_app

    model = Path(os.environ.get("MEDXFER_VIEWER_MODEL") or tiny_trained / "m")
    with running(create_app(model, max_upload_mb=8.0)) as url:
        yield url, tiny_trained / "cxr" / "images"


def _js_list(expr: str) -> str:
    return f"[...document.querySelectorAll({expr!r})]"


def test_the_viewer_in_headless_chromium(viewer, tmp_path):
    """Upload a bundled radiograph: the findings shown are /predict's (order, values, those
    above threshold) and the overlay appears; the page is keyboard-reachable and fits a
    phone; a junk file and a brain MR give a message and the OOD warning, never a blank
    page."""
    import pydicom
    from PIL import Image

    from medxfer.settings import NOTICE

    url, images = viewer
    image = Path(os.environ.get("MEDXFER_VIEWER_IMAGE") or sorted(images.glob("*.png"))[3])
    _, expected = _post(url + "/predict", image.read_bytes(), image.name, "image/png")
    with urllib.request.urlopen(url + "/info") as r:
        info = json.loads(r.read())
    with Browser(tmp_path / "profile") as b:
        b.open(url + "/")
        b.wait("document.getElementById('model').textContent.includes('trained on')")
        assert info["model"] in b.js("document.getElementById('model').textContent")
        assert b.js("document.getElementById('notice').textContent") == NOTICE
        b.key("Tab", "Tab", 9)  # the file chooser is the first thing the keyboard reaches
        assert b.js("document.activeElement.id") == "file"
        assert b.js("document.getElementById('file').labels.length") == 1

        b.set_file("#file", image)
        b.wait("document.querySelectorAll('#findings li').length > 0")
        shown = b.js(_js_list("#findings li") + ".map(li => [li.dataset.finding, "
                     "li.querySelector('.p').textContent, li.dataset.above])")
        p = expected["probabilities"]
        order = sorted(p, key=lambda n: -p[n])
        assert [s[0] for s in shown] == order
        assert [s[1] for s in shown] == [f"{p[n]:.3f}" for n in order]
        assert {s[0] for s in shown if s[2] == "true"} == set(expected["above_threshold"])
        assert b.js("document.getElementById('rule').textContent") == f"Thresholds: {expected['threshold_rule']}."
        b.wait("(() => { const c = document.getElementById('cam'); "
               "return !c.hidden && c.complete && c.naturalWidth > 0; })()")
        top = max(expected["above_threshold"] or p, key=p.get)
        assert b.js("document.getElementById('cam').dataset.finding") == top
        assert b.js("document.getElementById('image').naturalWidth") > 0
        shot = b.screenshot(tmp_path / "viewer.png")
        px = np.asarray(Image.open(shot).convert("L"))
        assert px.shape == (800, 1280) and px.std() > 10  # drawn, not a blank page
        if os.environ.get("MEDXFER_VIEWER_SCREENSHOT"):
            shutil.copy(shot, os.environ["MEDXFER_VIEWER_SCREENSHOT"])
        # readable at 1280x800: the image and the top of the findings list are on screen
        assert b.js("document.getElementById('image').getBoundingClientRect().bottom") <= 800
        assert b.js("document.querySelector('#findings li').getBoundingClientRect().bottom") <= 800
        b.js("(() => { const o = document.getElementById('opacity'); o.value = 70; "
             "o.dispatchEvent(new Event('input')); })()")
        assert b.js("getComputedStyle(document.getElementById('cam')).opacity") == "0.7"

        # another finding's map on request; the overlay can be switched off
        other = order[-1]
        b.js(f"(() => {{ const s = document.getElementById('finding'); s.value = {other!r}; "
             "s.dispatchEvent(new Event('change')); })()")
        b.wait(f"document.getElementById('cam').dataset.finding === {other!r}")
        b.js("document.getElementById('showcam').click()")
        b.wait("document.getElementById('cam').hidden")

        b.viewport(390, 844, mobile=True)  # a phone: nothing wider than the screen
        assert b.js("document.documentElement.scrollWidth") <= 390
        b.viewport(1280, 800)

        junk = tmp_path / "junk.png"
        junk.write_bytes(b"this is not an image")
        b.set_file("#file", junk)
        b.wait("document.getElementById('message').className === 'error'")
        message = b.js("document.getElementById('message').textContent")
        assert "junk.png" in message and "not a readable image" in message and "HTTP 422" in message
        assert b.js("document.getElementById('result').hidden")
        assert b.js("document.getElementById('message').getAttribute('role')") == "alert"

        mr = Path(pydicom.__file__).parent / "data" / "test_files" / "MR_small_jpeg_ls_lossless.dcm"
        mr_copy = tmp_path / "brain.dcm"
        mr_copy.write_bytes(mr.read_bytes())
        b.set_file("#file", mr_copy)
        b.wait("!document.getElementById('ood').hidden")
        assert "Modality is MR" in b.js("document.getElementById('ood').textContent")
        assert "withheld" in b.js("document.getElementById('ood').textContent")
        assert not b.js("document.getElementById('showcam').checked")  # no map of a brain

        b.open(url + "/card")
        assert b.js("document.title").startswith("Model card: ")
        assert b.js("document.querySelectorAll('section').length") >= 8
