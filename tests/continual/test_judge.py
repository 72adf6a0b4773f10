"""The champion-vs-challenger decision rule (DESIGN.md §5: promote only a better challenger)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mlsys_cli.continual.judge import PROMOTED, REJECTED, _decide


def _ev(auc):
    return SimpleNamespace(metrics={"auc": auc}, gates=[])


@pytest.mark.parametrize(("new", "old", "min_gain", "decision"), [
    (0.7866, 0.7866, 0.0, REJECTED),  # a tie (the same window retrained) is not better
    (0.7866, 0.7866, 0.01, REJECTED),
    (0.7867, 0.7866, 0.0, PROMOTED),
    (0.80, 0.79, 0.01, PROMOTED),
    (0.795, 0.79, 0.01, REJECTED),
    (0.78, 0.79, 0.0, REJECTED),
])
def test_only_a_better_challenger_is_promoted(new, old, min_gain, decision):
    gain = new - old
    got, reason = _decide(_ev(new), _ev(old), "auc", True, gain, 0.5, min_gain)
    assert got == decision, reason
    if new == old:
        assert "not better than the champion" in reason


def test_a_tie_on_a_lower_is_better_metric_is_not_promoted():
    ev = SimpleNamespace(metrics={"rmse": 2.0}, gates=[])
    got, _ = _decide(ev, ev, "rmse", False, 0.0, 3.0, 0.0)
    assert got == REJECTED
