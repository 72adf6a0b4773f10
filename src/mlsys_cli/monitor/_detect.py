"""The work behind :func:`mlsys_cli.monitor.drift.detect`: choose the columns, count, test, decide."""

from __future__ import annotations

import dataclasses

import datetime as _dt
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.monitor import stats
from mlsys_cli.monitor.results import DriftOptions, DriftReport, FeatureDrift, WindowDrift
from mlsys_cli.monitor.reference import Reference
from mlsys_cli.monitor.scan import META_PREFIX, Cells, Counts, Source

# Types that compare with each other (a bool column is numeric 0/1 on both sides).
_FAMILY = {"float": "number", "bool": "number", "datetime": "datetime", "string": "string", "time": "time"}
# A string column with at least this share of distinct values (and 100 of them) is an identifier.
_ID_SHARE = 0.5
PLOT_BINS = 20


def read_manifest(path: Any) -> dict[str, Any]:
    """The model bundle's manifest (the one adapter to switch to ``models.manifest`` later)."""
    from mlsys_cli.bundle import BundleReader

    manifest = BundleReader(path, kind="model").manifest
    return manifest


@dataclass(frozen=True)
class _Plan:
    """Which columns are compared, and what was left out and why."""

    features: tuple[str, ...]
    label: str | None
    schema_changes: tuple[dict[str, Any], ...]
    skipped: tuple[dict[str, Any], ...]


def _plan(ref_types: Mapping[str, str | None], cur_types: Mapping[str, str | None], options: DriftOptions,
          target: str | None, ref: Reference | None) -> _Plan:
    wanted = list(options.columns) if options.columns is not None else list(ref_types)
    for c in options.columns or ():
        if c not in ref_types and c not in cur_types:
            raise InputError(f"no column {c!r} in the reference or the current data")
    for c in options.exclude:  # a misspelt exclusion left the column in, silently
        if c not in ref_types and c not in cur_types:
            raise InputError(f"no column {c!r} to exclude in the reference or the current data",
                             f"columns: {_names({**ref_types, **cur_types})}")
    leave = set(options.exclude) | {options.time_col}
    changes: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    features: list[str] = []
    for c in wanted:
        if c in leave or c == target or c.startswith(META_PREFIX):
            continue
        rt, ct = ref_types.get(c), cur_types.get(c)
        if c not in cur_types:
            changes.append({"column": c, "change": "missing in current", "reference": rt, "current": None})
        elif c not in ref_types:
            changes.append({"column": c, "change": "missing in reference", "reference": None, "current": ct})
        elif rt is None or ct is None:
            skipped.append({"column": c, "reason": "type drift cannot compare"})
        elif _FAMILY[rt] != _FAMILY[ct]:
            changes.append({"column": c, "change": "type changed", "reference": rt, "current": ct})
        elif ref is not None and _id_like(ref.profiles.get(c) or {}):
            p = ref.profiles[c]
            skipped.append({"column": c, "reason": f"id-like: {p['n_unique']:,} distinct values in {p['count']:,} rows"})
        else:
            features.append(c)
    # A model's reference holds the columns it reads; the others (an id it left out, a column added
    # since) cannot change what it predicts, so they are no schema change of the model's input.
    reads_only = ref is not None and ref.kind == "model"
    for c in cur_types:
        if (c not in ref_types and not c.startswith(META_PREFIX) and c not in leave and c != target
                and options.columns is None and not reads_only):
            changes.append({"column": c, "change": "new in current", "reference": None, "current": cur_types[c]})
    if not features:
        shared = sorted(set(ref_types) & set(cur_types))
        if not shared:
            raise InputError(f"the reference and the current data share no column (reference: {_names(ref_types)}; "
                             f"current: {_names(cur_types)})", "compare tables of the same kind")
        raise InputError("no column left to compare: " + "; ".join(
            f"{d['column']}: {d.get('reason') or d.get('change')}" for d in (skipped + changes)[:5]))
    label = target if target and target in cur_types else None
    return _Plan(tuple(features), label, tuple(changes), tuple(skipped))


def _names(types: Mapping[str, Any]) -> str:
    names = [c for c in types if not c.startswith(META_PREFIX)]
    return ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")


