"""Report folders: metrics JSON, per-image predictions, plots and one offline HTML page.

Files written (keys of metrics.json are documented in docs/metrics.md):

    metrics.json        all numbers, stable keys
    predictions.csv     one row per image: ids, metadata, labels, and its prediction
                        record (probability and at-or-above-threshold per finding, findings,
                        out-of-distribution flag and reason; medxfer.records)
    summary.md          the table a reader looks at first
    roc_curves.png      ROC per finding;  pr_curves.png  precision-recall per finding
    reliability.png     reliability diagram (pooled over findings; the ECE on it is pooled)
    report.html         self-contained page (images embedded), opens offline
    problems.csv        every skipped or odd input, when there were any
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from .metrics import calibration_bins
from .data import PARTIAL_COPY
from .records import NOTICE, make_records
from .settings import MIN_CI_POSITIVES


def _figure(**kw) -> Figure:
    """A figure drawn by its own Agg canvas: no pyplot, so the global backend is left alone."""
    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def _fmt(x, digits=3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(ci) -> str:
    return "n/a" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _auc_ci(m: dict) -> str:
    """A finding's AUC interval, or why there is none (too few positives, medxfer.metrics)."""
    return m.get("auc_ci95_withheld") or _ci(m["auc_ci95"])


def _findings_with_auc(metrics: dict) -> str:
    k = metrics["macro"]["findings_with_auc"]
    return f"{k} finding{'' if k == 1 else 's'} with an AUC"


def _data_lines(metrics: dict) -> list[str]:
    """What the reader of a report must know about the rows: out-of-distribution images,
    an unchecked patient overlap, copies of training images."""
    out = [f"Thresholds: {metrics['threshold_rule']}."] if metrics.get("threshold_rule") else []
    o = metrics.get("out_of_distribution")
    if o and o.get("flagged"):
        out.append(f"{o['flagged']} of {o['of']} images are flagged out of distribution (their "
                   "findings are withheld in predictions.csv; they are counted in these metrics).")
    g = metrics.get("training_patient_overlap") or {}
    if g.get("unchecked"):
        out.append(f"Training-patient overlap unchecked: {g['unchecked']}.")
    d = metrics.get("duplicates_of_training_images") or {}
    if d.get("images"):
        out.append(f"{d['images']} of {d['of_images']} images have exactly the pixels of a training "
                   f"image (e.g. {', '.join(d['examples'])}): not held-out predictions.")
    return out


def _ece_words(metrics: dict) -> str:
    words = (f"expected calibration error {_fmt(metrics.get('calibration', {}).get('ece'))} pooled "
             f"over findings, {_fmt(metrics['macro'].get('ece'))} mean per finding")
    mm = metrics.get("calibration_mismatch") or {}
    if mm.get("members"):
        words += (f" (calibration and thresholds were fitted on single fold members' out-of-fold "
                  f"predictions and are applied to the average of {mm['members']}: here the "
                  f"average's mean per-finding ECE is {_fmt(mm['ece_deployed'])} against "
                  f"{_fmt(mm['ece_single_members'])} for single members, and it calls "
                  f"{_fmt(mm['above_threshold_deployed'])} of image-findings above threshold "
                  f"against {_fmt(mm['above_threshold_single_members'])})")
    return words


def predictions_table(table: pd.DataFrame, Y, records, label_names) -> pd.DataFrame:
    """One row per image: its metadata, its labels, and its prediction record's flat form
    (medxfer.records.PredictionRecord.to_row: prob_/above_ per finding, above_threshold, findings, ood...)."""
    meta = [c for c in ("patient_id", "view", "sex", "age") if c in table.columns]
    out = table[meta].reset_index(drop=True).copy()
    for j, name in enumerate(label_names):
        out[f"label_{name}"] = Y[:, j]
    rec = pd.DataFrame([r.to_row() for r in records])
    return pd.concat([rec[["image_id", "path"]], out, rec.drop(columns=["image_id", "path"])], axis=1)


