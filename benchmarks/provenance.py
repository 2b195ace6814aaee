"""Where a committed result came from: the command, the commit, the date and the machine.

Every benchmark that writes a result file under docs/results/ stores ``provenance()`` in
it, so a number in the docs leads to the exact script, code and machine that produced it
(``medxfer ledger check`` then ties the docs' numbers to the file)."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

import medxfer


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def provenance(argv=None) -> dict:
    """{"command", "commit", "uncommitted_changes", "date", "machine", "medxfer"}: call it
    when the run starts (a commit made during a long run would otherwise be named)."""
    argv = sys.argv if argv is None else argv
    # Changes to the code (src/, benchmarks/) count; edits of the docs while a run goes on do not.
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ":/src", ":/benchmarks")
    return {"command": "python " + " ".join(argv),
            "commit": _git("rev-parse", "--short=12", "HEAD"),
            "uncommitted_changes": None if status is None else bool(status),
            "date": datetime.date.today().isoformat(),
            "machine": f"{cpu_name()}, {len(os.sched_getaffinity(0))} usable cores",
            "medxfer": medxfer.__version__}
