"""Trigger parsing and verdicts, with the evidence given directly (no model, no clock)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mlsys_cli.continual.triggers import Evidence, decide, parse_period, parse_trigger
from mlsys_cli.errors import UsageError

NOW = datetime(2025, 6, 30, 2, 30, tzinfo=timezone.utc)


def _evidence(last_trained=NOW - timedelta(days=3), rows=1000, observed=0.78, drifted=False):
    def champion_metric(condition):
        return {"observed": observed, "passed": condition.holds(observed), "rows": 200}

    return Evidence(now=NOW, last_trained=last_trained, new_rows=lambda: (rows, "newer than the champion's data"),
                    champion_metric=champion_metric,
                    drift=lambda: {"drift_detected": drifted, "summary": "drift in 1 feature(s)" if drifted else "no drift"})


@pytest.mark.parametrize("text,fired", [
    ("always", True), ("schedule:7d", False), ("schedule:2d", True), ("schedule:72h", True),
    ("volume:1000", True), ("volume:1001", False), ("performance:auc<0.80", True), ("performance:auc<0.75", False),
    ("drift", False),
])
def test_verdicts(text, fired):
    (verdict,) = decide([parse_trigger(text)], _evidence())
    assert verdict.fired is fired and verdict.trigger == text and verdict.reason


def test_reasons_say_why():
    verdicts = decide([parse_trigger("schedule:7d"), parse_trigger("performance:auc<0.80"), parse_trigger("drift")],
                      _evidence(drifted=True))
    assert verdicts[0].reason == "the newest version is 3.0d old (< 7.0d)"
    assert verdicts[1].reason == "the champion's auc on the newest held-out rows is 0.78: auc<0.80 holds"
    assert verdicts[2].fired and verdicts[2].detail["drift_detected"]
    assert decide([parse_trigger("schedule:1d")], _evidence(last_trained=None))[0].fired


def test_only_the_evidence_asked_for_is_computed():
    def boom():
        raise AssertionError("drift was computed for a schedule trigger")

    ev = Evidence(now=NOW, last_trained=NOW, new_rows=boom, champion_metric=boom, drift=boom)
    assert not decide([parse_trigger("schedule:1d")], ev)[0].fired


@pytest.mark.parametrize("text", ["sometimes", "schedule", "schedule:7", "schedule:-1d", "drift:0.1", "volume:0",
                                  "volume:lots", "performance:auc", "performance:auc=0.8", "always:1", "",
                                  "schedule:0d", "schedule:99999999999d", "schedule:1e400d", "volume:-1",
                                  "performance:auc<", "performance:"])
def test_bad_triggers_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_trigger(text)


def test_a_bad_performance_condition_names_the_trigger():
    with pytest.raises(UsageError, match=r"invalid --trigger 'performance:auc<'"):
        parse_trigger("performance:auc<")


def test_periods():
    assert parse_period("90s") == timedelta(seconds=90)
    assert parse_period("2w") == timedelta(days=14)
    assert parse_period("1.5h") == timedelta(minutes=90)


def _drift_evidence(share, estimated=None, validation=0.80, reliable=True):
    found = {"drift_detected": True, "drifted": ["a"], "importance_share": share, "summary": "drift in 1 feature(s): a",
             "estimate": None if estimated is None else {"metric": "auc", "estimated": estimated, "validation": validation,
                                                         "reliable": reliable, "calibration": "poorly calibrated"}}
    return Evidence(now=NOW, last_trained=NOW, new_rows=lambda: (0, ""), champion_metric=lambda c: {}, drift=lambda: found)


@pytest.mark.parametrize("text,share,estimated,reliable,fired", [
    ("drift", 0.7, None, True, True),          # important drift, no estimate: the importance decides
    ("drift", 0.3, None, True, False),         # drift in features the model hardly uses
    ("drift", 0.7, 0.77, True, True),          # important and the estimated AUC fell 0.03
    ("drift", 0.7, 0.79, True, False),         # important, but the estimate holds (a drop of 0.01)
    ("drift", 0.3, 0.70, True, False),         # an estimated loss without important drift
    ("drift", 0.7, 0.79, False, True),         # an unreliable estimate is not weighed
    ("drift:share=0.2", 0.3, None, True, True),
    ("drift:any", 0.01, 0.85, True, True),     # any drift fires
])
def test_drift_fires_on_drift_that_costs_accuracy(text, share, estimated, reliable, fired):
    (verdict,) = decide([parse_trigger(text)], _drift_evidence(share, estimated, reliable=reliable))
    assert verdict.fired is fired, verdict.reason
    assert verdict.reason.startswith("drift in 1 feature(s)")
    if text != "drift:any":
        assert "of the model's importance" in verdict.reason
    if estimated is not None and text == "drift" and not reliable:
        assert "not weighed: poorly calibrated" in verdict.reason


@pytest.mark.parametrize("text", ["drift:share=0", "drift:share=1.5", "drift:share=x", "drift:all", "drift:0.3"])
def test_bad_drift_triggers(text):
    with pytest.raises(UsageError, match="invalid --trigger"):
        parse_trigger(text)
