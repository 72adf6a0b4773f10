"""``mlsys featurize``: fit a Featurizer on train and write a features bundle, or apply one.

Fitting reads only the train table. Held-out tables given with ``check`` are read after the fit,
through the fitted schema only, to compare their missing rates with train's: nothing in them
can reach a fitted statistic.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from mlsys_cli.data.io import LINEAGE_KEY, lineage_metadata
from mlsys_cli.errors import InputError, UsageError

BATCH_ROWS = 65_536


@dataclass(frozen=True)
class FeaturizeResult:
    """What ``featurize`` fitted and wrote."""

    output: str
    target: str | None
    task: str | None
    preset: str
    rows: int
    n_features: int
    columns: list[dict[str, Any]]
    features: list[str]
    leakage: list[dict[str, Any]]
    checks: list[dict[str, Any]] = field(default_factory=list)
    out_of_range: dict[str, int] = field(default_factory=dict)
    rows_missing_target: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "features", **asdict(self)}


@dataclass(frozen=True)
class ApplyResult:
    """What ``featurize --apply`` wrote."""

    output: str
    bundle: str
    rows: int
    n_features: int
    target: str | None
    batches: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "table", **asdict(self)}


def _reference(df: Any, input_schema: list[dict[str, Any]]) -> dict[str, Any] | None:
    try:
        from mlsys_cli.data.profile import profile_frame
    except ImportError:  # data/profile.py is optional in this build
        return None
    return profile_frame(df, input_schema)


def _check(fz: Any, paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    from mlsys_cli.data.io import read_frame
    from mlsys_cli.features.leakage import missing_shift
    from mlsys_cli.features.schema import canonicalize

    findings = []
    train_missing = {name: role["missing"] for name, role in fz.roles_.items()}
    for path in paths:
        canon = canonicalize(read_frame(path, [c["name"] for c in fz.input_schema_]), fz.input_schema_)
        data = {c: canon[c].to_numpy() for c in canon.columns}
        findings.extend(missing_shift(train_missing, data, fz.input_schema_, str(path)))
    return findings


def featurize(
    train: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    target: str | None,
    check: Sequence[str | os.PathLike] = (),
    progress: Any = None,
    read: Callable[[list[Any]], Any] | None = None,
    **params: Any,
) -> FeaturizeResult:
    """Fit a Featurizer on the train table(s) and write a features bundle.

    Parameters
    ----------
    train : list of paths
        The train table (files, globs or directories of one table).
    output : path
        The ``.mlsys`` features bundle to write (atomically).
    target : str, optional
        The target column.
    check : list of paths
        Held-out tables compared with train after the fit (missing-value shift).
    progress : optional
        ``update(description=)``.
    read : callable, optional
        ``read(files) -> table`` instead of ``read_frame`` (``dask_featurize.read_train``: a ColumnTable,
        the files read on a Dask cluster; the fit, and so the featurizer, is the local one).
    **params
        Featurizer parameters.
    """
    from mlsys_cli.data.io import input_record, invocation, read_frame, resolve_inputs
    from mlsys_cli.features.bundle import write_features_bundle
    from mlsys_cli.features.pipeline import Featurizer
    from mlsys_cli.features.schema import out_of_range

    files = resolve_inputs(train)
    if progress:
        progress.update(description="reading train")
    df = (read or read_frame)(files)
    fz = Featurizer(target=target, **params)
    if progress:
        progress.update(description="fitting features")
    fz.fit(df)
    checks = _check(fz, check) if check else []
    ranges = out_of_range(df, fz.input_schema_)
    extra = {"data": [input_record(f) for f in files], "command": invocation(),
             "seed": fz.seed, "checks": checks, "out_of_range": ranges}
    reference = _reference(df, fz.input_schema_)
    if reference is not None:
        extra["reference"] = reference
    write_features_bundle(fz, output, extra)
    columns = [{"name": name, **role} for name, role in fz.roles_.items()]
    return FeaturizeResult(
        output=str(output), target=target, task=fz.task_, preset=fz.preset_, rows=fz.report_["rows"],
        n_features=fz.n_features_out_, columns=columns, features=fz.get_feature_names_out(),
        leakage=fz.report_["leakage"], checks=checks, out_of_range=ranges, rows_missing_target=fz.n_missing_target_,
        warnings=list(fz.report_.get("warnings", [])),
    )


def apply(
    bundle: str | os.PathLike,
    data: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    target: str | None = None,
    batch_rows: int = BATCH_ROWS,
    progress: Any = None,
) -> ApplyResult:
    """Transform a table with a features bundle, streaming in batches (bounded memory).

    The output holds the feature columns (float32: every feature value is float32-representable)
    and the target column when the input has it. ``features.dask_featurize.apply_dask`` is the
    same on a Dask cluster.
    """
    import pyarrow.parquet as pq

    from mlsys_cli.data.io import quote_ident, relation_rows, resolve_inputs, scan_table
    from mlsys_cli.features.bundle import load_features_bundle
    from mlsys_cli.fsutil import atomic_path

    if batch_rows < 1:
        raise UsageError("batch size must be at least 1")
    fz, manifest = load_features_bundle(bundle, target)
    files = resolve_inputs(data)
    relation = scan_table(files)
    select, keep_target = apply_columns(fz, manifest, relation.columns)
    rows = relation_rows(relation)
    lineage = apply_lineage(bundle, manifest, files, rows, keep_target)
    reader = relation.select(*[quote_ident(c) for c in select]).to_arrow_reader(batch_rows)
    schema = feature_schema(fz, reader.schema, keep_target).with_metadata({LINEAGE_KEY: lineage_metadata(lineage, rows).encode()})
    if progress:
        progress.update(total=rows, description="featurizing")
    batches = 0
    with atomic_path(output, suffix=".parquet") as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for batch in reader:
                writer.write_table(feature_batch(fz, batch, schema, keep_target))
                batches += 1
                if progress:
                    progress.advance(batch.num_rows)
    return ApplyResult(output=str(output), bundle=str(bundle), rows=rows, n_features=fz.n_features_out_, target=keep_target,
                       batches=batches)


def apply_columns(fz: Any, manifest: dict[str, Any], names: Sequence[str]) -> tuple[list[str], str | None]:
    """The input columns ``--apply`` reads (the fitted ones, then the target when present), and that target."""
    needed = [c["name"] for c in fz.input_schema_]
    missing = [c for c in needed if c not in names]
    if missing:
        raise InputError(f"column {missing[0]!r} is missing from the input",
                         "the features were fitted on: " + ", ".join(needed))
    fitted_target = manifest.get("target")
    keep_target = fitted_target if fitted_target and fitted_target in names else None
    return needed + ([keep_target] if keep_target and keep_target not in needed else []), keep_target


def apply_lineage(bundle: str | os.PathLike, manifest: dict[str, Any], files: Sequence[Any], rows: int,
                  keep_target: str | None) -> Any:
    """The lineage of a feature table: every input file and the features bundle, fingerprinted."""
    from mlsys_cli.data.io import Lineage, input_record

    return Lineage(command="featurize", inputs=[input_record(f) for f in files] + [input_record(bundle, with_parent=False)],
                   rows=rows, seed=manifest.get("seed"), target=keep_target)


def feature_schema(fz: Any, input_schema: Any, keep_target: str | None) -> Any:
    """The Arrow schema of a feature table: float32 features, then the target as the input types it."""
    import pyarrow as pa

    fields = [pa.field(n, pa.float32()) for n in fz.get_feature_names_out()]
    if keep_target:
        fields.append(input_schema.field(keep_target))
    return pa.schema(fields)


def feature_batch(fz: Any, batch: Any, schema: Any, keep_target: str | None) -> Any:
    """One record batch of raw rows -> its feature table (``schema`` from :func:`feature_schema`)."""
    import pyarrow as pa

    X = fz.transform(batch.to_pandas())
    arrays = [pa.array(X[:, i], type=pa.float32()) for i in range(X.shape[1])]
    if keep_target:
        arrays.append(batch.column(keep_target))
    return pa.Table.from_arrays(arrays, schema=schema)
