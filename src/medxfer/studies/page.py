"""One offline HTML page per study run: what was run on what data, every table and figure,
links to the CSVs, a section per registered study in its order. No script, no external
resource."""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from pathlib import Path

from .. import __version__
from ..backbones import BackboneIdentity
from .common import StudyContext
from .registry import all_studies


def _md_table(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.startswith("|")]
    if len(lines) < 2:
        return ""
    cells = [[html.escape(c.strip()) for c in ln.strip("|").split("|")] for ln in lines]
    head = "".join(f"<th>{c}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells[2:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_index(ctx: StudyContext) -> Path:
    out = ctx.out
    m = ctx.features.manifest
    ds = ctx.features.dataset
    parts = [f"<h1>medxfer studies: {html.escape(ds.name)}</h1>",
             f"<p>{len(ds)} images of {len(set(ds.patient_ids))} patients; data fingerprint "
             f"<code>{html.escape(str(m.get('dataset_fingerprint')))}</code>; features "
             f"<code>{html.escape(ctx.backbone_label)}</code> (weights sha256 "
             + ", ".join(f"{html.escape(n)} <code>{html.escape(str(h)[:16])}</code>" for n, h in
                         BackboneIdentity.from_dict(m.get("backbone")).weights_hashes.items()) + ")"
             + (f" from <code>{html.escape(str(ctx.features_folder))}</code>" if ctx.features_folder else "")
             + f"; medxfer {__version__}.</p>",
             "<p>Every interval is a 95% percentile interval over patient bootstrap resamples. "
             "Small samples give wide intervals: read the intervals, not the points.</p>",
             "<details><summary>settings</summary><pre>"
             + html.escape(json.dumps({"study": asdict(ctx.settings), "head": asdict(ctx.head)}, indent=1))
             + "</pre></details>"]
    for study in all_studies():
        name = study.name
        res_path = out / name / "result.json"
        if not res_path.is_file():
            continue
        res = json.loads(res_path.read_text())
        lost = res.get("images_skipped_at_extraction")
        parts.append(f"<h2>{html.escape(study.title)}</h2><p>{res.get('seconds')} s; "
                     + (f"{lost} image(s) could not be decoded at extraction and are in no row; " if lost else "")
                     + ", ".join(f'<a href="{name}/{t}">{t}</a>' for t in res.get("tables", []))
                     + "</p>")
        for t in res.get("tables", []):
            md = out / name / t.replace(".csv", ".md")
            if md.is_file():
                parts.append(f"<h3>{html.escape(t)}</h3>" + _md_table(md.read_text()))
        for f in res.get("figures", []):
            parts.append(f'<p><img src="{name}/{f}" alt="{html.escape(f)}" style="max-width:100%"> '
                         f'<a href="{name}/{f.replace(".png", ".csv")}">data</a></p>')
        if res.get("skipped"):
            parts.append("<p>skipped: " + html.escape("; ".join(s["shift"] + ": " + s["reason"]
                                                               for s in res["skipped"])) + "</p>")
        if res.get("capped"):
            parts.append("<p>levels capped by the data: " + html.escape(", ".join(res["capped"])) + "</p>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:"
             "collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>medxfer studies</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    path = out / "index.html"
    path.write_text(page)
    return path
