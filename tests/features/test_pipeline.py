"""The Featurizer: roles, presets, encodings, fit on train only, unseen values, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlsys_cli.bundle import BundleReader, BundleWriter
from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.features import Featurizer
from mlsys_cli.features.transformers import _calendar
from tests.features.frames import raw_frame, unseen_frame


@pytest.fixture(scope="module")
def train():
    return raw_frame(400)


def _col(fz, X, name):
    return X[:, fz.get_feature_names_out().index(name)]


def test_roles_are_inferred_and_non_features_dropped(train):
    fz = Featurizer(target="y").fit(train)
    roles = {k: v["role"] for k, v in fz.roles_.items()}
    assert roles == {"cust_id": "id", "num": "numeric", "skewed": "numeric", "count": "numeric", "flag": "boolean",
                     "cat": "categorical", "city": "categorical_high", "when": "datetime", "day": "datetime",
                     "const": "constant", "empty": "empty"}
    assert set(fz.report_["dropped"]) == {"cust_id", "const", "empty"}
    assert [c["name"] for c in fz.input_schema_] == ["num", "skewed", "count", "flag", "cat", "city", "when", "day"]
    assert fz.task_ == "binary" and fz.classes_ == [False, True]


def test_overrides(train):
    fz = Featurizer(target="y", categorical=["count"], drop=["skewed"], ids=["city"], numeric=None).fit(train)
    assert fz.roles_["count"]["role"] == "categorical" and fz.roles_["count"]["type"] == "string"
    assert fz.roles_["skewed"]["role"] == "dropped" and fz.roles_["city"]["role"] == "id"
    assert "count=3" in fz.get_feature_names_out()


def test_trees_preset_keeps_nan_and_raw_scale(train):
    fz = Featurizer(target="y", preset="trees").fit(train)
    X = fz.transform(train)
    num = _col(fz, X, "num")
    assert np.isnan(num).sum() == train["num"].isna().sum()
    np.testing.assert_array_equal(num[~np.isnan(num)], train["num"].dropna().to_numpy().astype(np.float32))
    assert "num__missing" not in fz.get_feature_names_out()


def test_linear_preset_imputes_scales_and_logs(train):
    fz = Featurizer(target="y", preset="linear").fit(train)
    X = fz.transform(train)
    assert not np.isnan(X).any()
    assert abs(_col(fz, X, "num").mean()) < 0.05
    skewed = next(b for b in fz.blocks_ if b.columns == ("skewed",))
    assert not skewed.log_  # linear keeps raw values unless --log is asked for
    mlp = Featurizer(target="y", preset="mlp").fit(train)
    assert next(b for b in mlp.blocks_ if b.columns == ("skewed",)).log_
    assert not next(b for b in mlp.blocks_ if b.columns == ("num",)).log_
    assert next(b for b in Featurizer(target="y", preset="linear", log=True).fit(train).blocks_
                if b.columns == ("skewed",)).log_
    np.testing.assert_array_equal(_col(fz, X, "num__missing"), train["num"].isna().to_numpy(dtype=float))
    assert {"cat=a", "cat=__other__", "city__te"} <= set(fz.get_feature_names_out())


def test_auto_preset_follows_family():
    assert Featurizer(family="linear").fit(raw_frame(100)).preset_ == "linear"
    assert Featurizer(family="xgboost").fit(raw_frame(100)).preset_ == "trees"


def test_statistics_come_from_train_only(train):
    fz = Featurizer(target="y", preset="linear").fit(train)
    shifted = raw_frame(300, seed=7)
    shifted["num"] = shifted["num"] + 1000
    before = fz.transform(train)
    fz.transform(shifted)
    np.testing.assert_array_equal(fz.transform(train), before)
    block = next(b for b in fz.blocks_ if b.columns == ("num",))
    assert block.scaling_["center"] == pytest.approx(np.nanmean(train["num"].to_numpy(dtype=np.float32).astype(float)))


def test_unseen_and_missing_values_never_fail(train):
    unseen = unseen_frame()
    for kw in ({"preset": "linear"}, {"preset": "trees"}, {"high_cardinality": "hashing"}, {"high_cardinality": "ordinal"}):
        fz = Featurizer(target="y", **kw).fit(train)
        X = fz.transform(unseen)
        assert X.shape == (len(unseen), fz.n_features_out_)
        assert np.isfinite(X[~np.isnan(X)]).all()
    fz = Featurizer(target="y", preset="linear").fit(train)
    X = fz.transform(unseen)
    names = fz.get_feature_names_out()
    cat_cols = [i for i, n in enumerate(names) if n.startswith("cat=")]
    assert X[0, cat_cols].tolist() == [1.0 if names[i] == "cat=__other__" else 0.0 for i in cat_cols]
    y = train["y"].to_numpy(dtype=float)
    assert _col(fz, X, "city__te")[5] == pytest.approx(y.mean(), abs=1e-6)  # unseen city: the train target mean


def test_fit_transform_cross_fits_target_encoding(train):
    fz = Featurizer(target="y", seed=3)
    X_train = fz.fit_transform(train)
    X_full = fz.transform(train)
    te = fz.get_feature_names_out().index("city__te")
    assert not np.allclose(X_train[:, te], X_full[:, te])
    others = [i for i in range(X_full.shape[1]) if i != te]
    np.testing.assert_array_equal(X_train[:, others], X_full[:, others])


def test_deterministic_with_seed(train):
    a = Featurizer(target="y", seed=1).fit_transform(train)
    b = Featurizer(target="y", seed=1).fit_transform(train)
    c = Featurizer(target="y", seed=2).fit_transform(train)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c, equal_nan=True)


def test_output_is_float32_representable(train):
    X = Featurizer(target="y", preset="linear").fit(train).transform(train)
    np.testing.assert_array_equal(X, X.astype(np.float32).astype(np.float64))


def test_bins_edges_are_float32(train):
    fz = Featurizer(target="y", preset="linear", bins=4).fit(train)
    block = next(b for b in fz.blocks_ if b.columns == ("num",))
    np.testing.assert_array_equal(block.edges_, block.edges_.astype(np.float32))
    assert [n for n in fz.get_feature_names_out() if n.startswith("num__bin")] == [f"num__bin{i}" for i in range(4)]
    onehot = fz.transform(train)[:, [fz.get_feature_names_out().index(f"num__bin{i}") for i in range(4)]]
    assert (onehot.sum(axis=1) == 1).all()


def test_crosses(train):
    fz = Featurizer(target="y", preset="linear", cross=["cat,flag", "num,count"], categorical=["flag"]).fit(train)
    names = fz.get_feature_names_out()
    assert "num*count" in names and any(n.startswith("cat*flag") for n in names)
    with pytest.raises(UsageError, match="cross two categorical or two numeric"):
        Featurizer(target="y", cross=["cat,num"]).fit(train)
    with pytest.raises(InputError, match="no column 'nope'"):
        Featurizer(target="y", cross=["cat,nope"]).fit(train)


def test_calendar_parts_match_pandas():
    stamps = pd.to_datetime(["1969-12-31 23:59:59", "1900-03-01 05:00:00", "2000-02-29 13:45:00", "2024-12-31 23:00:00",
                             "1970-01-01 00:00:00", "2100-03-01 00:00:00"])
    seconds = (stamps - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    cal = _calendar(np.asarray(seconds, dtype=np.int64))
    for part, attr in (("year", "year"), ("month", "month"), ("day", "day"), ("dayofweek", "day_of_week"), ("hour", "hour")):
        np.testing.assert_array_equal(cal[part], getattr(stamps, attr).to_numpy(dtype=float))


@pytest.mark.parametrize("target, match", [("nope", "target column 'nope' is not in the table"), ("const", "has one class")])
def test_bad_targets(train, target, match):
    with pytest.raises(InputError, match=match):
        Featurizer(target=target).fit(train)


def test_regression_and_multiclass_targets(train):
    df = train.assign(amount=train["num"].fillna(0) * 3 + train["count"], tier=np.where(train["count"] > 5, "hi", np.where(train["count"] > 2, "mid", "lo")))
    reg = Featurizer(target="amount", drop=["y", "tier"], leakage="warn").fit(df)
    assert reg.task_ == "regression" and "city__te" in reg.get_feature_names_out()
    multi = Featurizer(target="tier", drop=["y", "amount", "count"]).fit(df)
    assert multi.task_ == "multiclass" and {"city__te_hi", "city__te_lo", "city__te_mid"} <= set(multi.get_feature_names_out())


def test_missing_target_rows_left_out(train):
    df = train.astype({"y": object})
    df.loc[:9, "y"] = None
    fz = Featurizer(target="y").fit(df)
    assert fz.report_["rows"] == len(df) - 10 and fz.n_missing_target_ == 10


def test_a_blank_text_target_is_left_out_like_a_null(train):
    """Parquet keeps an empty label as "" where a CSV reads null: neither is a class."""
    df = train.assign(y=np.where(train["y"], "yes", "no").astype(object))
    df.loc[:4, "y"] = ""
    df.loc[5:9, "y"] = " \t"
    fz = Featurizer(target="y").fit(df)
    assert fz.n_missing_target_ == 10 and fz.task_ == "binary" and list(fz.classes_) == ["no", "yes"]


def test_save_load_round_trip(train, tmp_path):
    fz = Featurizer(target="y", preset="linear", bins=3, cross=["cat,city"]).fit(train)
    writer = BundleWriter("model")
    fz.save(writer, prefix="m/features/")
    writer.write(tmp_path / "b.mlsys")
    loaded = Featurizer.load(BundleReader(tmp_path / "b.mlsys"), prefix="m/features/")
    np.testing.assert_array_equal(loaded.transform(unseen_frame()), fz.transform(unseen_frame()))
    assert loaded.get_feature_names_out() == fz.get_feature_names_out()


def test_transform_needs_the_fitted_columns(train):
    fz = Featurizer(target="y").fit(train)
    with pytest.raises(InputError, match="column 'cat' is missing"):
        fz.transform(train.drop(columns=["cat"]))
    bad = train.astype({"num": object})
    bad.loc[3, "num"] = "oops"
    with pytest.raises(InputError, match=r"column 'num': expected numeric values, found 'oops' \(row 3\)"):
        fz.transform(bad)


def _sklearn_encoder(encoding, target_type, seed, folds=5):
    import sklearn.preprocessing as skp
    from sklearn.model_selection import KFold, StratifiedKFold

    if encoding == "onehot":
        return skp.OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=5, max_categories=8,
                                 sparse_output=False, dtype=np.float64)
    if encoding == "ordinal":
        return skp.OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, min_frequency=5,
                                  max_categories=8, dtype=np.float64)
    cv = (KFold if target_type == "continuous" else StratifiedKFold)(folds, shuffle=True, random_state=seed)
    return skp.TargetEncoder(target_type=target_type, cv=cv)


@pytest.mark.parametrize("encoding,target_type", [("onehot", "binary"), ("ordinal", "binary"), ("target", "binary"),
                                                  ("target", "multiclass"), ("target", "continuous")])
@pytest.mark.parametrize("odd", [[], ["a\x00"]])
@pytest.mark.parametrize("seed", [0, 5])
def test_block_equals_sklearn_encoders(encoding, target_type, odd, seed):
    """The hand-written encodings (features/encoders.py) are exactly scikit-learn's: fit, unseen values, cross-fitting."""
    from mlsys_cli.features.transformers import CategoricalBlock

    rng = np.random.default_rng(seed)
    levels = np.array([f"v{i}" for i in range(30)] + ["a", "", "Z", "é"] + odd, dtype=object)
    x = levels[rng.zipf(1.5, 3000) % len(levels)]
    x[:10] = np.array(odd * 10 or ["a"] * 10, dtype=object)
    if target_type == "continuous":
        y = rng.normal(size=3000) * 3 + (x == "a")
    elif target_type == "binary":
        y = np.where(rng.random(3000) < 0.4, "yes", "no").astype(object)
    else:
        y = np.array(["b", "c", "a10", "a9"], dtype=object)[rng.integers(0, 4, 3000)]
    new = np.concatenate([x[:500], np.array(["never", "a\x00", "", "v1", "Z"], dtype=object)])
    block = CategoricalBlock(("c",), encoding=encoding, max_categories=8, min_frequency=5, target_type=target_type, seed=seed)
    train_out = block.fit_transform({"c": x}, y)
    ref = _sklearn_encoder(encoding, target_type, seed)
    ref_train = ref.fit_transform(x.reshape(-1, 1), y)
    np.testing.assert_array_equal(train_out, np.asarray(ref_train, dtype=np.float64))
    np.testing.assert_array_equal(block.transform({"c": new}), np.asarray(ref.transform(new.reshape(-1, 1)), dtype=np.float64))
    assert block.keys_.tolist() == ref.categories_[0].tolist()
    assert set(odd) <= set(block.keys_)  # no fixed-width copy dropping the trailing NUL
    if encoding == "onehot":
        assert block.names_out_ == [n.replace("x0_infrequent_sklearn", "c=__other__").replace("x0_", "c=")
                                    for n in ref.get_feature_names_out()]
    if encoding == "target" and target_type == "multiclass":
        assert block.names_out_ == [f"c__te_{k}" for k in ref.classes_]


