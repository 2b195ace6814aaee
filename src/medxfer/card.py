"""Model cards: what a reviewer must know about a model folder, read from its own files.

`medxfer card MODEL [--evaluation REPORT ...] --out card.html` (or ``card.md``) writes a
card in the sections of "Model Cards for Model Reporting" (Mitchell et al., FAT* 2019), with
the items of TRIPOD+AI (Collins et al., BMJ 2024) that concern a model rather than a paper:
intended use and out-of-scope uses, the training data (source, counts, patients, views,
sex, age, prevalence, how labels were made, the uncertain-label policy, whether patient IDs
were real), the method and how its settings were chosen, performance from the model's
validation predictions and from every evaluation report given (per finding with
patient-bootstrap CIs beside the all-negative accuracy, calibration, subgroups), the
out-of-distribution flag and its measured rates, limitations and measured gaps, and the
software, hashes and commands.

Every number is read from the model folder (model.json, written by `medxfer train`) or from
a report folder's metrics.json (written by `medxfer evaluate`); none is typed here. What a
folder does not record is said in words, never left as an empty section. `medxfer train`
writes card.md and card.html into every model folder (:func:`write_model_card`).

No torch here: a card is built from JSON and file hashes in a second.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .data.contract import PATIENT_ID_SOURCES, UNCERTAIN_POLICIES
from .errors import MedxferError
from .hashing import sha256_file
from .settings import MIN_CI_POSITIVES, MIN_SUBGROUP_IMAGES, NOTICE

#: How each dataset format's labels were made, as its release describes it.
LABEL_SOURCES = {
    "chestxray14": "text-mined from the radiology reports by natural-language processing "
                   "(Wang et al., CVPR 2017), not read from the images; visual reviews have "
                   "found many of them wrong (Oakden-Rayner, Acad. Radiol. 2020)",
    "chexpert": "extracted from the radiology reports by the rule-based CheXpert labeler "
                "(Irvin et al., AAAI 2019), which marks some mentions uncertain",
    "mimic_cxr": "extracted from the radiology reports by the CheXpert or NegBio labeler "
                 "(Johnson et al., 2019), which marks some mentions uncertain",
    "padchest": "from the radiology reports: about a quarter labelled by physicians, the rest "
                "by a model trained on those (Bustos et al., Med. Image Anal. 2020)",
    "vindr_cxr": "read from the images by radiologists (Nguyen et al., Sci. Data 2022)",
    "rsna_pneumonia": "read from the images by radiologists for the RSNA pneumonia challenge "
                      "(2018)",
    "shenzhen_tb": "the clinical reading of each radiograph for tuberculosis (Jaeger et al., "
                   "2014)",
    "montgomery_tb": "the clinical reading of each radiograph for tuberculosis (Jaeger et al., "
                     "2014)",
    "jsrt": "nodule or no nodule, nodules confirmed by CT (Shiraishi et al., AJR 2000)",
}
UNKNOWN_LABELS = ("given by the user's table or folder names; medxfer cannot know how they were "
                  "made: whoever uses this model must find out and say so")

CARD_NAMES = ("card.md", "card.html")


class CardError(MedxferError):
    """A model or report folder that a card cannot be built from."""


@dataclass
class Section:
    """One section of a card: paragraphs ``("p", text)``, lists ``("ul", [text])`` and
    tables ``("table", header, rows)``."""

    title: str
    blocks: list = field(default_factory=list)

    def p(self, text: str) -> "Section":
        self.blocks.append(("p", text))
        return self

    def ul(self, items) -> "Section":
        items = [i for i in items if i]
        if items:
            self.blocks.append(("ul", items))
        return self

    def table(self, header, rows) -> "Section":
        self.blocks.append(("table", list(header), [list(r) for r in rows]))
        return self


@dataclass
class Card:
    title: str
    sections: list[Section]

    def section(self, title: str) -> Section | None:
        return next((s for s in self.sections if s.title == title), None)


# -- reading ------------------------------------------------------------------------------

def read_model_folder(folder: str | Path) -> dict:
    """model.json of a model folder, plus ``_files``: the sha256 of each weights file."""
    folder = Path(folder)
    path = folder / "model.json"
    if not path.is_file():
        raise CardError(f"'{folder}' is not a medxfer model folder (no model.json); train one "
                        "with `medxfer train FEATURES --out MODEL`")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CardError(f"'{path}' is not readable JSON ({exc}); copy the model folder again") from exc
    if not isinstance(meta, dict) or meta.get("format") != "medxfer-model":
        raise CardError(f"'{path}' is not a medxfer model description")
    meta["_files"] = {p.name: sha256_file(p) for p in sorted(folder.glob("*.safetensors"))}
    meta["_folder"] = str(folder)
    return meta


def read_report(folder: str | Path, model: dict | None = None) -> dict:
    """metrics.json of a report folder (`medxfer evaluate ... --out REPORT`). With ``model``
    (:func:`read_model_folder`), a report of another model is refused."""
    folder = Path(folder)
    path = folder / "metrics.json" if folder.is_dir() else folder
    if not path.is_file():
        raise CardError(f"'{folder}' is not a report folder (no metrics.json); write one with "
                        "`medxfer evaluate MODEL DATA --out REPORT`")
    try:
        doc = json.loads(path.read_text())
        doc["metrics"]["per_finding"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CardError(f"'{path}' is not a medxfer report's metrics.json ({type(exc).__name__}: "
                        f"{exc})") from exc
    doc["_folder"] = str(folder)
    evaluated = (doc.get("config") or {}).get("model_sha256")
    mine = (model or {}).get("_files", {}).get("model.safetensors")
    if model is not None and evaluated and mine and evaluated != mine:
        raise CardError(f"'{folder}' evaluated another model (model.safetensors sha256 "
                        f"{evaluated[:12]}...; this one is {mine[:12]}...): give the reports of "
                        f"this model ({model['_folder']})")
    doc["_same_model"] = None if not (evaluated and mine) else evaluated == mine
    return doc


# -- formatting ---------------------------------------------------------------------------

def _n(x, digits: int = 3) -> str:
    return "n/a" if x is None or x != x else f"{x:.{digits}f}"


def _pct(x) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}%"


def _ci(ci, why=None) -> str:
    if ci:
        return f"{ci[0]:.3f}-{ci[1]:.3f}"
    return why or "n/a"


def _auc_with_ci(m: dict) -> str:
    if m.get("macro_auc") is None:
        return "n/a"
    return f"{m['macro_auc']:.3f} (95% CI {_ci(m.get('macro_auc_ci95'), m.get('macro_auc_ci95_withheld'))})"


def _counts(d: dict | None) -> str:
    if not d:
        return "not recorded"
    return ", ".join(f"{k if k not in ('nan', 'None', '<NA>') else 'unknown'} {v}"
                     for k, v in sorted(d.items(), key=lambda kv: -kv[1]))


def _finding_rows(per: dict) -> list[list[str]]:
    rows = []
    for name, m in per.items():
        rows.append([name, str(m.get("positives", "n/a")), str(m.get("n", "n/a")), _pct(m.get("prevalence")),
                     _n(m.get("auc")), _ci(m.get("auc_ci95"), m.get("auc_ci95_withheld")),
                     _n(m.get("average_precision")), _n(m.get("threshold")),
                     _n(m.get("sensitivity")), _n(m.get("specificity")),
                     _n(m.get("accuracy")), _n(m.get("all_negative_accuracy")), _n(m.get("ece"))])
    return rows


FINDING_HEADER = ("finding", "positives", "images", "prevalence", "AUC", "AUC 95% CI",
                  "average precision", "threshold", "sensitivity", "specificity", "accuracy",
                  "all-negative accuracy", "ECE")


def _subgroup_rows(sub: dict) -> list[list[str]]:
    rows = []
    for col, groups in sub.items():
        for name, g in groups.items():
            rows.append([col.replace("_", " "), name, str(g["n_images"]), str(g["n_patients"]),
                         _n(g["macro_auc"]), _ci(g["macro_auc_ci95"], g.get("withheld")),
                         str(g["findings_with_auc"])])
    return rows


SUBGROUP_HEADER = ("by", "group", "images", "patients", "macro AUC", "95% CI",
                   "findings in the mean")


def _performance(s: Section, m: dict, what: str) -> None:
    """The performance blocks of one set of metrics (validation or a report)."""
    n_boot = (m.get("bootstrap") or {}).get("n_boot")
    s.p(f"{what}. {m.get('n_images', 'n/a')} images of {m.get('n_patients', 'n/a')} patients; "
        f"macro AUC {_auc_with_ci(m)} over {(m.get('macro') or {}).get('findings_with_auc', 'n/a')} "
        f"findings with an AUC; intervals from {n_boot if n_boot else 'n/a'} resamples of "
        f"whole patients (withheld below {MIN_CI_POSITIVES} positive or negative images). "
        "Accuracy is shown beside the accuracy of calling every image negative, which a "
        "useless model reaches on rare findings.")
    s.table(FINDING_HEADER, _finding_rows(m["per_finding"]))
    cal = m.get("calibration") or {}
    macro = m.get("macro") or {}
    s.p(f"Calibration: expected calibration error {_n(cal.get('ece_pooled', cal.get('ece')))} pooled "
        f"over findings, {_n(macro.get('ece'))} mean per finding; Brier score {_n(macro.get('brier'))} "
        "mean per finding.")
    sub = m.get("subgroups")
    if sub:
        s.p(f"Subgroups (macro AUC over the findings with {MIN_CI_POSITIVES} positive and "
            f"negative images in the group; groups under {MIN_SUBGROUP_IMAGES} images get no AUC):")
        s.table(SUBGROUP_HEADER, _subgroup_rows(sub))
    elif sub is not None:
        s.p("Subgroups: the data records no view, sex or age, so there are none.")
    else:
        s.p("Subgroups: not recorded (written by an older medxfer).")


# -- the card -----------------------------------------------------------------------------

def build_card(model_dir: str | Path, evaluations=(), *, name: str | None = None) -> Card:
    """The card of ``model_dir`` with the reports in ``evaluations`` (report folders);
    ``name``: what the card calls the model (the folder's name)."""
    meta = read_model_folder(model_dir)
    reports = [read_report(r, meta) for r in evaluations]
    feats = meta.get("features") or {}
    data = feats.get("training_data")
    sel = meta.get("selection_metrics") or {}
    cfg = meta.get("config") or {}
    bb = meta.get("backbone") or {}
    labels = list(meta.get("label_names") or [])
    fmt = (data or {}).get("format") or feats.get("dataset_format")
    name = name or Path(model_dir).resolve().name
    finetuned = bool(bb.get("finetuned_sha256"))
    sections = []

    s = Section("Model details")
    members = bb.get("members") or [bb]
    chosen = cfg.get("chosen") or [cfg.get("params") or {}]
    head = " + ".join(
        (f"a {c.get('bottleneck_dim')}-wide bottleneck h = W^T z" if c.get("bottleneck_dim")
         else "a linear head (no bottleneck)") + f", penalty alpha {c.get('alpha')}" for c in chosen)
    task = (meta.get("estimator") or {}).get("task") or "multilabel"
    s.ul([
        f"Model folder: {name}; written by medxfer {meta.get('medxfer_version', 'n/a')}"
        + (f" on {meta['created']}" if meta.get("created") else "") + ".",
        f"Predicts {len(labels)} findings: {', '.join(labels)}"
        + (" (independent per-finding sigmoid outputs)." if task != "multiclass" else " (one class per image, softmax)."),
        f"Backbone: {bb.get('name', 'n/a')}, ImageNet-pretrained, "
        + ("partially fine-tuned on radiographs" if finetuned else "frozen (not trained on radiographs)")
        + f"; {bb.get('pooling', 'n/a')} pooling gives {bb.get('feature_dim', 'n/a')} features per image.",
        f"Head: {head}; "
        + (f"{sel['members']} fold models averaged." if sel.get("members") else "one model.")
        if chosen else None,
        f"Calibration: {(meta.get('calibration') or {}).get('method', 'none')}; thresholds: "
        f"{cfg.get('threshold_method', 'n/a')} rule on the validation predictions.",
        "Licence of the software: Apache-2.0. The backbone weights carry their own licences "
        "(see the package each came from).",
    ])
    sections.append(s)

    s = Section("Intended use")
    s.p(NOTICE)
    s.ul([
        "Intended users: researchers and data scientists studying chest radiographs, who "
        "check the model on their own patients before relying on any number.",
        "Intended inputs: frontal chest radiographs like the training data"
        + (f" ({_counts(data.get('view'))} by view)" if data and data.get("view") else "")
        + ", as PNG, JPEG or DICOM.",
    ])
    s.p("Out of scope:")
    age = (data or {}).get("age") or {}
    s.ul([
        "Diagnosis, triage or any decision about a patient without a clinical validation at "
        "the site that uses it.",
        "Images that are not chest radiographs (CT, MR, other body parts, lateral views): the "
        "out-of-distribution flag catches many of them, not all.",
        f"Patients outside the training ages ({_n(age.get('min'), 0)} to {_n(age.get('max'), 0)} years)."
        if age.get("min") is not None else None,
        "Findings other than the ones listed, and the absence of every finding: a finding "
        "below threshold is not ruled out.",
    ])
    sections.append(s)

    s = Section("Training data")
    if data:
        labelled = {n: data["images"] - data.get("unknown_labels", {}).get(n, 0) for n in data["findings"]}
        s.ul([
            f"Source: {data.get('name')} (format {fmt or 'n/a'}).",
            f"{data['images']} images of {data['patients']} patients.",
            f"Patient IDs: {PATIENT_ID_SOURCES.get(data.get('patient_ids_from'), data.get('patient_ids_from'))}"
            + ("" if data.get("patient_ids_from") == "metadata" else
               ": patient-wise splits could not keep a patient's images together") + ".",
            f"Labels: {LABEL_SOURCES.get(fmt, UNKNOWN_LABELS)}.",
            f"Uncertain labels: {UNCERTAIN_POLICIES.get(data['uncertain_policy'], data['uncertain_policy'])} "
            f"({sum((data.get('uncertain_labels') or {}).values())} uncertain labels)."
            if data.get("uncertain_policy") else "Uncertain labels: the source marks none.",
            f"Views: {_counts(data.get('view'))}." if "view" in data else "Views: not recorded by the source.",
            f"Sex: {_counts(data.get('sex'))}." if "sex" in data else "Sex: not recorded by the source.",
            f"Age: median {_n(age.get('median'), 0)}, range {_n(age.get('min'), 0)}-{_n(age.get('max'), 0)} "
            f"years, {age.get('missing', 0)} missing." if age else "Age: not recorded by the source.",
            f"Images with no finding: {data.get('no_finding', 'n/a')}.",
        ])
        s.p("Prevalence per finding in the training images:")
        s.table(("finding", "positives", "labelled images", "prevalence"),
                [[n, str(k), str(labelled[n]), _pct(k / labelled[n] if labelled[n] else None)]
                 for n, k in data["findings"].items()])
    else:
        s.p("This model folder does not record its training data's summary (written by an older "
            f"medxfer). It records: {feats.get('n_rows', 'n/a')} training images from "
            f"{feats.get('dataset_name', 'n/a')}.")
    sections.append(s)

    s = Section("Method and how its settings were chosen")
    selection = cfg.get("selection") or {}
    if sel.get("selection"):
        if sel.get("selected_by") == "holdout":
            s.p(f"The width k and penalty alpha were chosen among {sel.get('selected_from')} settings "
                f"by the macro AUC on one patient-wise validation part (1/"
                f"{selection.get('inner_folds', 'n/a')} of the training patients; the training set "
                f"has at least {selection.get('holdout_from')} images); the chosen setting's model, "
                f"trained on the other patients, is deployed.")
        else:
            s.p(f"The width k and penalty alpha were chosen among {sel.get('selected_from')} settings by "
                f"{selection.get('inner_folds', 'n/a')}-fold patient-wise cross-validation on the training "
                f"images (pooled out-of-fold macro AUC); the chosen setting's fold models are averaged.")
        keys = sorted({k for c in chosen for k in c})
        s.table(("k (bottleneck width)", "alpha", "out-of-fold macro AUC", "chosen"),
                [[str(r.get("bottleneck_dim") or "none (linear head)"), str(r.get("alpha")),
                  _n(r.get("oof_macro_auc")),
                  "yes" if {k: r.get(k) for k in keys} in chosen else ""] for r in sel["selection"]])
    elif sel.get("selected_from"):
        s.p(f"The setting was chosen among {sel['selected_from']} by validation macro AUC "
            "(`medxfer tune`).")
    else:
        s.p("The head's settings were given, not selected (`--no-select`).")
    params = cfg.get("params") or {}
    s.ul([
        f"Solver: {params.get('solver', 'n/a')}; class imbalance: {params.get('imbalance', 'n/a')}; "
        f"penalty on the codes: l1 {params.get('l1', 'n/a')}, l2 {params.get('l2', 'n/a')}.",
        f"Calibration ({(meta.get('calibration') or {}).get('method', 'none')}) and the thresholds "
        f"({cfg.get('threshold_method', 'n/a')} rule) were fitted on {sel.get('validation_images', 'n/a')} "
        "validation predictions of patients each model did not train on.",
    ])
    sections.append(s)

    s = Section("Performance")
    val = sel.get("validation_metrics")
    if val:
        _performance(s, val, f"On the training data's validation predictions: {val.get('predictions')}")
    else:
        s.p(f"The model folder records only the validation macro AUC "
            f"{_n(sel.get('validation_macro_auc'))} on {sel.get('validation_images', 'n/a')} images, "
            "without intervals (written by an older medxfer).")
    if reports:
        for r in reports:
            _performance(s, r["metrics"], f"Evaluation report {r['_folder']} ({r.get('title', '')}), "
                         f"data {(r.get('config') or {}).get('data', 'n/a')}")
            if r["_same_model"] is None:
                s.p("This report does not record which model it evaluated (written by an older "
                    "medxfer): check that it is this one.")
    else:
        s.p("No evaluation on new patients was given to this card: the numbers above are the "
            "training data's own validation predictions, which are optimistic. Evaluate the "
            "model on patients it never saw (`medxfer evaluate MODEL DATA --out REPORT`) and "
            "build the card again with `--evaluation REPORT`.")
    sections.append(s)

    s = Section("Out-of-distribution flag")
    ood = meta.get("ood")
    if ood:
        s.p(f"An image is flagged when its features are far from the training images: a distance "
            f"score above {_n(ood['threshold'])}, the {_n(ood['quantile'], 2)} quantile of the "
            "scores of training images scored by a fit that did not see their patient (so about "
            f"{_pct(1 - ood['quantile'])} of images like the training ones are flagged by design), "
            "or a DICOM header that is not a chest radiograph's. Flagged images get no findings.")
        rates = [f"{r['_folder']}: {o['flagged']} of {o['of']} images flagged ({_pct(o['flagged'] / o['of'])})"
                 for r in reports if (o := r["metrics"].get("out_of_distribution")) and o.get("of")]
        s.ul(rates) if rates else s.p("Measured rates: none yet (no evaluation report given).")
    else:
        s.p("This model carries no out-of-distribution score (an older or very small model): only "
            "a DICOM header flags an image.")
    sections.append(s)

    s = Section("Limitations and measured gaps")
    gaps = []
    if not finetuned:
        gaps.append("The features are ImageNet's, frozen: published fine-tuned networks reach "
                    "higher AUCs on radiographs; this card's numbers are what this model measured.")
    if fmt in LABEL_SOURCES:
        gaps.append(f"Labels were {LABEL_SOURCES[fmt]}: AUCs against them measure agreement with "
                    "those labels, not with the truth.")
    elif fmt:
        gaps.append(f"Labels: {UNKNOWN_LABELS}.")
    if data and data.get("patient_ids_from") not in (None, "metadata"):
        gaps.append("Patient IDs were stand-ins, so the validation predictions may include images "
                    "of patients seen in training.")
    if val and reports:
        for r in reports:
            a, b = val.get("macro_auc"), r["metrics"].get("macro_auc")
            if a is not None and b is not None:
                gaps.append(f"Validation to {r['_folder']}: macro AUC {a:.3f} -> {b:.3f} ({b - a:+.3f}).")
    for m, where in ([(val, "validation")] if val else []) + [(r["metrics"], r["_folder"]) for r in reports]:
        for col, groups in (m.get("subgroups") or {}).items():
            scored = {k: g["macro_auc"] for k, g in groups.items() if g["macro_auc"] is not None}
            if len(scored) >= 2:
                lo, hi = min(scored, key=scored.get), max(scored, key=scored.get)
                gaps.append(f"{where}, by {col.replace('_', ' ')}: macro AUC {scored[lo]:.3f} ({lo}) "
                            f"to {scored[hi]:.3f} ({hi}); read their intervals before calling it a gap.")
        few = [n for n, f in m["per_finding"].items() if f.get("auc_ci95_withheld")]
        if few:
            gaps.append(f"{where}: too few positives for an interval in {', '.join(few)}.")
    dead = sel.get("degenerate_thresholds") or {}
    if dead:
        gaps.append("Thresholds that decide nothing on the validation predictions (sensitivity or "
                    f"specificity at most 0.05): {', '.join(dead)}; read their probabilities, not "
                    "their above-threshold calls.")
    fb = sel.get("fallbacks") or {}
    said = {"threshold_0.5_no_both_classes": "threshold left at 0.5 (no positives or no negatives "
                                             "in the validation predictions)",
            "calibration_identity_no_both_classes": "not calibrated (no positives or no negatives "
                                                    "in the validation predictions)",
            "calibration_shift_only": "calibration reduced to a shift (its Platt slope was reversed, "
                                      "flat or infinite)"}
    for key, what in said.items():
        if fb.get(key):
            gaps.append(f"Fallback: {', '.join(fb[key])}: {what}.")
    s.ul(gaps) if gaps else s.p("None measured.")
    sections.append(s)

    s = Section("Software, hashes and commands")
    files = meta["_files"]
    s.ul([f"Card written by medxfer {__version__}; model written by medxfer "
          f"{meta.get('medxfer_version', 'n/a')}."]
         + [f"{k}: sha256 {v}" for k, v in files.items()]
         + [f"Backbone {m.get('name')} weights: sha256 {m.get('weights_sha256') or 'n/a'}" for m in members]
         + ([f"Fine-tuned backbone state: sha256 {bb['finetuned_sha256']}"] if finetuned else []))
    cmds = [f"medxfer extract DATA --backbone {bb.get('name')} --pooling {bb.get('pooling')} --out FEATURES"
            " (the extraction this model expects; `evaluate` and `predict` do it themselves)"]
    cmds.append(f"{cfg['command']} (how this model was trained)" if cfg.get("command") else
                "Training command: not recorded (trained through the Python API or an older medxfer).")
    s.ul(cmds)
    sections.append(s)
    return Card(f"Model card: {name}", sections)


# -- rendering ----------------------------------------------------------------------------

def _md_cell(x: str) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def card_markdown(card: Card) -> str:
    out = [f"# {card.title}", ""]
    for s in card.sections:
        out += [f"## {s.title}", ""]
        for b in s.blocks:
            if b[0] == "p":
                out += [b[1], ""]
            elif b[0] == "ul":
                out += [f"- {i}" for i in b[1]] + [""]
            else:
                _, header, rows = b
                out.append("| " + " | ".join(map(_md_cell, header)) + " |")
                out.append("|" + "---|" * len(header))
                out += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
                out.append("")
    return "\n".join(out)


CSS = """body{font-family:system-ui,sans-serif;max-width:72rem;margin:1rem auto;padding:0 1rem;
line-height:1.45;color:#111}h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:1.6rem;
border-bottom:1px solid #ccc}table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0;
display:block;overflow-x:auto}th,td{border:1px solid #ccc;padding:.2rem .45rem;text-align:left}
th{background:#f2f2f2}.notice{background:#fff4d6;border:1px solid #e0b84c;padding:.5rem}"""


def card_html(card: Card) -> str:
    def e(text) -> str:
        return html.escape(str(text), quote=False)

    out = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
           f"content='width=device-width,initial-scale=1'><title>{e(card.title)}</title>"
           f"<style>{CSS}</style></head><body><h1>{e(card.title)}</h1>"]
    for s in card.sections:
        out.append(f"<section id='{re.sub(r'[^a-z]+', '-', s.title.lower()).strip('-')}'><h2>{e(s.title)}</h2>")
        for b in s.blocks:
            if b[0] == "p":
                cls = " class='notice'" if b[1] == NOTICE else ""
                out.append(f"<p{cls}>{e(b[1])}</p>")
            elif b[0] == "ul":
                out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b[1]) + "</ul>")
            else:
                _, header, rows = b
                out.append("<table><thead><tr>" + "".join(f"<th scope='col'>{e(h)}</th>" for h in header)
                           + "</tr></thead><tbody>" + "".join(
                               "<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
                           + "</tbody></table>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


def _render(card: Card, out: Path) -> Path:
    """Write ``card`` to ``out``: HTML for .html/.htm, Markdown for .md (atomically)."""
    text = card_markdown(card) if out.suffix.lower() == ".md" else card_html(card)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.writing")
    tmp.write_text(text)
    tmp.replace(out)
    return out


def write_card(model_dir: str | Path, out: str | Path, evaluations=(), *, name: str | None = None) -> Path:
    """Write the card of ``model_dir`` to ``out``: HTML for .html/.htm, Markdown for .md."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm", ".md"):
        raise CardError(f"--out '{out}': a card is written as .html or .md; name the file so")
    return _render(build_card(model_dir, evaluations, name=name), out)


def write_model_card(folder: str | Path, evaluations=(), *, name: str | None = None) -> list[Path]:
    """card.md and card.html in a model folder (what `train` writes, without evaluations;
    the demo's, with its report): the card is built once and written in both forms."""
    folder = Path(folder)
    card = build_card(folder, evaluations, name=name)
    return [_render(card, folder / n) for n in CARD_NAMES]


__all__ = ["Card", "CardError", "Section", "build_card", "card_html", "card_markdown",
           "read_model_folder", "read_report", "write_card", "write_model_card"]
