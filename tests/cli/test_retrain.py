"""mlsys retrain end to end on the churn sample: decisions, exit codes, the registry they leave."""

from __future__ import annotations

import json

import pytest

from mlsys_cli.continual import registry as r
from tests.conftest import assert_clean_error, run_cli
from tests.continual.fixtures import first_champion

WINDOW = ("--time-col", "snapshot_date", "--bootstrap", "0")


def retrain(reg, data, *args):
    return run_cli("retrain", "--registry", reg, "--data", data, *WINDOW, *args)


def _events(reg):
    return [json.loads(line) for line in (reg / "history.jsonl").read_text().splitlines()]


def test_first_champion_from_train_flags(seeded_registry):
    (v1,) = r.Registry(seeded_registry).versions()
    assert v1.status == "promoted" and v1.parent is None and v1.reason.startswith("first champion: auc ")
    assert v1.recipe["family"] == "linear" and v1.recipe["stateful"] is False
    assert v1.data["end"].startswith("2025-06-01") and v1.data["parts"]["holdout"]["rows"] > 0
    assert v1.data["files"][0]["sha256"] and v1.metrics["zero_rule"]["auc"] == 0.5
    (event,) = _events(seeded_registry)
    assert event["decision"] == "promoted" and event["champion"] == "v0001" and event["version"] == "v0001"


def test_not_needed_logs_the_reason_and_trains_nothing(registry, churn):
    result = retrain(registry, churn["q3"], "--trigger", "schedule:30d", "--trigger", "volume:100000", "--json")
    assert result.code == 10, result.stderr
    doc = result.json
    assert doc["decision"] == "not_needed" and doc["exit_code"] == 10 and doc["version"] is None
    assert [t["fired"] for t in doc["triggers"]] == [False, False]
    assert doc["reason"].startswith("no trigger fired: the newest version is ")
    assert len(r.Registry(registry).versions()) == 1
    last = _events(registry)[-1]
    assert last["decision"] == "not_needed" and last["champion"] == "v0001" and last["triggers"] == doc["triggers"]


def test_promoted_when_a_trigger_fires_and_the_challenger_is_better(registry, churn):
    result = retrain(registry, churn["q3"], "--trigger", "volume:500", "--trigger", "performance:auc<0.99",
                     "--slice", "plan", "--json")
    assert result.code == 0, result.stderr
    doc = result.json
    assert doc["decision"] == "promoted" and doc["champion"] == doc["version"] == "v0002" and doc["previous"] == "v0001"
    assert [t["fired"] for t in doc["triggers"]] == [True, True]
    assert "new rows (newer than the champion's data" in doc["triggers"][0]["reason"]
    assert [row["model"] for row in doc["comparison"]] == ["challenger", "champion", "zero_rule"]
    assert doc["gain"] >= 0 and {s["column"] for s in doc["slices"]} == {"plan"}
    assert r.read_champion(registry).version == "v0002"
    assert r.Registry(registry).get("v0002").parent == "v0001"


def test_rejected_challengers_are_kept_with_the_reason(registry, churn):
    gate = retrain(registry, churn["q3"], "--require", "auc>=0.99")
    assert gate.code == 11, gate.stderr
    gain = retrain(registry, churn["q3"], "--min-gain", "0.5", "--json")
    assert gain.code == 11 and "< --min-gain 0.5" in gain.json["reason"]
    versions = r.Registry(registry).versions()
    assert [v.status for v in versions] == ["promoted", "rejected", "rejected"]
    assert versions[1].reason.startswith("the challenger fails --require: auc>=0.99 (observed ")
    assert r.read_champion(registry).version == "v0001"
    assert [e["decision"] for e in _events(registry)][1:] == ["rejected", "rejected"]


def test_stateful_xgboost_continues_the_champions_trees(churn, tmp_path):
    reg = tmp_path / "reg"
    first = first_champion(reg, churn["h1"], "--model", "xgboost", "--param", "n_estimators=30",
                           "--param", "early_stopping_rounds=5")
    assert first.code == 0, first.stderr
    champion_trees = r.Registry(reg).versions()[0]
    result = retrain(reg, churn["q3"], "--stateful", "--json")
    assert result.code in (0, 11), result.stderr
    training = result.json["training"]
    assert training["stateful"] is True and training["warm_start"].startswith("boosting continued from the champion's ")
    from mlsys_cli.models.bundle import ModelBundle

    before = ModelBundle.load(champion_trees.bundle).predictor.estimator.estimator.get_booster().num_boosted_rounds()
    after = ModelBundle.load(r.Registry(reg).get("v0002").bundle).predictor.estimator.estimator.get_booster()
    assert after.num_boosted_rounds() > before
    assert r.Registry(reg).get("v0002").recipe["stateful"] is True


