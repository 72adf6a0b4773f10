"""When to retrain (DMLS ch. 9, "how often to update"): the ``--trigger`` rules of ``mlsys retrain``.

=====================  ==================================================================
``always``             every run retrains
``schedule:7d``        the newest version (promoted or rejected) is at least this old
                       (units ``s m h d w``)
``drift``              ``mlsys drift`` finds drift between the champion's training data (the
                       reference statistics in its bundle) and the window's newest rows *that
                       costs accuracy*: the drifted features carry at least half of the model's
                       importance and the model's confidence-based estimate of its metric is
                       0.02 under its validation metric (see below)
``drift:any``          any drift ``mlsys drift`` reports (its own rule: significant and large)
``drift:share=0.3``    the impact rule with another importance share
``performance:COND``   the champion's metric on the newest held-out rows meets ``COND``
                       (``auc<0.80``, ``rmse>1200``: the syntax of ``evaluate --require``)
``volume:50000``       at least this many new rows since the champion's data: rows newer than
                       its window (``--time-col``), or rows of input files it never saw
=====================  ==================================================================

Several ``--trigger`` options retrain when any fires; each one's verdict and reason are reported
and logged. A registry without a champion always trains its first model.

Why ``drift`` weighs the drift: covariates move all the time (customers age, the weather follows
the season) without hurting the model; with "any drift" the trigger fired at every period of both
replays of ``benchmarks/bench_continual.py``, costing what retraining every period costs. So the
default fires on drift that costs accuracy, when both hold:

- **importance**: the share of the model's importance (stored by ``train``; the sum over the
  model features an input became) carried by the drifted input features is at least
  ``DRIFT_SHARE`` (0.5; ``drift:share=X`` sets it). A model without importances weighs every
  feature the same. Prediction drift alone does not count: it follows the inputs;
- **estimated loss**: the champion's confidence-based estimate of its primary metric on the
  newest rows (AUC for binary models, accuracy otherwise: ``mlsys drift``'s model checks, which
  need no labels) is at least ``ESTIMATE_DROP`` (0.02) under the value it had on its validation
  rows. This is weighed only when the estimate is reliable (the bundle's probabilities pass the
  calibration check, and it was validated on held-out rows); otherwise the importance decides alone,
  and the reason says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable

from mlsys_cli.errors import UsageError

KINDS = ("always", "schedule", "drift", "performance", "volume")
DRIFT_SHARE = 0.5
ESTIMATE_DROP = 0.02
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PERIOD = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
# timedelta and pandas' Timestamp arithmetic overflow long before a float does: anything longer
# than this is a typo, not a window.
_MAX_PERIOD = timedelta(days=365_250)


def parse_period(text: str, what: str = "--trigger schedule") -> timedelta:
    """``90s``, ``12h``, ``7d``, ``2w`` -> timedelta (bad syntax: exit 2)."""
    m = _PERIOD.match(text or "")
    seconds = float(m.group(1)) * _UNITS[m.group(2)] if m else 0.0
    if not 0 < seconds <= _MAX_PERIOD.total_seconds():
        raise UsageError(f"invalid period {text!r} for {what}",
                         "use a positive number and a unit, at most 1000 years: 90s, 12h, 7d, 2w")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Trigger:
    """One parsed ``--trigger``."""

    text: str
    kind: str
    period: timedelta | None = None
    condition: Any = None  # models.evaluate.Requirement for ``performance``
    rows: int | None = None
    share: float | None = None  # ``drift``: importance share that fires; None = any drift (``drift:any``)

    def to_dict(self) -> dict[str, Any]:
        return {"trigger": self.text, "kind": self.kind}


def parse_trigger(text: str) -> Trigger:
    """Parse one ``--trigger`` value; anything else is a usage error (exit 2)."""
    kind, _, arg = (text or "").strip().partition(":")
    if kind not in KINDS:
        raise UsageError(f"invalid --trigger {text!r}", "use one of: always, schedule:7d, drift, performance:'auc<0.80', volume:50000")
    if kind == "drift":
        return Trigger(text, kind, share=_drift_share(text, arg))
    if kind == "always":
        if arg:
            raise UsageError(f"invalid --trigger {text!r}: {kind} takes no argument")
        return Trigger(text, kind)
    if not arg:
        raise UsageError(f"invalid --trigger {text!r}: {kind} needs an argument", f"e.g. --trigger {_EXAMPLE[kind]}")
    if kind == "schedule":
        return Trigger(text, kind, period=parse_period(arg))
    if kind == "performance":
        from mlsys_cli.models.evaluate import parse_requirement

        try:
            return Trigger(text, kind, condition=parse_requirement(arg))
        except UsageError:
            raise UsageError(f"invalid --trigger {text!r}: the condition is not METRIC OP NUMBER",
                             "e.g. --trigger 'performance:auc<0.80' or 'performance:rmse>1200'") from None
    try:
        rows = int(arg.replace("_", ""))
    except ValueError:
        rows = 0
    if rows < 1:
        raise UsageError(f"invalid --trigger {text!r}: volume needs a positive row count", "e.g. --trigger volume:50000")
    return Trigger(text, kind, rows=rows)


def _drift_share(text: str, arg: str) -> float | None:
    """``drift`` -> DRIFT_SHARE, ``drift:any`` -> None, ``drift:share=0.3`` -> 0.3."""
    if not arg:
        return DRIFT_SHARE
    if arg == "any":
        return None
    key, _, value = arg.partition("=")
    try:
        share = float(value) if key == "share" else -1.0
    except ValueError:
        share = -1.0
    if not 0 < share <= 1:
        raise UsageError(f"invalid --trigger {text!r}", "use drift, drift:any or drift:share=0.3 (a share in (0, 1])")
    return share


_EXAMPLE = {"schedule": "schedule:7d", "performance": "'performance:auc<0.80'", "volume": "volume:50000"}


@dataclass(frozen=True)
class Verdict:
    """Whether one trigger fired, and why (in words and numbers)."""

    trigger: str
    fired: bool
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"trigger": self.trigger, "fired": self.fired, "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True)
class Evidence:
    """What the triggers look at; the expensive parts are computed only when a trigger asks.

    Attributes
    ----------
    now : datetime
    last_trained : datetime or None
        When the newest version was created.
    new_rows : callable -> (int, str)
        Rows the champion never saw, and how they were counted.
    champion_metric : callable(Requirement) -> dict
        The champion evaluated on the newest held-out rows with the condition as a gate.
    drift : callable -> dict
        ``drift_detected``, a one-line summary and the drifted features.
    """

    now: datetime
    last_trained: datetime | None
    new_rows: Callable[[], tuple[int, str]]
    champion_metric: Callable[[Any], dict[str, Any]]
    drift: Callable[[], dict[str, Any]]


def decide(triggers: list[Trigger], evidence: Evidence) -> list[Verdict]:
    """Each trigger's verdict, in the order given."""
    return [_JUDGES[t.kind](t, evidence) for t in triggers]


