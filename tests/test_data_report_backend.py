"""Importing medxfer.report must not switch the process's matplotlib backend."""

import subprocess
import sys

CODE = """
import matplotlib
matplotlib.use("svg")
import numpy as np
import medxfer.report as r
print(matplotlib.get_backend())
Y = np.array([[0, 1], [1, 0], [0, 1], [1, 1]], dtype=float)
P = np.array([[0.2, 0.9], [0.8, 0.3], [0.1, 0.6], [0.7, 0.4]])
r._curves(Y, P, ["A", "B"], "roc", "{out}/roc.png")
r._reliability({{"bins": [{{"mean_p": 0.2, "frac_pos": 0.25, "count": 4}}], "ece": 0.05}},
               "{out}/rel.png")
print(matplotlib.get_backend())
"""


def test_importing_report_keeps_the_backend_and_still_writes_png(tmp_path):
    out = subprocess.run([sys.executable, "-c", CODE.format(out=tmp_path)], capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["svg", "svg"]
    for name in ("roc.png", "rel.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