def _id_like(prof: Mapping[str, Any]) -> bool:
    """An identifier or a category list too long to keep: every value is (nearly) new, nothing to compare."""
    n_unique, count = int(prof.get("n_unique") or 0), int(prof.get("count") or 0) - int(prof.get("nulls") or 0)
    kept = len((prof.get("sketch") or {}).get("counts") or {})
    return prof.get("kind") == "categorical" and n_unique >= 100 and (n_unique >= _ID_SHARE * max(count, 1) or n_unique > kept)


@dataclass
class _Test:
    """One feature's statistics before the multiple-testing correction."""

    name: str
    kind: str
    test: str
    n_ref: int
    n_cur: int
    statistic: float | None
    p: float | None
    effect: dict[str, float | None]
    miss_ref: float | None
    miss_cur: float | None
    miss_p: float | None
    note: str | None
    plot: dict[str, Any]


def _judge(name: str, cells: Cells, ref: Any, cur: Any, complete: bool, prof: Mapping[str, Any],
           cur_tails: Sequence[float], options: DriftOptions, unseen: Mapping[str, int] | None = None) -> _Test:
    """The tests of one column from its reference and current counts (missing count last)."""
    r, c = ref[:-1], cur[:-1]
    n_ref, n_cur = int(r.sum()), int(c.sum())
    total_ref, total_cur = n_ref + int(ref[-1]), n_cur + int(cur[-1])
    miss_ref = ref[-1] / total_ref if total_ref else None
    miss_cur = cur[-1] / total_cur if total_cur else None
    miss_p = stats.two_proportions(int(ref[-1]), total_ref, int(cur[-1]), total_cur) if total_ref and total_cur else None
    base = dict(name=name, kind="numeric" if cells.numeric else "categorical", test="ks" if cells.numeric else "chi2",
                n_ref=n_ref, n_cur=n_cur, miss_ref=miss_ref, miss_cur=miss_cur, miss_p=miss_p)
    few = min(n_ref, n_cur) < options.min_rows
    if few:
        side = "reference" if n_ref < options.min_rows else "current"
        note = (f"all values missing in the {side}" if min(n_ref, n_cur) == 0 else
                f"{min(n_ref, n_cur)} non-missing {side} rows (fewer than --min-rows {options.min_rows}): too few to decide")
        return _Test(**base, statistic=None, p=None, effect={}, note=note, plot={})
    if cells.numeric:
        d, p = stats.ks_binned(r, c)
        std = prof.get("std") or 0.0
        scale = std if std > 0 else (abs(prof.get("mean") or 0.0) or 1.0)
        # Profiles from before the tails were stored: compare inside the edges only.
        ref_tails = (prof.get("sketch") or {}).get("tails")
        tails = (ref_tails, cur_tails) if ref_tails else ([0.0, 0.0], [0.0, 0.0])
        sr, sc = cells.sketch_counts(ref)[:-1], cells.sketch_counts(cur)[:-1]
        effect = {"wasserstein": stats.wasserstein_binned(cells.sketch_edges, sr, sc, *tails) / scale,
                  "psi": stats.psi(stats.coarse(r), stats.coarse(c))}
        note = "constant in the reference (Wasserstein scaled by |mean|)" if std == 0 else None
        return _Test(**base, statistic=d, p=p, effect=effect, note=note, plot=_numeric_plot(cells, r, c))
    stat, p = stats.chi2_counts(r, c)
    share = float(c[-1] / n_cur) if complete else None
    effect = {"jensen_shannon": stats.jensen_shannon(r, c), "psi": stats.psi(r, c), "unseen_share": share}
    note = None if complete else "the reference lists its most frequent categories only: unseen share unknown"
    if complete and unseen:
        top = sorted(unseen.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        note = "unseen: " + ", ".join(f"{k!r} ({v:,} rows)" for k, v in top) + (f" and {len(unseen) - 3:,} more" if len(unseen) > 3 else "")
    return _Test(**base, statistic=stat, p=p, effect=effect, note=note, plot=_category_plot(cells, r, c))


def _numeric_plot(cells: Cells, r: Any, c: Any) -> dict[str, Any]:
    """Reference and current shares over at most PLOT_BINS merged quantile bins (for the HTML report)."""
    edges = list(cells.edges)
    if len(edges) < 2:
        return {}
    groups = min(PLOT_BINS, len(edges) - 1)
    import numpy as np

    cuts = np.linspace(0, len(edges) - 1, groups + 1).round().astype(int)
    inner_r, inner_c = r[1:len(edges)], c[1:len(edges)]
    return {"edges": [edges[i] for i in cuts],
            "reference": [float(inner_r[a:b].sum()) for a, b in zip(cuts[:-1], cuts[1:])],
            "current": [float(inner_c[a:b].sum()) for a, b in zip(cuts[:-1], cuts[1:])],
            "outside": {"reference": float(r[0] + r[-1]), "current": float(c[0] + c[-1])}}


def _category_plot(cells: Cells, r: Any, c: Any) -> dict[str, Any]:
    names = [*cells.categories, "(unseen or other)"]
    order = sorted(range(len(names)), key=lambda i: -(r[i] / max(r.sum(), 1) + c[i] / max(c.sum(), 1)))[:12]
    return {"categories": [names[i] for i in order], "reference": [float(r[i] / max(r.sum(), 1)) for i in order],
            "current": [float(c[i] / max(c.sum(), 1)) for i in order]}


def _decide(tests: Sequence[_Test], options: DriftOptions, importance: Mapping[str, float]) -> list[FeatureDrift]:
    """Benjamini–Hochberg across every test of every column, then the effect-size rule."""
    ps: list[float] = []
    for t in tests:
        ps.extend(p for p in (t.p, t.miss_p) if p is not None)
    qs = iter(stats.benjamini_hochberg(ps))
    out = []
    for t in tests:
        q = next(qs) if t.p is not None else None
        mq = next(qs) if t.miss_p is not None else None
        reasons = []
        if q is not None and q <= options.alpha:
            reasons.extend(_effect_reasons(t, options))
        if mq is not None and mq <= options.alpha and abs(t.miss_cur - t.miss_ref) >= options.missing_rate:
            reasons.append(f"missing rate {t.miss_ref:.3f} -> {t.miss_cur:.3f}")
        out.append(FeatureDrift(
            name=t.name, kind=t.kind, test=t.test, rows_reference=t.n_ref, rows_current=t.n_cur,
            statistic=t.statistic, p_value=t.p, q_value=q, effect=t.effect, missing_reference=t.miss_ref,
            missing_current=t.miss_cur, missing_q_value=mq, drifted=bool(reasons), reasons=tuple(reasons),
            decided=t.p is not None, importance=importance.get(t.name.split(":", 1)[-1]), note=t.note, plot=t.plot))
    return out


def _effect_reasons(t: _Test, options: DriftOptions) -> list[str]:
    limits = {"wasserstein": options.wasserstein, "psi": options.psi, "jensen_shannon": options.jensen_shannon,
              "unseen_share": options.unseen_share}
    return [f"{k} {v:.3g} >= {limits[k]:g}" for k, v in t.effect.items() if v is not None and v >= limits[k]]


def _rank(features: Sequence[FeatureDrift]) -> tuple[FeatureDrift, ...]:
    """Drifted first; within each group by model importance, then by effect size."""
    def key(f: FeatureDrift) -> tuple:
        size = max((v for v in f.effect.values() if v is not None), default=0.0)
        return (not f.drifted, -(f.importance or 0.0), -size, f.name)

    return tuple(sorted(features, key=key))


def _count(source: Source, cells: Sequence[Cells], options: DriftOptions,
           sample: tuple[Sequence[str], int] | None = None) -> tuple[dict[str, Counts], int, Any]:
    """Count every column of ``source`` in its cells (and per window), one pass over the batches.

    ``sample`` (columns, rows) also draws the seeded row sample of the domain classifier in the
    same pass, rather than reading the current data twice.
    """
    from mlsys_cli.monitor.scan import Sampler, parse_window, window_ids

    seconds = parse_window(options.window) if options.window else None
    if options.time_col and options.time_col not in source.columns:
        raise InputError(f"no time column {options.time_col!r} in {source.name}")
    counts = {c.name: Counts(c) for c in cells}
    columns = [c.name for c in cells] + ([options.time_col] if seconds else [])
    sampler = Sampler(source.count_rows(), sample[1], options.seed + 1) if sample else None
    rows = 0
    with ThreadPoolExecutor(max_workers=2) as pool:
        strings = [c.name for c in cells if not c.numeric and c.name != options.time_col]
        for batch in source.batches(list(dict.fromkeys(columns)), dictionary=strings):
            rows += batch.num_rows
            wins = window_ids(batch.column(options.time_col), seconds, options.time_col) if seconds else None
            list(pool.map(lambda c: counts[c.name].add(batch.column(c.name), wins), cells))
            if sampler is not None:
                sampler.take(batch, sample[0])
    drawn = sampler.table([source.schema.field(c) for c in sample[0]]) if sampler is not None else None
    return counts, rows, drawn


def _window_label(w: int, seconds: int) -> tuple[str, str]:
    start = _dt.datetime.fromtimestamp(w * seconds, _dt.timezone.utc)
    end = start + _dt.timedelta(seconds=seconds)
    fmt = "%Y-%m-%d" if seconds % 86400 == 0 else "%Y-%m-%dT%H:%M:%SZ"
    return start.strftime(fmt), end.strftime(fmt)


def _windows(counts: Mapping[str, Counts], refs: Mapping[str, tuple], ref: Reference, options: DriftOptions,
             importance: Mapping[str, float]) -> tuple[WindowDrift, ...]:
    from mlsys_cli.monitor.scan import parse_window

    seconds = parse_window(options.window)
    ids = sorted({w for c in counts.values() for w in c.windows})
    if not ids:
        return ()
    out = []
    for w in range(ids[0], ids[-1] + 1):
        start, end = _window_label(w, seconds)
        present = {n: c.windows[w] for n, c in counts.items() if w in c.windows}
        rows = int(next(iter(present.values())).sum()) if present else 0
        if rows == 0:
            out.append(WindowDrift(start, end, 0, None, (), "no rows"))
            continue
        tests = [_judge(n, counts[n].cells, refs[n][0], present[n], refs[n][1], ref.profiles[n],
                        counts[n].tail_means(w), options) for n in present]
        decided = _decide(tests, options, importance)
        if not any(f.decided for f in decided):
            out.append(WindowDrift(start, end, rows, None, (), f"too few rows to decide (--min-rows {options.min_rows})"))
            continue
        drifted = tuple(f.name for f in _rank(decided) if f.drifted)
        out.append(WindowDrift(start, end, rows, bool(drifted), drifted))
    return tuple(out)


def _load_reference(reference: Any, profile: Any, manifest: Mapping[str, Any] | None, model: Any,
                    cur_types: Mapping[str, str | None], options: DriftOptions, target: str | None) -> Reference:
    from mlsys_cli.monitor import reference as refmod

    if profile is not None:
        return refmod.read_profile(profile)
    if reference is None:
        return refmod.from_model(manifest, str(model))
    ref_types = refmod.table_columns(reference)
    wanted = [c for c in (options.columns or ref_types) if c in ref_types and ref_types[c] is not None
              and c in cur_types and not c.startswith(META_PREFIX) and c != options.time_col]
    if target and target in ref_types and target not in wanted:
        wanted.append(target)
    if not wanted:
        return Reference("table", str(reference), 0, {c: {"type": t} for c, t in ref_types.items()})
    sample = options.domain_rows if options.domain_classifier else 0
    return refmod.from_table(reference, wanted, sample, options.seed)


def _ref_types(ref: Reference, reference: Any) -> dict[str, str | None]:
    if ref.kind == "table":
        from mlsys_cli.monitor.reference import table_columns

        return table_columns(reference)
    return {c: p.get("type") or ("string" if p.get("kind") == "categorical" else "float") for c, p in ref.profiles.items()}


def run(current: Any, *, reference: Any, model: Any, profile: Any, options: DriftOptions,
        engine: Any = None) -> DriftReport:
    """See :func:`mlsys_cli.monitor.drift.detect`."""
    from mlsys_cli.monitor.scan import batch_memory

    _prefetch(["pandas", "scipy.special"])
    with batch_memory():
        return _run(current, reference=reference, model=model, profile=profile, options=options, engine=engine)


def _run(current: Any, *, reference: Any, model: Any, profile: Any, options: DriftOptions,
         engine: Any = None) -> DriftReport:
    from mlsys_cli.monitor.reference import reference_cells

    start = time.perf_counter()
    manifest = read_manifest(model) if model is not None else None
    target = options.target or (manifest or {}).get("target")
    source = Source(current, options.include_shadow)
    cur_types = source.types()
    ref = _load_reference(reference, profile, manifest, model, cur_types, options, target)
    plan = _plan(_ref_types(ref, reference), cur_types, options, target, ref)
    if ref.rows < options.min_rows:
        raise InputError(f"the reference has {ref.rows} rows: too few to decide (at least --min-rows {options.min_rows})",
                         "give a larger reference, or lower --min-rows knowingly")
    refs = {n: reference_cells(n, ref.profiles[n])[1:] for n in plan.features}
    cells = [reference_cells(n, ref.profiles[n])[0] for n in plan.features]
    label_ref = _label_reference(plan.label, ref, manifest)
    if label_ref is not None and label_ref[0].numeric and _FAMILY.get(cur_types.get(plan.label)) != "number":
        # Labels of another kind than the model's (strings for a bool target): a schema change, not a shift.
        change = {"column": plan.label, "change": "type changed", "reference": "number", "current": cur_types.get(plan.label)}
        plan, label_ref = dataclasses.replace(plan, label=None, schema_changes=(*plan.schema_changes, change)), None
    if label_ref is not None:
        cells.append(label_ref[0])
    wanted = _sample_columns(ref, plan, options)
    from mlsys_cli.monitor.dask_scan import counter

    counts, rows, cur_sample = counter(engine, _count)(source, cells, options, (wanted, options.domain_rows) if wanted else None)
    if rows == 0:
        raise InputError(f"{source.name}: no rows to compare" + (" (all rows are shadow traffic)" if source.count_rows() < _all_rows(source) else ""))
    importance = _importance(manifest, [*plan.features])
    tests = [_judge(n, counts[n].cells, refs[n][0], counts[n].total, refs[n][1], ref.profiles[n],
                    counts[n].tail_means(), options, counts[n].unseen) for n in plan.features]
    model_part = None
    if label_ref is not None:
        c = counts[label_ref[0].name]
        tests.append(_judge(f"label:{plan.label}", c.cells, label_ref[1], c.total, True, label_ref[2], c.tail_means(), options))
    if manifest is not None:
        from mlsys_cli.monitor.model_checks import model_checks

        model_part, output_tests = model_checks(model, manifest, source, plan.label, options, _judge, engine)
        tests.extend(output_tests)
    samples = (ref.sample.select(wanted), cur_sample) if wanted else None
    if options.backend == "alibi":
        tests = _alibi_pvalues(tests, samples, cur_types, plan)
    features = _rank(_decide(tests, options, importance))
    if not any(f.decided for f in features):
        raise InputError("too few rows to decide on any column: " + "; ".join(f"{f.name}: {f.note}" for f in features[:3]))
    multivariate = _multivariate(ref, samples, options, cur_types)
    windows = _windows({n: counts[n] for n in plan.features}, refs, ref, options, importance) if options.window else ()
    detected = any(f.drifted for f in features) or bool(multivariate and multivariate.get("drifted"))
    return DriftReport(
        drift_detected=detected, reference=ref.describe(), current=_current(source, rows),
        features=features, multivariate=multivariate, model=model_part, windows=windows,
        schema_changes=plan.schema_changes, skipped=plan.skipped, options=options,
        seconds=round(time.perf_counter() - start, 3), importance_total=sum(importance.values()) or None)


def _current(source: Source, rows: int) -> dict[str, Any]:
    """The report's ``current``: a serve log's also says which model versions and roles answered."""
    served = source.served_by()
    return {"source": source.name, "rows": rows, **({"served_by": served} if served else {})}


def _prefetch(modules: Sequence[str]) -> None:
    """Import ``modules`` in a daemon thread while the data is read.

    Their imports are CPU the run needs later: pandas (pyarrow imports it on the first
    ``pyarrow.array``, 0.8 s) and scipy.special (0.5 s). The reading and counting release the
    GIL, so on two cores these run beside them; a later ``import`` of one of them waits for this
    one to finish (Python's per-module import lock). The domain classifier imports nothing more
    (:mod:`mlsys_cli.monitor.boost`).
    """
    import importlib
    import threading

    def load() -> None:
        # A warm-up only: whatever goes wrong here (an import racing the main thread's import of
        # a module it depends on) is left for the main thread's own import to meet and report.
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception:  # noqa: BLE001, S112 - see above
                continue

    threading.Thread(target=load, name="mlsys drift imports", daemon=True).start()


def _all_rows(source: Source) -> int:
    return Source(source.files, include_shadow=True).count_rows()


def _label_reference(label: str | None, ref: Reference, manifest: Mapping[str, Any] | None) -> tuple | None:
    """Cells, counts and profile of the training labels, from the reference table or the bundle."""
    from mlsys_cli.monitor.reference import reference_cells

    if label is None:
        return None
    prof = ref.profiles.get(label) or ((manifest or {}).get("reference") or {}).get("target")
    if not prof:
        return None
    cells, counts, _ = reference_cells(label, prof)
    return cells, counts, prof


def _importance(manifest: Mapping[str, Any] | None, features: Sequence[str]) -> dict[str, float]:
    """The model's importance of each input column: the sum over the model features it became.

    Model features are named after their input column (``age``, ``contract=month-to-month``,
    ``city__te``); each goes to the longest input column name it starts with.
    """
    if not manifest:
        return {}
    inputs = sorted({c["name"] for c in manifest.get("input_schema") or []} | set(features), key=len, reverse=True)
    out: dict[str, float] = {}
    for item in manifest.get("importance") or []:
        name = str(item.get("feature"))
        owner = next((c for c in inputs if name == c or name.startswith((c + "=", c + "__", c + "_"))), None)
        if owner is not None and isinstance(item.get("importance"), (int, float)) and math.isfinite(item["importance"]):
            out[owner] = out.get(owner, 0.0) + float(item["importance"])
    return out


def _sample_columns(ref: Reference, plan: _Plan, options: DriftOptions) -> list[str]:
    """The columns of the row samples (domain classifier, alibi), empty when there are no reference rows."""
    if not (options.domain_classifier or options.backend == "alibi") or ref.sample is None or ref.sample.num_rows == 0:
        return []
    return [c for c in plan.features if c in ref.sample.column_names]


def _alibi_pvalues(tests: list[_Test], samples: tuple[Any, Any] | None, cur_types: Mapping[str, str | None],
                   plan: _Plan) -> list[_Test]:
    """Per-feature p-values from alibi-detect's TabularDrift (same decision rule afterwards)."""
    from dataclasses import replace

    from mlsys_cli.monitor.alibi_backend import feature_pvalues

    ps = feature_pvalues(samples[0] if samples else None, samples[1] if samples else None, cur_types, plan.features)
    return [replace(t, p=ps[t.name], test=f"alibi-{t.test}") if t.name in ps and t.p is not None else t for t in tests]


def _multivariate(ref: Reference, samples: tuple[Any, Any] | None, options: DriftOptions,
                  cur_types: Mapping[str, str | None]) -> dict[str, Any] | None:
    if not options.domain_classifier:
        return None
    if samples is None:
        return {"test": "domain_classifier", "ran": False, "drifted": False,
                "note": f"the {ref.kind} reference holds no rows: give --reference TABLE or a --profile saved with rows"}
    if options.backend == "alibi":
        from mlsys_cli.monitor.alibi_backend import multivariate

        return multivariate(samples[0], samples[1], cur_types, options)
    from mlsys_cli.monitor.domain import domain_classifier

    return domain_classifier(samples[0], samples[1], cur_types, options)


def check_backend(options: DriftOptions) -> None:
    """Fail early (exit 2) when the alibi backend is asked for but not installed."""
    if options.backend == "alibi":
        try:
            import alibi_detect  # noqa: F401
        except ImportError:
            raise UsageError("--backend alibi needs alibi-detect", "pip install 'mlsys[alibi]' (in its own venv: it pins numpy<2)") from None