def _always(t: Trigger, ev: Evidence) -> Verdict:
    return Verdict(t.text, True, "retrain on every run (--trigger always)")


def _schedule(t: Trigger, ev: Evidence) -> Verdict:
    if ev.last_trained is None:
        return Verdict(t.text, True, "no version trained yet")
    age = ev.now - ev.last_trained
    fired = age >= t.period
    detail = {"last_trained": ev.last_trained.isoformat(), "age_seconds": round(age.total_seconds()),
              "period_seconds": round(t.period.total_seconds())}
    words = f"the newest version is {_age(age)} old ({'>=' if fired else '<'} {_age(t.period)})"
    return Verdict(t.text, fired, words, detail)


def _age(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _volume(t: Trigger, ev: Evidence) -> Verdict:
    rows, how = ev.new_rows()
    fired = rows >= t.rows
    return Verdict(t.text, fired, f"{rows:,} new rows ({how}) {'>=' if fired else '<'} {t.rows:,}",
                   {"new_rows": rows, "threshold": t.rows, "counted": how})


def _performance(t: Trigger, ev: Evidence) -> Verdict:
    gate = ev.champion_metric(t.condition)
    observed = gate.get("observed")
    shown = "undefined" if observed is None else f"{observed:.4g}"
    fired = bool(gate.get("passed"))
    metric = f"{t.condition.scope}:{t.condition.metric}" if t.condition.scope else t.condition.metric
    words = f"the champion's {metric} on the newest held-out rows is {shown}: " \
            f"{t.condition.text} {'holds' if fired else 'does not hold'}"
    return Verdict(t.text, fired, words, {"condition": t.condition.text, "observed": observed, "rows": gate.get("rows")})


def _drift(t: Trigger, ev: Evidence) -> Verdict:
    found = ev.drift()
    detected = bool(found["drift_detected"])
    share = found.get("importance_share")
    if t.share is None or not detected or share is None:
        # drift:any, no drift at all, or evidence without the model's weights: any drift fires.
        return Verdict(t.text, detected, found["summary"], found)
    important = share >= t.share
    why = [f"the drifted features carry {share:.0%} of the model's importance ({'>=' if important else '<'} {t.share:.0%})"]
    fired = important
    estimate = found.get("estimate") or {}
    if estimate.get("estimated") is not None and estimate.get("validation") is not None:
        drop = estimate["validation"] - estimate["estimated"]
        words = f"estimated {estimate['metric']} {estimate['estimated']:.3f} vs {estimate['validation']:.3f} on the validation rows"
        if estimate.get("reliable"):
            hurt = drop >= ESTIMATE_DROP
            fired = important and hurt
            why.append(f"{words} ({'a drop of' if drop > 0 else 'a change of'} {abs(drop):.3f}, "
                       f"{'>=' if hurt else '<'} {ESTIMATE_DROP})")
        else:
            why.append(f"{words} (not weighed: {estimate.get('calibration') or 'not reliable'})")
    return Verdict(t.text, fired, f"{found['summary']}; " + "; ".join(why), found)


_JUDGES = {"always": _always, "schedule": _schedule, "volume": _volume, "performance": _performance, "drift": _drift}