def test_featurizer_state_round_trips_through_json(train):
    """What a bundle stores (plain JSON, no skops) rebuilds a featurizer with the same output."""
    import json

    for kw in ({"preset": "linear", "bins": 3}, {"preset": "trees"}, {"high_cardinality": "hashing"},
               {"preset": "mlp", "cross": ["cat,city"]}):
        fz = Featurizer(target="y", **kw).fit(train)
        state = json.loads(json.dumps(fz.get_state(), sort_keys=True))
        again = Featurizer.from_state(state)
        np.testing.assert_array_equal(again.transform(unseen_frame()), fz.transform(unseen_frame()))
        np.testing.assert_array_equal(again.transform(train), fz.transform(train))
        assert again.get_feature_names_out() == fz.get_feature_names_out()
        assert json.dumps(again.get_state(), sort_keys=True) == json.dumps(state, sort_keys=True)
    with pytest.raises(ValueError, match="unknown feature block type"):
        Featurizer.from_state({**state, "fitted": {**state["fitted"], "blocks_": [{"type": "os.system", "params": {}, "fitted": {}}]}})


def test_category_counts_most_frequent_first_ties_by_value():
    from mlsys_cli.features.roles import category_counts

    keys, counts = category_counts(np.array(["b", "a", "c", "b", "a", "d"], dtype=object))
    assert keys.tolist() == ["a", "b", "c", "d"] and counts.tolist() == [2, 2, 1, 1]