def test_stateful_mlp_fine_tunes(churn, tmp_path):
    reg = tmp_path / "reg"
    params = ("--param", "width=16", "--param", "max_epochs=40", "--param", "hidden_layers=1",
              "--param", "lr=0.01")
    assert first_champion(reg, churn["h1"], "--model", "mlp", *params).code == 0
    result = retrain(reg, churn["q3"], "--stateful", "--json")
    assert result.code in (0, 11), result.stderr
    assert result.json["training"]["warm_start"].startswith("fine-tuned the champion's network")


def test_recipe_from_a_bundle_or_from_tune(churn, tmp_path):
    model = tmp_path / "model.mlsys"
    trained = run_cli("train", churn["h1"], "--target", "churned", "--model", "linear", "--drop", "snapshot_date",
                      "-o", model)
    assert trained.code == 0, trained.stderr
    from_bundle = retrain(tmp_path / "a", churn["h1"], "--recipe", model, "--json")
    assert from_bundle.code == 0, from_bundle.stderr
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"family": "linear", "params": {"C": 0.5},
                                  "recipe": {"family": "linear", "params": {"C": 0.5}, "seed": 3, "target": "churned",
                                             "task": "binary", "features": {}}}))
    from_tune = retrain(tmp_path / "b", churn["h1"], "--recipe", params, "--json")
    assert from_tune.code == 0, from_tune.stderr
    recipe = r.Registry(tmp_path / "b").versions()[0].recipe
    assert recipe["params"]["C"] == 0.5 and recipe["seed"] == 3


@pytest.mark.parametrize("args,code,message", [
    ((), 2, "no champion yet, and no recipe"),
    (("--target", "churned", "--data-window", "90d"), 2, "--data-window needs --time-col"),
    (("--target", "churned", "--trigger", "sometimes"), 2, "invalid --trigger"),
    (("--recipe", "missing.mlsys"), 3, "no such file"),
    (("--target", "churned", "--trigger", "schedule:99999999999d"), 2, "invalid period '99999999999d'"),
    (("--target", "churned", "--time-col", "snapshot_date", "--data-window", "99999999999d"), 2, "invalid period"),
    (("--target", "churned", "--trigger", "performance:auc<"), 2, "invalid --trigger 'performance:auc<'"),
    (("--target", "churned", "--trigger", "performance:rmse>10"), 2, "--trigger performance:rmse>10: unknown metric"),
])
def test_bad_input_on_an_empty_registry(churn, tmp_path, args, code, message):
    result = run_cli("retrain", "--registry", tmp_path / "reg", "--data", churn["h1"], *args)
    assert_clean_error(result, code)
    assert message in result.stderr
    assert not (tmp_path / "reg" / "versions").exists() or not list((tmp_path / "reg" / "versions").iterdir())


def test_a_tampered_or_missing_champion_is_refused(registry, churn):
    bundle = registry / "versions/v0001/model.mlsys"
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 1
    bundle.write_bytes(bytes(data))
    result = retrain(registry, churn["q3"])
    assert_clean_error(result, 3)
    assert "fails its sha256 check" in result.stderr and "rollback" in result.stderr
    bundle.unlink()
    missing = retrain(registry, churn["q3"])
    assert_clean_error(missing, 3)
    assert "the bundle of v0001 is missing" in missing.stderr
    assert len(r.Registry(registry).versions()) == 1


def test_a_changed_schema_is_refused(registry, churn, tmp_path):
    import pandas as pd

    df = pd.read_parquet(churn["q3"]).drop(columns=["plan"]).rename(columns={"age": "age_years"})
    df.to_parquet(tmp_path / "new.parquet", index=False)
    result = retrain(registry, tmp_path / "new.parquet")
    assert_clean_error(result, 3)
    assert "missing column(s) plan, age" in result.stderr


def test_a_lost_column_is_refused_and_the_challengers_training_warnings_are_printed(registry, churn, tmp_path):
    """Both were exit 0 without a word: the challenger left the column out and was promoted."""
    import numpy as np
    import pandas as pd

    df = pd.read_parquet(churn["q3"])
    df.assign(age=np.nan).to_parquet(tmp_path / "lost.parquet", index=False)
    lost = retrain(registry, tmp_path / "lost.parquet", "--trigger", "always")
    assert_clean_error(lost, 3)
    assert "entirely missing column(s) age" in lost.stderr and len(r.Registry(registry).versions()) == 1
    df.assign(plan="basic").to_parquet(tmp_path / "flat.parquet", index=False)
    flat = retrain(registry, tmp_path / "flat.parquet", "--trigger", "always", "--json")
    assert flat.code in (0, 11), flat.stderr  # promoted or rejected: either way told, with --json too
    assert "warning: challenger: column 'plan' is constant" in flat.stderr, flat.stderr
    assert flat.json["decision"] in ("promoted", "rejected")


