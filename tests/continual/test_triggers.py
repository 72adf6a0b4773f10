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
                                  "volume:lots", "performance:auc", "performance:auc=0.8", "always:1", ""])
def test_bad_triggers_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_trigger(text)


def test_periods():
    assert parse_period("90s") == timedelta(seconds=90)
    assert parse_period("2w") == timedelta(days=14)
    assert parse_period("1.5h") == timedelta(minutes=90)
