"""Drift results as files: a Parquet table of per-feature results, and a self-contained HTML page."""

from __future__ import annotations

from typing import Any

RESULT_COLUMNS = ("feature", "kind", "test", "drifted", "decided", "statistic", "p_value", "q_value", "wasserstein",
                  "psi", "jensen_shannon", "unseen_share", "missing_reference", "missing_current", "missing_q_value",
                  "importance", "rows_reference", "rows_current", "reasons", "note")


def results_table(report: Any) -> Any:
    """One row per feature (and model output), the columns of :data:`RESULT_COLUMNS`."""
    import pyarrow as pa

    rows = []
    for f in report.features:
        rows.append({"feature": f.name, "kind": f.kind, "test": f.test, "drifted": f.drifted, "decided": f.decided,
                     "statistic": f.statistic, "p_value": f.p_value, "q_value": f.q_value,
                     **{k: f.effect.get(k) for k in ("wasserstein", "psi", "jensen_shannon", "unseen_share")},
                     "missing_reference": f.missing_reference, "missing_current": f.missing_current,
                     "missing_q_value": f.missing_q_value, "importance": f.importance,
                     "rows_reference": f.rows_reference, "rows_current": f.rows_current,
                     "reasons": "; ".join(f.reasons), "note": f.note})
    types = {"feature": pa.string(), "kind": pa.string(), "test": pa.string(), "drifted": pa.bool_(), "decided": pa.bool_(),
             "rows_reference": pa.int64(), "rows_current": pa.int64(), "reasons": pa.string(), "note": pa.string()}
    schema = pa.schema([(c, types.get(c, pa.float64())) for c in RESULT_COLUMNS])
    return pa.Table.from_pylist(rows, schema=schema)


def write_results(report: Any, path: Any) -> None:
    """Write :func:`results_table` to Parquet atomically, with lineage (reference and current)."""
    from mlsys_cli.data.io import Lineage, write_table

    lineage = Lineage(command="drift", extra={"reference": report.reference, "current": report.current,
                                              "drift_detected": report.drift_detected})
    write_table(results_table(report), path, lineage)


def write_html(report: Any, path: Any) -> None:
    """The report as one HTML page: verdicts, one distribution plot per feature, the windows over time."""
    from mlsys_cli import __version__
    from mlsys_cli import htmlreport as hr
    from mlsys_cli.monitor.results import verdict

    d = report.to_dict()
    ref, cur = d["reference"], d["current"]
    page = hr.Report("Drift report: " + ("DRIFT DETECTED" if report.drift_detected else "no drift"),
                     subtitle=f"current {cur['source']} ({cur['rows']:,} rows) vs {ref['kind']} reference {ref['source']} "
                              f"({ref['rows']:,} rows)",
                     footer=f"mlsys {__version__} drift; backend {report.options.backend}; FDR {report.options.alpha:g}")
    page.heading("Features")
    shown = {True: "yes", False: "no"}
    page.table([{"feature": f["name"], "drifted": shown.get(verdict(f), "undecided"), "flagged": f["drifted"],
                 "test": f["test"], "statistic": f["statistic"], "q value": f["q_value"],
                 "effect sizes": ", ".join(f"{k} {hr.format_value(v, 3)}" for k, v in f["effect"].items() if v is not None),
                 "missing (ref -> cur)": None if f["missing_reference"] is None else
                 f"{f['missing_reference']:.3f} -> {f['missing_current']:.3f}", "importance": f["importance"],
                 "why": "; ".join(f["reasons"]) or f["note"] or ""} for f in d["features"]],
               # The flag on its own boolean: every "yes"/"no"/"undecided" text is truthy (every row was orange).
               columns=["feature", "drifted", "test", "statistic", "q value", "effect sizes", "missing (ref -> cur)",
                        "importance", "why"], flag="flagged")
    page.text(f"A feature drifts when its test is significant after Benjamini-Hochberg correction at FDR {report.options.alpha:g} "
              f"AND an effect size reaches its threshold (Wasserstein/std {report.options.wasserstein:g}, "
              f"PSI {report.options.psi:g}, Jensen-Shannon {report.options.jensen_shannon:g}, unseen share "
              f"{report.options.unseen_share:g}, missing rate change {report.options.missing_rate:g}).")
    if report.windows:
        page.heading("Over time")
        page.table([{**w.to_dict(), "drifted": ", ".join(w.drifted)} for w in report.windows],
                   ["start", "end", "rows", "drift_detected", "drifted", "note"], flag="drift_detected")
    _multivariate(page, d["multivariate"], hr)
    _model(page, d["model"])
    page.heading("Distributions")
    plots, captions = [], []
    for f in report.features:
        svg = _plot(f, hr)
        if svg is not None:
            plots.append(svg)
            captions.append("; ".join(f.reasons) or "no drift" if f.decided else f.note)
    if plots:
        page.figures(*plots, captions=captions)
    for change in d["schema_changes"] + d["skipped"]:
        page.text(f"{change['column']}: {change.get('change') or change.get('reason')}")
    page.write(path)


def _plot(f: Any, hr: Any) -> Any:
    p = f.plot
    title = f"{f.name}{' (drifted)' if f.drifted else ''}"
    if "edges" in p:
        return hr.histogram(p["edges"], [("reference", p["reference"]), ("current", p["current"])], title=title,
                            x_label=f"{f.name} (reference quantile bins)", kind="drift-histogram")
    if "categories" in p:
        labels = [f"{c} ({side})" for c in p["categories"] for side in ("ref", "cur")]
        values = [v for pair in zip(p["reference"], p["current"]) for v in pair]
        return hr.bar_chart(labels, values, title=title, value_label="share of rows",
                            highlight=[side == "cur" for _ in p["categories"] for side in ("ref", "cur")], kind="drift-categories")
    return None


def _multivariate(page: Any, mv: Any, hr: Any) -> None:
    if not mv:
        return
    page.heading("Multivariate: domain classifier")
    if not mv.get("ran"):
        page.text(mv.get("note") or "not run")
        return
    page.kv({"AUC (0.5 = indistinguishable)": mv["auc"], "permutation p-value": mv["p_value"],
             "permutations": mv["permutations"], "rows (reference, current)": f"{mv['rows_reference']}, {mv['rows_current']}",
             "drifted": mv["drifted"]})
    if mv.get("separating_features"):
        page.table(mv["separating_features"], ["feature", "auc_drop"], caption="features that separate the samples")


def _model(page: Any, m: Any) -> None:
    if not m:
        return
    page.heading("Model")
    page.kv({"task": m["task"], "target": m["target"], "outputs": m["outputs"], "rows": m["rows"]})
    metrics = m.get("metrics") or {}
    if metrics.get("current"):
        page.table([{"metric": k, "current": v, f"bundle ({metrics['reference_on']})": metrics["reference"].get(k),
                     "change": metrics["change"].get(k)} for k, v in metrics["current"].items()],
                   caption="metrics on the current labels")
    if m.get("estimate"):
        e = m["estimate"]
        page.kv({**{f"estimated {k}": v for k, v in e["estimated"].items()}, "reliable": e["reliable"],
                 "calibration": e["calibration"]}, caption=e["method"])