@pytest.mark.parametrize("change", ["words", "many_classes"])
def test_a_target_that_changed_kind_is_refused_before_anything_trains(registry, churn, tmp_path, change):
    import numpy as np
    import pandas as pd

    df = pd.read_parquet(churn["q3"])
    if change == "words":  # 0/1 became no/yes: the champion's classes appear nowhere
        df["churned"] = np.where(df["churned"].astype(int) == 1, "yes", "no")
    else:  # a binary target became a score
        df["churned"] = np.arange(len(df)) % 7
    df.to_parquet(tmp_path / "new.parquet", index=False)
    result = retrain(registry, tmp_path / "new.parquet", "--trigger", "always")
    assert_clean_error(result, 3)
    assert "'churned'" in result.stderr and "new registry" in result.stderr
    assert len(r.Registry(registry).versions()) == 1 and "training" not in result.stderr


def test_the_drift_trigger_calls_mlsys_drift(registry, churn):
    """Champion trained on January-June; the newest 100 days hold the documented drift of Q4."""
    # The default weighs the drift by the model's importance (and by its estimated loss, when calibrated).
    weighed = retrain(registry, churn["all"], "--data-window", "100d", "--trigger", "drift", "--json")
    (verdict,) = weighed.json["triggers"]
    share = verdict["detail"]["importance_share"]
    assert verdict["detail"]["drift_detected"] and 0 < share < 1 and verdict["detail"]["estimate"]["metric"] == "auc"
    assert f"carry {share:.0%} of the model's importance" in verdict["reason"]
    assert verdict["fired"] is (share >= 0.5) and verdict["fired"] is not (weighed.code == 10)
    result = retrain(registry, churn["all"], "--data-window", "100d", "--trigger", "drift:any", "--json")
    assert result.code in (0, 11), result.stderr
    (verdict,) = result.json["triggers"]
    assert verdict["fired"] is True and verdict["detail"]["drift_detected"] is True
    assert {"device", "support_calls"} & set(verdict["detail"]["drifted"])
    assert verdict["reason"].startswith("drift in ") and "newest rows vs the champion's training reference" in verdict["reason"]
    excluded = retrain(registry, churn["all"], "--data-window", "100d", "--trigger", "drift:any", "--drift-exclude", "device",
                       "--drift-exclude", "support_calls", "--json")
    assert excluded.code in (0, 10, 11), excluded.stderr
    assert not {"device", "support_calls"} & set(excluded.json["triggers"][0]["detail"]["drifted"])


@pytest.mark.parametrize("args,code,message", [
    (("--require", "foo>=1"), 2, "--require foo>=1: unknown metric 'foo'"),
    (("--trigger", "performance:slice_min:auc<0.7"), 2, "--trigger performance:slice_min:auc<0.7 needs --slice"),
    (("--slice", "nope"), 3, "--slice nope: no such column"),
    (("--model", "xgboost"), 2, "--model xgboost (the champion is linear)"),
    (("--target", "plan"), 2, "--target plan (the champion predicts churned)"),
    (("--param", "C=2"), 2, "--param: train's flags only set the recipe of an empty registry's first champion"),
])
def test_bad_gates_and_first_champion_flags_are_refused_before_training(registry, churn, args, code, message):
    """Refused whether or not a trigger fires (a typo in a nightly job must not hide behind
    'not needed'), and before a challenger is trained: nothing written."""
    history = (registry / "history.jsonl").read_bytes()
    for trigger in ("always", "volume:100000000"):
        result = retrain(registry, churn["q3"], "--trigger", trigger, *args)
        assert_clean_error(result, code)
        assert message in result.stderr
    assert (registry / "history.jsonl").read_bytes() == history and len(r.Registry(registry).versions()) == 1


def test_train_flags_that_match_the_champion_are_accepted(registry, churn):
    result = retrain(registry, churn["q3"], "--target", "churned", "--model", "linear", "--trigger", "volume:100000000")
    assert result.code == 10, result.stderr


def test_a_registry_path_that_is_a_file_is_refused_as_such(churn, tmp_path):
    """It was "the registry has no champion yet" (exit 2) without a recipe, and "cannot write" after
    reading the data with one."""
    model = tmp_path / "model.mlsys"
    model.write_bytes(b"not a directory")
    for extra in ([], ["--target", "churned", "--model", "linear"]):
        result = retrain(model, churn["q3"], *extra)
        assert_clean_error(result, 3)
        assert "model.mlsys: not a registry (a file, not a directory)" in result.stderr
    listed = run_cli("registry", "list", model)
    assert_clean_error(listed, 3)
    assert "not a registry (a file" in listed.stderr and model.read_bytes() == b"not a directory"