def test_transform_train_cross_fits_target_encoding_of_a_fitted_featurizer():
    """A model trained on a saved features bundle sees out-of-fold target encodings, like fit_transform."""
    train = raw_frame(600)
    fitted = Featurizer(target="y", high_cardinality="target").fit(train)
    te = [i for i, n in enumerate(fitted.get_feature_names_out()) if "__te" in n]
    assert te, "the high-cardinality column should be target-encoded"
    X_train = fitted.transform_train(train)
    # The same out-of-fold matrix as fitting from scratch, and the fitted state untouched.
    np.testing.assert_array_equal(X_train, Featurizer(target="y", high_cardinality="target").fit_transform(train))
    np.testing.assert_array_equal(fitted.transform(train), Featurizer(target="y", high_cardinality="target").fit(train).transform(train))
    # In-sample encodings (plain transform) differ from the cross-fitted ones; the rest is equal.
    in_sample = fitted.transform(train)
    assert not np.array_equal(X_train[:, te], in_sample[:, te])
    rest = [i for i in range(X_train.shape[1]) if i not in te]
    np.testing.assert_array_equal(X_train[:, rest], in_sample[:, rest])


def test_a_featurizer_stored_by_an_older_mlsys_is_refused_with_a_rebuild_hint(tmp_path):
    """Bundles from before the JSON featurizer (skops member) get a clear exit-3 error, not a crash."""
    from mlsys_cli.bundle import BundleReader, BundleWriter
    from mlsys_cli.errors import InputError

    writer = BundleWriter("features", {"target": "y"})
    writer.add_bytes("features/featurizer.skops", b"not read")
    writer.write(tmp_path / "old.mlsys")
    with pytest.raises(InputError, match="older mlsys") as info:
        Featurizer.load(BundleReader(tmp_path / "old.mlsys"))
    assert "rebuild" in info.value.hint


