"""Study 5, shift: train on one subgroup, test on another, beside the in-distribution result.

For each pair A -> B (from table columns: view PA/AP, sex M/F, age younger/older than the
median, or any column a user names, e.g. a site):

* the test-in set: a patient-wise share (test_fraction) of group A's patients;
* the test-out set: images of group B from patients outside the test-in set, drawn whole
  patient by whole patient and trimmed to the test-in set's size, so the gap is not a
  sample-size artefact (when B holds fewer images, both sets are cut to B's size and the
  table says so);
* training: group A's images of every other patient: no test patient is ever trained on,
  whichever group their other images belong to.

The model is what `medxfer train` deploys. Macro AUC is over the findings defined (both
classes present) in both test sets; the gap in - out has a CI from independent patient
bootstraps of the two sets.

With ``--external OTHER`` (another site's data, extracted with the same backbone) the study
also trains on DATA and tests on OTHER's shared findings beside an in-site hold-out of the
same size: external.csv/.md, external_findings.csv and external_auc.png (:func:`run_external`).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from ..errors import MedxferError
from ..experiments import CalibratedBottleneckCV, rows_key
from ..metrics import bootstrap_metrics, macro_auc
from ..splits import check_no_patient_overlap, patient_holdout
from .common import Ledger, Progress, StudyContext, cached_units, finish, line_figure, write_table
from .registry import register_study


def parse_shifts(spec: str) -> list[tuple[str, str, str]]:
    out = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        bits = part.split(":")
        if len(bits) != 3 or not all(bits):
            raise MedxferError(f"shift '{part}' must read COLUMN:A:B (train on rows whose COLUMN "
                               "is A, test on B), e.g. view:PA:AP")
        out.append(tuple(bits))
    return out


def group_rows(table: pd.DataFrame, column: str, value: str) -> np.ndarray:
    """Rows of the group: column == value as text; for age, 'younger'/'older' split at the
    median age (younger: below it)."""
    if column not in table.columns:
        raise MedxferError(f"shift column '{column}' is not in the dataset table (columns: "
                           f"{', '.join(map(str, table.columns))})")
    if column == "age" and value in ("younger", "older"):
        age = pd.to_numeric(table["age"], errors="coerce")
        med = float(np.nanmedian(age))
        mask = (age < med) if value == "younger" else (age >= med)
        return np.flatnonzero(mask.fillna(False).to_numpy())
    return np.flatnonzero(table[column].astype(str).to_numpy() == value)


def shift_split(table: pd.DataFrame, groups: np.ndarray, Y: np.ndarray, column: str, a: str, b: str, *,
                test_fraction: float, seed: int) -> dict:
    """{"train", "test_in", "test_out"} row arrays and "capped" for the pair a -> b."""
    rows_a, rows_b = group_rows(table, column, a), group_rows(table, column, b)
    if len(np.unique(groups[rows_a])) < 3 or len(rows_b) == 0:
        raise MedxferError(f"shift {column}:{a}:{b}: group '{a}' has "
                           f"{len(np.unique(groups[rows_a]))} patients and group '{b}' "
                           f"{len(rows_b)} images; each needs some (a in at least 3 patients)")
    _, te = patient_holdout(groups[rows_a], test_fraction, Y=Y[rows_a], seed=seed)
    test_in = rows_a[te]
    held = set(groups[test_in])
    rng = np.random.default_rng(seed)
    cand = rows_b[~np.isin(groups[rows_b], list(held))]
    if len(cand) == 0:
        raise MedxferError(f"shift {column}:{a}:{b}: every image of group '{b}' belongs to a "
                           f"held-out patient of group '{a}'; nothing is left to test on")
    picked = whole_patients(cand, groups, len(test_in), rng)
    capped = len(picked) < len(test_in)
    if capped:
        test_in = np.sort(rng.choice(test_in, len(picked), replace=False))
    test_out = np.sort(picked)
    excluded = set(groups[test_in]) | set(groups[test_out])
    train = rows_a[~np.isin(groups[rows_a], list(excluded))]
    check_no_patient_overlap(groups, train, np.concatenate([test_in, test_out]))
    return {"train": train, "test_in": test_in, "test_out": test_out, "capped": bool(capped)}


def whole_patients(rows: np.ndarray, groups: np.ndarray, n: int, rng) -> np.ndarray:
    """Up to ``n`` of ``rows``, drawn patient by whole patient in a random order (the last
    patient's images cut at ``n``), so a test set of another group or site holds few
    patients partly."""
    picked: list[int] = []
    for p in rng.permutation(np.unique(groups[rows])):
        picked.extend(rows[groups[rows] == p])
        if len(picked) >= n:
            break
    return np.array(picked[:n], dtype=int)


def in_out_auc(Y_in, P_in, g_in, Y_out, P_out, g_out, *, names: tuple[str, str], n_boot: int,
               seed: int) -> tuple[int, dict]:
    """Macro AUC of two test sets over the findings defined in both, each with a patient
    bootstrap CI (seeds ``seed`` and ``seed + 1``), and their gap in - out with a CI from
    the paired draws. Returns (findings scored, {NAME_auc, NAME_auc_lo, NAME_auc_hi for
    both ``names``, gap, gap_lo, gap_hi})."""
    cols = _defined_both(Y_in, Y_out)
    fn = {"macro_auc": lambda Yb, Pb: macro_auc(Yb[:, cols], Pb[:, cols]) if len(cols) else None}
    r_in = bootstrap_metrics(Y_in, P_in, fn, groups=g_in, n_boot=n_boot, seed=seed,
                             draws=True)["macro_auc"]
    r_out = bootstrap_metrics(Y_out, P_out, fn, groups=g_out, n_boot=n_boot, seed=seed + 1,
                              draws=True)["macro_auc"]
    n = min(len(r_in["draws"]), len(r_out["draws"]))
    gaps = np.asarray(r_in["draws"][:n]) - np.asarray(r_out["draws"][:n])
    out = {}
    for name, r in zip(names, (r_in, r_out)):
        lo, hi = r["ci95"] or [None, None]
        out |= {f"{name}_auc": r["value"], f"{name}_auc_lo": lo, f"{name}_auc_hi": hi}
    out |= {"gap": None if r_in["value"] is None or r_out["value"] is None
            else r_in["value"] - r_out["value"],
            "gap_lo": float(np.quantile(gaps, 0.025)) if n >= n_boot / 2 else None,
            "gap_hi": float(np.quantile(gaps, 0.975)) if n >= n_boot / 2 else None}
    return len(cols), out


def _defined_both(Y1, Y2) -> np.ndarray:
    def ok(Yx):
        pos = np.nansum(Yx, axis=0)
        return (pos > 0) & (pos < (~np.isnan(Yx)).sum(axis=0))
    return np.flatnonzero(ok(Y1) & ok(Y2))


def prior_shift(P: np.ndarray, train_prev: np.ndarray, new_prev: np.ndarray) -> np.ndarray:
    """Probabilities moved to a new prevalence per finding (Saerens et al. 2002, with known
    priors): odds multiplied by new/old prior odds. The ranking, hence the AUC, is
    unchanged; only calibration moves. Applied only when asked (--prior-shift)."""
    P = np.clip(np.asarray(P, np.float64), 1e-7, 1 - 1e-7)
    r0 = np.clip(train_prev, 1e-6, 1 - 1e-6)
    r1 = np.clip(new_prev, 1e-6, 1 - 1e-6)
    odds = P / (1 - P) * (r1 / (1 - r1)) / (r0 / (1 - r0))
    return odds / (1 + odds)


def _mean_ece(Y, P) -> float | None:
    from ..metrics import calibration_per_finding

    eces = [f["ece"] for f in calibration_per_finding(Y, P, n_boot=0)["per_finding"]
            if f["ece"] is not None]
    return float(np.mean(eces)) if eces else None


def run_external(ctx: StudyContext, folder, ledger: Ledger) -> dict:
    """Train on all of DATA but an in-site hold-out (test_fraction of its patients), test on
    the hold-out and on as many of the other site's images (whole patients), on the findings
    both label: macro AUC of each with patient-bootstrap CIs, the gap, the OOD flag rate of
    each side (the score fitted on the training images), and the mean per-finding ECE of
    each (with --prior-shift also after moving the probabilities to the other site's
    prevalence)."""
    from ..ood import FeatureDistance
    from ..pipeline import harmonised_label_index

    s, other = ctx.settings, ctx.external_features
    X, Y, groups = ctx.X, ctx.Y, ctx.groups
    names = ctx.names
    index = harmonised_label_index(other.dataset, names)
    shared = [n for n in names if n in index and (~np.isnan(other.Y[:, index[n]])).any()]
    if not shared:
        raise MedxferError(f"--external '{s.external}' labels none of the findings of DATA "
                           f"({', '.join(names)}); its findings: {', '.join(index)}")
    cols = [names.index(n) for n in shared]
    Yo = other.Y[:, [index[n] for n in shared]]
    go = np.char.add("external:", other.dataset.patient_ids.astype(str))
    tr, ti = patient_holdout(groups, s.test_fraction, Y=Y, seed=s.seed)
    rng = np.random.default_rng(s.seed)
    to = np.sort(whole_patients(np.arange(len(go)), go, len(ti), rng))
    capped = len(to) < len(ti)
    if capped:
        ti = np.sort(rng.choice(ti, len(to), replace=False))
    key = f"external-{other.manifest.get('dataset_fingerprint', '')[:12]}-{rows_key(tr, ti, to)}"

    def fit():
        est = CalibratedBottleneckCV(random_state=s.seed).fit(X[tr], Y[tr], groups=groups[tr])
        ood = FeatureDistance.fit(X[tr], groups=groups[tr])
        P_in, P_out = est.predict_proba(X[ti]), est.predict_proba(other.X[to])
        flags = np.concatenate([ood.flag(X[ti]), ood.flag(other.X[to])]).astype(np.float32)
        return np.concatenate([P_in, P_out]), {"flags": flags.tolist()}
    P, meta = ledger.cached(key, fit)
    P_in, P_out = P[:len(ti), cols], P[len(ti):, cols]
    flags = np.asarray(meta["flags"])
    Yi = Y[ti][:, cols]
    scored, aucs = in_out_auc(Yi, P_in, groups[ti], Yo[to], P_out, go[to],
                              names=("in_site", "out_of_site"), n_boot=s.n_boot, seed=s.seed)
    row = {"train_images": len(tr), "test_images": len(ti), "external_images": int(len(other)),
           "external_images_tested": int(len(to)),
           "findings_shared": len(shared), "findings_scored": scored,
           "capped_to_smaller_site": bool(capped), **aucs,
           "ood_flagged_in_site": f"{int(flags[:len(ti)].sum())}/{len(ti)}",
           "ood_flagged_out_of_site": f"{int(flags[len(ti):].sum())}/{len(to)}",
           "ece_mean_per_finding_in_site": _mean_ece(Yi, P_in),
           "ece_mean_per_finding_out_of_site": _mean_ece(Yo[to], P_out)}
    if s.prior_shift:
        train_prev = np.nanmean(Y[tr][:, cols], axis=0)
        other_prev = np.nanmean(Yo, axis=0)  # the other site's prevalence, known from its labels
        row["ece_mean_per_finding_out_of_site_prior_corrected"] = _mean_ece(
            Yo[to], prior_shift(P_out, train_prev, other_prev))
    per = pd.DataFrame({"finding": shared,
                        "in_site_positives": np.nansum(Yi, axis=0).astype(int),
                        "out_of_site_positives": np.nansum(Yo[to], axis=0).astype(int)})
    write_table(folder, "external_findings", per)
    table = pd.DataFrame([row])
    write_table(folder, "external", table, ci_of=("in_site_auc", "out_of_site_auc", "gap"))
    long = pd.DataFrame({"site": ["in-site hold-out", "other site"],
                         "macro_auc": [row["in_site_auc"], row["out_of_site_auc"]],
                         "macro_auc_lo": [row["in_site_auc_lo"], row["out_of_site_auc_lo"]],
                         "macro_auc_hi": [row["in_site_auc_hi"], row["out_of_site_auc_hi"]],
                         "test": "macro AUC"})
    line_figure(folder, "external_auc", long, x="site", y="macro_auc", group="test",
                ylabel="macro AUC (95% CI)",
                title=f"Trained on DATA; {len(ti)} in-site vs {len(to)} other-site images, "
                      f"{scored} shared findings")
    return {"row": row, "shared": shared, "not_in_external": [n for n in names if n not in shared]}


@register_study("shift", title="5. Distribution shift", order=5)
def run_shift(ctx: StudyContext) -> dict:
    s = ctx.settings
    pairs = parse_shifts(s.shifts)
    X, Y, groups = ctx.X, ctx.Y, ctx.groups
    table = ctx.features.dataset.table
    folder = ctx.folder("shift")
    ledger = Ledger(folder, ctx.fingerprint("test_fraction"))
    bar = Progress(ctx, "shift", len(pairs))
    rows, skipped, splits = [], [], []
    for column, a, b in pairs:
        label = f"{column}: {a} -> {b}"
        try:
            sp = shift_split(table, groups, Y, column, a, b, test_fraction=s.test_fraction, seed=s.seed)
        except MedxferError as exc:
            skipped.append({"shift": label, "reason": str(exc)})
            bar.step(what=f"{label} skipped")
            continue
        splits.append((column, a, b, label, sp))

    def fit(tr, ti, to):
        est = CalibratedBottleneckCV(random_state=s.seed).fit(X[tr], Y[tr], groups=groups[tr])
        return np.stack([est.predict_proba(X[ti]), est.predict_proba(X[to])]), {}
    units = [(f"{column}-{a}-{b}-{rows_key(sp['train'], sp['test_in'], sp['test_out'])}",
              partial(fit, sp["train"], sp["test_in"], sp["test_out"]))
             for column, a, b, _, sp in splits]
    done = cached_units(ctx, ledger, units)
    for (column, a, b, label, sp), (P, _) in zip(splits, done):
        tr, ti, to = sp["train"], sp["test_in"], sp["test_out"]
        P_in, P_out = P
        scored, aucs = in_out_auc(Y[ti], P_in, groups[ti], Y[to], P_out, groups[to],
                                  names=("in_distribution", "shifted"), n_boot=s.n_boot, seed=s.seed)
        rows.append({"shift": label, "column": column, "train_group": a, "test_group": b,
                     "train_images": len(tr), "test_images": len(ti), "findings_scored": scored,
                     "capped_to_smaller_group": sp["capped"], **aucs})
        bar.step(what=label)
    table_out = pd.DataFrame(rows)
    if rows:  # no pairs (--shifts ""): no empty table
        write_table(folder, "shift", table_out, ci_of=("in_distribution_auc", "shifted_auc", "gap"))
    if skipped:
        write_table(folder, "skipped", pd.DataFrame(skipped))
    if rows:
        long = pd.concat([
            pd.DataFrame({"shift": table_out["shift"], "test": "in-distribution",
                          "macro_auc": table_out["in_distribution_auc"],
                          "macro_auc_lo": table_out["in_distribution_auc_lo"],
                          "macro_auc_hi": table_out["in_distribution_auc_hi"]}),
            pd.DataFrame({"shift": table_out["shift"], "test": "shifted",
                          "macro_auc": table_out["shifted_auc"],
                          "macro_auc_lo": table_out["shifted_auc_lo"],
                          "macro_auc_hi": table_out["shifted_auc_hi"]})])
        line_figure(folder, "shift_auc", long, x="shift", y="macro_auc", group="test",
                    ylabel="macro AUC (95% CI)",
                    title="Train on A: held-out patients of A vs an equal number of images of B")
    result = {"rows": rows, "skipped": skipped, "tables": ["shift.csv"] if rows else [],
              "figures": ["shift_auc.png"] if rows else []}
    if ctx.external_features is not None:
        bar.stage(f"external: trained on DATA, tested on {s.external}")
        result["external"] = run_external(ctx, folder, ledger)
        result["tables"] += ["external.csv", "external_findings.csv"]
        result["figures"] += ["external_auc.png"]
    return finish(ctx, "shift", result, bar.close())
