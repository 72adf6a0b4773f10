"""Small seeded raw tables for the features tests: every column type, missing values in each."""

from __future__ import annotations

import numpy as np
import pandas as pd


def raw_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """A raw train-like table with a binary target ``y`` that depends on ``num`` and ``cat``."""
    rng = np.random.default_rng(seed)
    num = rng.normal(50, 10, n)
    num[rng.random(n) < 0.1] = np.nan
    cat = rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.2, 0.1]).astype(object)
    cat[rng.random(n) < 0.004] = "rare"
    cat[rng.random(n) < 0.05] = None
    flag = pd.array(rng.random(n) < 0.5, dtype="boolean")
    flag[rng.random(n) < 0.05] = pd.NA
    when = pd.Series(pd.to_datetime("1965-03-01") + pd.to_timedelta(rng.integers(0, 60 * 365 * 86400, n), unit="s"))
    when[rng.random(n) < 0.05] = pd.NaT
    score = np.nan_to_num(num - 50) / 10 + (cat == "a") * 1.0 + rng.normal(0, 1, n)
    return pd.DataFrame({
        "cust_id": [f"C{i:05d}" for i in range(n)],
        "num": num,
        "skewed": rng.lognormal(3, 1.2, n),
        "count": rng.integers(0, 9, n),
        "flag": flag,
        "cat": cat,
        "city": rng.choice([f"city{i:02d}" for i in range(60)], n),
        "when": when,
        "day": [d.date() for d in pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 700, n), unit="D")],
        "const": "same",
        "empty": np.full(n, np.nan),
        "y": score > np.median(score),
    })


def unseen_frame(n: int = 60, seed: int = 1) -> pd.DataFrame:
    """Rows the featurizer never saw: unseen categories, missing values in every column, inf, 1e300."""
    df = raw_frame(n, seed)
    df.loc[0:9, "cat"] = "never-seen"
    df.loc[5:14, "city"] = "atlantis"
    df.loc[10:19, ["num", "skewed"]] = np.nan
    df.loc[20, "num"] = np.inf
    df.loc[21, "num"] = -np.inf
    df.loc[22, "skewed"] = 1e300
    df.loc[23, "skewed"] = -5.0
    df.loc[24:29, "flag"] = pd.NA
    df.loc[24:29, "cat"] = None
    df.loc[30:34, "when"] = pd.NaT
    df.loc[35, "when"] = pd.Timestamp("1901-12-31 23:59:59")
    df.loc[36:38, "day"] = None
    return df