def test_constant_and_empty_columns_are_left_out_with_a_warning_never_refused():
    import pandas as pd

    from mlsys_cli.features import Featurizer

    df = pd.DataFrame({"x": [float(i % 9) for i in range(40)], "year": 2025.0, "nothing": None, "y": [0, 1] * 20})
    fz = Featurizer(target="y").fit(df)
    assert fz.roles_["year"]["role"] == "constant" and fz.roles_["nothing"]["role"] == "empty"
    assert any("'year' is constant" in w for w in fz.report_["warnings"])
    assert any("'nothing' is entirely missing" in w for w in fz.report_["warnings"])
    assert {c["name"] for c in fz.input_schema_} == {"x"}


def test_list_and_struct_columns_are_left_out_with_a_warning_naming_each():
    import pandas as pd

    from mlsys_cli.features import Featurizer

    df = pd.DataFrame({"x": [float(i % 9) for i in range(40)], "tags": [[1, 2]] * 40, "meta": [{"k": 1}] * 40,
                       "y": [0, 1] * 20})
    fz = Featurizer(target="y").fit(df)
    assert [c["name"] for c in fz.input_schema_] == ["x"]
    assert list(fz.roles_) == ["x", "tags", "meta"] and fz.roles_["tags"]["role"] == fz.roles_["meta"]["role"] == "nested"
    assert [w for w in fz.report_["warnings"] if "lists or structs" in w] == [
        "column 'tags' holds lists or structs: left out of the features",
        "column 'meta' holds lists or structs: left out of the features"]
    assert fz.transform(df.drop(columns=["tags", "meta"])).shape == (40, fz.n_features_out_)
    fz = Featurizer(target="y", drop=["tags", "meta"]).fit(df)
    assert [c["name"] for c in fz.input_schema_] == ["x"] and fz.roles_["tags"]["role"] == "dropped"
    assert not any("lists or structs" in w for w in fz.report_["warnings"])