def _curves(Y, P, label_names, kind: str, path: Path) -> None:
    L = len(label_names)
    cols = 4
    rows = (L + cols - 1) // cols
    fig = _figure(figsize=(3.2 * cols, 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for j, name in enumerate(label_names):
        ax = axes[j // cols][j % cols]
        known = ~np.isnan(Y[:, j])
        y, p = Y[known, j].astype(int), P[known, j]
        ax.set_title(name, fontsize=9)
        if not 0 < y.sum() < len(y):
            ax.text(0.5, 0.5, "undefined:\none class only", ha="center", va="center", fontsize=8)
        elif kind == "roc":
            fpr, tpr, _ = roc_curve(y, p)
            ax.set_title(f"{name} (AUC {roc_auc_score(y, p):.2f}, {int(y.sum())} pos)", fontsize=9)
            ax.plot(fpr, tpr, lw=1.5)
            ax.plot([0, 1], [0, 1], "k--", lw=0.5)
            ax.set_xlabel("1 - specificity", fontsize=7)
            ax.set_ylabel("sensitivity", fontsize=7)
        else:
            prec, rec, _ = precision_recall_curve(y, p)
            ax.plot(rec, prec, lw=1.5)
            ax.axhline(y.mean(), color="k", ls="--", lw=0.5)
            ax.set_xlabel("recall", fontsize=7)
            ax.set_ylabel("precision", fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=6)
    for j in range(L, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def _reliability(calib: dict, path: Path) -> None:
    fig = _figure(figsize=(4, 4))
    ax = fig.subplots()
    xs = [b["mean_p"] for b in calib["bins"] if b["count"]]
    ys = [b["frac_pos"] for b in calib["bins"] if b["count"]]
    ax.plot([0, 1], [0, 1], "k--", lw=0.7, label="perfect")
    ax.plot(xs, ys, "o-", label=f"model (pooled ECE {_fmt(calib['ece'])})")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed fraction positive")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def summary_markdown(metrics: dict, label_names, title: str) -> str:
    lines = [f"# {title}", "",
             f"Images: {metrics['n_images']}, patients: {metrics['n_patients']}. "
             f"Macro AUC {_fmt(metrics['macro_auc'])} (95% CI "
             f"{metrics.get('macro_auc_ci95_withheld') or _ci(metrics['macro_auc_ci95'])}, "
             f"patient bootstrap, {_findings_with_auc(metrics)}); "
             f"micro AUC {_fmt(metrics['micro_auc'])}; {_ece_words(metrics)}.", "",
             *[x for line in _data_lines(metrics) for x in (f"**{line}**", "")],
             f"*{NOTICE}*", "",
             "| finding | pos/n | AUC | 95% CI | AP | thr | sens | spec | F1 | acc | all-neg acc |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in label_names:
        m = metrics["per_finding"][name]
        lines.append(f"| {name} | {m['positives']}/{m['n']} | {_fmt(m['auc'])} | {_auc_ci(m)} "
                     f"| {_fmt(m['average_precision'])} | {_fmt(m['threshold'], 2)} "
                     f"| {_fmt(m['sensitivity'], 2)} | {_fmt(m['specificity'], 2)} | {_fmt(m['f1'], 2)} "
                     f"| {_fmt(m['accuracy'], 2)} | {_fmt(m['all_negative_accuracy'], 2)} |")
    return "\n".join(lines) + "\n"


def write_report(out: str | Path, *, metrics: dict, Y, P, table: pd.DataFrame, label_names,
                 thresholds, config: dict, records=None, problems=(), title: str = "medxfer evaluation",
                 sections: list[tuple[str, str]] = (), links: list[tuple[str, str]] = ()) -> Path:
    """Write the report folder; returns the path of report.html. ``records``: the prediction
    records of the rows (medxfer.records.predict_records); without them they are made from
    P and ``thresholds``, with no out-of-distribution check.

    ``sections`` are extra (heading, markdown-ish preformatted text) blocks, e.g. a
    baseline comparison, shown on the page after the main table. ``links`` are (text, href
    relative to the report folder) shown under the headline, e.g. the model card.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # a folder holding part of the release is a note about the data, not a skipped input
    notes = [p.detail for p in problems if p.kind == PARTIAL_COPY]
    problems = [p for p in problems if p.kind != PARTIAL_COPY]
    Y = np.asarray(Y, dtype=np.float64)
    metrics = dict(metrics)
    metrics["calibration"] = calibration_bins(Y, P)
    doc = {"title": title, "metrics": metrics, "config": config, "notes": notes,
           "problems": {"count": len(problems), "file": "problems.csv" if problems else None}}
    if records is None:  # probabilities without a model: records with no OOD check
        ids = table["image_id"].astype(str).tolist()
        records = make_records(P, label_names, thresholds,
                               table["path"].astype(str).tolist() if "path" in table else ids, ids)
    if records:
        metrics["threshold_rule"] = records[0].threshold_rule
    (out / "metrics.json").write_text(json.dumps(doc, indent=2, default=str))
    predictions_table(table, Y, records, label_names).to_csv(out / "predictions.csv", index=False)
    if problems:
        pd.DataFrame([p.as_dict() for p in problems]).to_csv(out / "problems.csv", index=False)
    sub = _subgroup_text(metrics.get("subgroups"))
    if sub:
        sections = list(sections) + [("Subgroups", sub)]
    md = summary_markdown(metrics, label_names, title)
    md += "".join(f"\n[{text}]({href})\n" for text, href in links)
    for head, text in ([("About the data", "\n".join(notes))] if notes else []) + list(sections):
        md += f"\n## {head}\n\n{text}\n"
    (out / "summary.md").write_text(md)
    _curves(Y, P, label_names, "roc", out / "roc_curves.png")
    _curves(Y, P, label_names, "pr", out / "pr_curves.png")
    _reliability(metrics["calibration"], out / "reliability.png")
    if notes:
        sections = [("About the data", "\n".join(notes))] + list(sections)
    page = _html(title, metrics, label_names, config, problems, sections, out, links)
    (out / "report.html").write_text(page, encoding="utf-8")
    return out / "report.html"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _subgroup_text(sub: dict | None) -> str:
    """The subgroup results (medxfer.metrics.subgroup_metrics) as a plain-text table."""
    if not sub:
        return ""
    lines = [f"Macro AUC over the findings with {MIN_CI_POSITIVES} positive and negative images in "
             "the group (their number: 'findings'); 95% CI over patients.",
             f"{'by':<9} {'group':<8} {'images':>6} {'patients':>8}  macro AUC  95% CI       findings"]
    for col, groups in sub.items():
        for name, g in groups.items():
            ci = g.get("withheld") or _ci(g["macro_auc_ci95"])
            lines.append(f"{col.replace('_', ' '):<9} {name:<8} {g['n_images']:>6} {g['n_patients']:>8}  "
                         f"{_fmt(g['macro_auc']):<9}  {ci:<12} {g['findings_with_auc']}")
    return "\n".join(lines)


def _html(title, metrics, label_names, config, problems, sections, out: Path, links=()) -> str:
    e = html.escape
    rows = []
    for name in label_names:
        m = metrics["per_finding"][name]
        rows.append("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in (
            name, f"{m['positives']}/{m['n']}", _fmt(m["auc"]), _auc_ci(m),
            _fmt(m["average_precision"]), _fmt(m["threshold"], 2), _fmt(m["sensitivity"], 2),
            _fmt(m["specificity"], 2), _fmt(m["f1"], 2), _fmt(m["accuracy"], 2),
            _fmt(m["all_negative_accuracy"], 2), f"{m['tp']}/{m['fp']}/{m['tn']}/{m['fn']}",
            f"{_fmt(m.get('ece'))} {_ci(m.get('ece_ci95'))}",
            f"{_fmt(m.get('brier'))} {_ci(m.get('brier_ci95'))}")) + "</tr>")
    extra = "".join(f"<h2>{e(h)}</h2><pre>{e(t)}</pre>" for h, t in sections)
    prob = ""
    if problems:
        kinds: dict[str, int] = {}
        for p in problems:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
        items = "".join(f"<li>{e(k)}: {v}</li>" for k, v in sorted(kinds.items()))
        first = "".join(f"<li>{e(p.kind)}: {e(p.item)} ({e(p.detail)})</li>" for p in list(problems)[:10])
        prob = (f"<h2>Skipped or odd inputs</h2><ul>{items}</ul><p>First ones:</p><ul>{first}</ul>"
                "<p>All are listed in problems.csv beside this page.</p>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 7px; text-align: right; }}
td:first-child {{ text-align: left; }}
img {{ max-width: 100%; }} pre {{ background: #f6f6f6; padding: 8px; overflow-x: auto; }}
.headline {{ font-size: 18px; }}
</style></head><body>
<h1>{e(title)}</h1>
<p class="headline" id="macro-auc">Macro AUC <b>{_fmt(metrics['macro_auc'])}</b>
(95% CI {e(metrics.get('macro_auc_ci95_withheld') or _ci(metrics['macro_auc_ci95']))}, bootstrap over patients) on
{metrics['n_images']} images of {metrics['n_patients']} patients;
micro AUC {_fmt(metrics['micro_auc'])}; {_ece_words(metrics)}.</p>
{''.join(f'<p class="link"><a href="{e(href)}">{e(text)}</a></p>' for text, href in links)}
{''.join(f'<p class="data-note"><b>{e(line)}</b></p>' for line in _data_lines(metrics))}
<p id="notice"><b>{e(NOTICE)}</b></p>
<p>Accuracy is shown beside the accuracy of calling every image negative: a model is only
useful where it beats that. Thresholds were chosen on validation data, not on these images.
Undefined metrics (a finding without positives here) are shown as n/a, and a finding's
AUC interval is withheld when it has fewer than {MIN_CI_POSITIVES} positive or negative
images.</p>
<table><tr><th>finding</th><th>pos/n</th><th>AUC</th><th>95% CI</th><th>AP</th><th>threshold</th>
<th>sensitivity</th><th>specificity</th><th>F1</th><th>accuracy</th><th>all-negative accuracy</th>
<th>TP/FP/TN/FN</th><th>ECE (95% CI)</th><th>Brier (95% CI)</th></tr>
{''.join(rows)}</table>
{extra}
<h2>ROC curves</h2>{_img(out / 'roc_curves.png', 'ROC curves')}
<h2>Precision-recall curves</h2>{_img(out / 'pr_curves.png', 'PR curves')}
<h2>Calibration</h2>{_img(out / 'reliability.png', 'reliability diagram')}
{prob}
<h2>Configuration</h2><pre>{e(json.dumps(config, indent=2, default=str))}</pre>
</body></html>
"""
