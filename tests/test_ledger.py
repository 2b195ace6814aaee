"""The results ledger: a quoted number must be its result file's, and the project's own
README and docs must pass it (strict: every metric-like number is tied to a result file,
cited, or marked as history)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from medxfer.cli import main
from medxfer.ledger import _CODE, _MARK, check, matches, update

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _doc(tmp_path, text, data=None, name="doc.md"):
    (tmp_path / "r.json").write_text(json.dumps(data or {
        "m": {"auc": 0.64279, "ci": [0.6161, 0.6714]},
        "d": {"b - a": {"difference": 0.0082, "ci95": [0.0021, 0.0143]}},
        "n": 4952, "rate": 0.0123, "neg": -0.0031}))
    path = tmp_path / name
    path.write_text(text)
    return path


def test_matches_at_printed_precision():
    assert matches("0.643", 0.64279) and matches("+0.008", 0.0082) and matches("-0.003", -0.0031)
    assert matches("4,952", 4952) and matches("1e-3", 0.001) and matches("12", 12.4)
    assert not matches("0.644", 0.64279) and not matches("0.643", None)
    assert not matches("0.643", float("nan")) and not matches("1", True)


def test_marked_numbers_checked(tmp_path):
    doc = _doc(tmp_path, "<!--@source r = r.json-->\n"
                         "AUC 0.643 (0.616-0.671)<!--@ r#m: auc, ci/0, ci/1--> and +0.008 "
                         "(+0.002, +0.014)<!--@ r#d/b - a: difference, ci95/0, ci95/1-->; "
                         "4,952-d<!--@ r: n-->, 1.2%<!--@ r.json: rate*100-->, -0.003<!--@ r: neg-->.\n"
                         "Again 0.643 (95% CI 0.616-0.671)<!--@ r#m: auc, ci/0, ci/1-->, the level skipped.\n"
                         "The paper: 0.953<!--@cite source paper-->. `--x 0.95` is code.\n"
                         "<!--history 2026-11-26 477006f-->\n(History, 2026-11-26.) 0.615\n<!--/history-->\n")
    assert check(doc, strict=True) == []


@pytest.mark.parametrize("edit, what", [
    ("0.643 (", "0.644 is quoted"),
    ("(0.616-", "0.617 is quoted"),
    ("+0.008 ", "+0.009 is quoted"),
    ("1.2%", "1.3 is quoted"),
])
def test_a_hand_edit_is_caught(tmp_path, edit, what):
    good = "<!--@source r = r.json-->\nAUC 0.643 (0.616-0.671)<!--@ r#m: auc, ci/0, ci/1-->, +0.008 (+0.002, +0.014)<!--@ r#d/b - a: difference, ci95/0, ci95/1-->, 1.2%<!--@ r: rate*100-->\n"
    bumped = {"0.643 (": "0.644 (", "(0.616-": "(0.617-", "+0.008 ": "+0.009 ", "1.2%": "1.3%"}[edit]
    doc = _doc(tmp_path, good.replace(edit, bumped))
    problems = check(doc)
    assert len(problems) == 1 and what in str(problems[0]) and str(problems[0]).startswith(f"{doc}:2:")


def test_refusals_name_the_fix(tmp_path):
    doc = _doc(tmp_path, "A 0.643<!--@ r.json: m/nope-->. B 0.5<!--@ missing.json: x-->. "
                         "C<!--@ r.json: n-->. D 0.123 loose.\n<!--history 2026-11-26 477006f-->\nno date\n<!--/history-->\n"
                         "<!--table t.md-->\n| a |\n<!--/table-->\n")
    text = "\n".join(map(str, check(doc, strict=True)))
    assert "no key 'nope'" in text and "missing.json cannot be read" in text
    assert "only 0 numbers precede it" in text and "0.123 comes from no result file" in text
    assert "does not say its date" in text and "table source t.md not found" in text


def test_tables_updated_and_checked(tmp_path):
    (tmp_path / "t.md").write_text("| a | b |\n|---|---|\n| 1 | 0.643 |\n")
    doc = _doc(tmp_path, "Before.\n<!--table t.md-->\n| old |\n<!--/table-->\nAfter.\n")
    assert "table differs from t.md" in str(check(doc)[0])
    assert update(doc)["tables"] == 1 and check(doc, strict=True) == [] and update(doc)["tables"] == 0
    assert doc.read_text().startswith("Before.\n<!--table t.md-->\n| a | b |") and doc.read_text().endswith("After.\n")


def test_update_fills_marked_numbers_at_their_printed_style(tmp_path):
    doc = _doc(tmp_path, "<!--@source r = r.json-->\nAUC 0.0 (0.000-0.00)<!--@ r#m: auc, ci/0, ci/1--> "
                         "and +0.000 (+0.000, +0.000)<!--@ r#d/b - a: difference, ci95/0, ci95/1-->, "
                         "n = 0,000<!--@ r: n-->, -0.000<!--@ r: neg--> and 0.5<!--@ nope.json: x-->\n")
    r = update(doc)
    assert r["numbers"] == 8 and r["missing"] == ["nope.json"]
    assert "AUC 0.6 (0.616-0.67)" in doc.read_text()
    assert "+0.008 (+0.002, +0.014)" in doc.read_text() and "n = 4,952" in doc.read_text()
    assert "-0.003<!--" in doc.read_text()
    assert [str(p) for p in check(doc)] == [f"{doc}:2: source nope.json cannot be read ([Errno 2] "
                                             f"No such file or directory: '{tmp_path / 'nope.json'}')"]


def test_cli(tmp_path, capsys):
    doc = _doc(tmp_path, "AUC 0.643<!--@ r.json: m/auc-->\n")
    assert main(["ledger", "check", str(doc), "--strict"]) == 0
    doc.write_text("AUC 0.644<!--@ r.json: m/auc-->\n")
    assert main(["ledger", "check", str(doc)]) == 1
    assert "0.644 is quoted" in capsys.readouterr().out
    assert main(["ledger", "check", str(tmp_path / "nope.md")]) == 2
    junk = tmp_path / "junk.md"
    junk.write_bytes(b"\xd3\x00\xff junk")
    assert main(["ledger", "check", str(junk)]) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_project_documents_pass_the_ledger(document):
    """Every number README and docs/ quote from a result file is that file's, and every
    metric-like number is tied to one, cited, or marked as history."""
    problems = check(document, strict=True)
    assert problems == [], "\n".join(map(str, problems))


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_project_documents_catch_an_edit(document, tmp_path):
    """Bump the last digit of quoted numbers, one at a time (a sample of the markers): the
    ledger must notice each one."""
    text = document.read_text()
    code = [c.span() for c in _CODE.finditer(text)]  # markers shown as examples in code
    marks = [m for m in _MARK.finditer(text) if m.group(1) is None
             and not any(a <= m.start() < b for a, b in code)]
    if not marks:
        pytest.skip(f"{document.name} quotes no result file")
    for m in random.Random(0).sample(marks, min(12, len(marks))):
        line_start = text.rfind("\n", 0, m.start()) + 1
        before = text[line_start:m.start()]
        nums = list(re.finditer(r"\d(?=[^\d]*$)", before))
        assert nums, f"no digit before the marker at {m.group(0)}"
        i = line_start + nums[-1].start()
        digit = text[i]
        edited = text[:i] + ("1" if digit == "0" else "0") + text[i + 1:]
        copy = tmp_path / document.name
        copy.write_text(edited)
        problems = check(copy, base=document.parent)
        assert problems, f"an edit of {before.strip()[-30:]!r} in {document.name} went unnoticed"