def test_numbers_float32_cannot_hold_are_named_for_what_they_are():
    # Canonical numbers are float32: a column of values beyond its range is not "entirely missing",
    # and distinct int64 values beyond 2^24 (here beyond 2^53 too) that round to one float32 value
    # are not "constant": each is left out with the reason, and never silently collapsed.
    import pandas as pd

    from mlsys_cli.features import Featurizer

    n = 40
    big = 2 ** 60 + np.arange(n, dtype=np.int64)
    df = pd.DataFrame({"x": [float(i % 9) for i in range(n)], "huge": np.full(n, 1e300), "ids": big,
                       "codes": 2 ** 60 + np.arange(n, dtype=np.int64) % 4, "wide": 2 ** 25 + 3 * np.arange(n, dtype=np.int64),
                       "y": [0, 1] * (n // 2)})
    fz = Featurizer(target="y").fit(df)
    roles = {name: (r["role"], r["reason"]) for name, r in fz.roles_.items()}
    assert roles["huge"] == ("unrepresentable", "every value is infinite or beyond float32 range, |x| > 3.4e+38")
    assert roles["ids"][0] == "id" and "40 distinct integers beyond float32 precision" in roles["ids"][1]
    assert roles["codes"] == ("unrepresentable", "4 distinct integers beyond 2^24 round to one float32 value")
    # 2^25 + 3k for k < 40: float32 steps by 4 there, so the 40 integers round to 30 values.
    assert roles["wide"] == ("numeric", "numbers; 40 distinct integers beyond 2^24 round to 30 float32 values")
    assert "column 'huge' holds numbers float32 cannot hold (every value is infinite or beyond float32 range, |x| > 3.4e+38): " \
           "left out of the features" in fz.report_["warnings"]
    assert any(w.startswith("column 'codes' holds numbers float32 cannot hold") for w in fz.report_["warnings"])
    assert not any("entirely missing" in w or "is constant" in w for w in fz.report_["warnings"])


def test_a_table_of_only_the_target_is_refused():
    import pandas as pd

    from mlsys_cli.errors import InputError
    from mlsys_cli.features import Featurizer

    with pytest.raises(InputError, match="no column to learn from"):
        Featurizer(target="y").fit(pd.DataFrame({"y": [0, 1] * 20}))


def test_index_and_mlsys_metadata_columns_are_never_features():
    import pandas as pd

    from mlsys_cli.features import Featurizer

    df = pd.DataFrame({"x": [float(i % 9) for i in range(40)], "__index_level_0__": [float((i * 7) % 40) for i in range(40)],
                       "_mlsys_latency_ms": [1.0 + i for i in range(40)], "y": [0, 1] * 20})
    fz = Featurizer(target="y").fit(df)
    assert [c["name"] for c in fz.input_schema_] == ["x"]


def test_too_few_rows_to_cross_fit_is_an_input_error():
    from mlsys_cli.errors import InputError
    from mlsys_cli.features import Featurizer

    df = pd.DataFrame({"x": [1.0, 2.0], "c": ["a", "b"], "y": [0, 1]})  # a 2-row table reached the CV splitter
    with pytest.raises(InputError, match="2 training rows are too few"):
        Featurizer(target="y").fit_transform(df)


@pytest.mark.parametrize("labels", [[0, 0, 0, 1, 1], [0, 0, 1, 1], [0, 1, 2, 0, 1]])
def test_classes_rarer_than_the_folds_are_cross_fitted_without_error_or_library_warning(labels):
    import warnings

    n = len(labels)
    df = pd.DataFrame({"x": np.linspace(0, 1, n), "c": list("abacb")[:n], "y": labels})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's "least populated class" warning would fail the fit
        X = Featurizer(target="y").fit_transform(df)  # the leakage check cross-fits the strings in 3 folds
    assert X.shape[0] == n and np.isfinite(X).all()


def test_columns_with_empty_or_blank_names_are_left_out_with_a_warning():
    # No ONNX graph input can be named "": such a column fitted as a feature made export fail.
    import pandas as pd

    from mlsys_cli.features import Featurizer

    df = pd.DataFrame({"x": [float(i % 9) for i in range(40)], "": np.arange(40) % 3, "  ": np.arange(40) % 5,
                       "y": [0, 1] * 20})
    fz = Featurizer(target="y").fit(df)
    assert [c["name"] for c in fz.input_schema_] == ["x"]
    assert fz.roles_[""]["role"] == fz.roles_["  "]["role"] == "unnamed"
    assert "column '' has an empty or blank name: left out of the features" in fz.report_["warnings"]
    assert [i.name for i in fz.to_onnx().graph.input] == ["x"]


def _zoned_frame(n=200):
    rng = np.random.default_rng(5)
    when = pd.Timestamp("2024-03-01", tz="Europe/Berlin") + pd.to_timedelta(rng.integers(0, 86400 * 40, n), unit="s")
    x = rng.normal(size=n)
    return pd.DataFrame({"x": x, "when": when, "y": (x + (when.hour > 12) > 0.5).astype(int)})


def test_times_fitted_with_a_zone_refuse_naive_times_instead_of_shifting_them():
    df = _zoned_frame()
    fz = Featurizer(target="y").fit(df)
    assert [c.get("tz") for c in fz.input_schema_ if c["name"] == "when"] == ["Europe/Berlin"]
    wall_clock = df.assign(when=df["when"].dt.tz_localize(None))  # Berlin wall clock, zone dropped
    for naive in (wall_clock, wall_clock.assign(when=wall_clock["when"].astype(str))):
        with pytest.raises(InputError, match=r"'when'.*time zone \(Europe/Berlin\).*none") as info:
            fz.transform(naive)
        assert "tz_localize('Europe/Berlin')" in info.value.hint
    # The same instants in any zone, as text with an offset, or as epoch seconds give the same features.
    expected = fz.transform(df)
    for same in (df.assign(when=df["when"].dt.tz_convert("America/New_York")),
                 df.assign(when=df["when"].map(lambda t: t.isoformat())),
                 df.assign(when=(df["when"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds().astype("int64"))):
        np.testing.assert_array_equal(fz.transform(same), expected)
    state = Featurizer.from_state(fz.get_state())
    with pytest.raises(InputError, match="time zone"):
        state.transform(wall_clock)


def test_times_fitted_without_a_zone_still_accept_zoned_times():
    df = _zoned_frame()
    naive = df.assign(when=df["when"].dt.tz_convert("UTC").dt.tz_localize(None))
    fz = Featurizer(target="y").fit(naive)
    assert all("tz" not in c for c in fz.input_schema_)
    np.testing.assert_array_equal(fz.transform(df), fz.transform(naive))  # e.g. serve's UTC prediction logs


def test_numeric_override_on_a_time_of_day_column_keeps_it_a_time():
    import datetime as dt

    df = pd.DataFrame({"t": [dt.time(h % 24, 30) for h in range(60)], "x": np.tile([1.0, 2.0, 3.0], 20), "y": [0, 1] * 30})
    fz = Featurizer(target="y", numeric=["t"]).fit(df)  # was: "expected numeric values, found datetime.time(0, 30)"
    assert fz.roles_["t"]["role"] == "numeric" and fz.input_schema_[0] == {"name": "t", "type": "time", "role": "numeric"}
    np.testing.assert_array_equal(fz.transform(df), Featurizer(target="y").fit(df).transform(df))
