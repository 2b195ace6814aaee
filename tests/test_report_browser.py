"""The report page rendered by a real headless browser (Debian's Chromium)."""

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from medxfer.data import Problem
from medxfer.metrics import evaluate_predictions
from medxfer.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def report(tmp_path):
    rng = np.random.default_rng(0)
    Y = (rng.random((60, 3)) < 0.3).astype(float)
    Y[:, 2] = 0  # a finding without positives: shown as n/a
    P = np.clip(0.5 * Y + 0.5 * rng.random(Y.shape), 0, 1)
    names = ["Effusion", "Mass", "Hernia"]
    table = pd.DataFrame({"image_id": [f"{i}.png" for i in range(60)], "patient_id": range(60)})
    m = evaluate_predictions(Y, P, names, np.full(3, 0.5), n_boot=50)
    return write_report(tmp_path / "r", metrics=m, Y=Y, P=P, table=table, label_names=names,
                        thresholds=np.full(3, 0.5), config={"backbone": "efficientnet_lite0"},
                        problems=[Problem("unreadable_image", "/x/broken.png", "truncated")],
                        title="browser check"), m


def test_report_page_is_self_contained(report):
    page, _ = report
    html = page.read_text()
    assert "http://" not in html and "https://" not in html  # opens offline
    assert html.count("data:image/png;base64,") == 3


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    page, m = report
    profile = tmp_path / "profile"
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "<title>browser check</title>" in dom
    assert f"Macro AUC <b>{m['macro_auc']:.3f}</b>" in dom
    assert "Hernia" in dom and "n/a" in dom and "/x/broken.png" in dom
    assert dom.count("<img") == 3
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--window-size=1200,1600",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    from PIL import Image
    im = np.asarray(Image.open(shot).convert("L"))
    assert im.shape == (1600, 1200) and im.std() > 10  # something was drawn, not a blank page
