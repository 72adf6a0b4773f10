"""Time budgets: when a trial must stop training, and when the study must stop.

``timeout`` is a wall-clock deadline. A trial that is running when the deadline passes gets the
remaining time as its own training timeout, so the budget holds to within a few seconds. Once
one trial has finished, a trial trains for at most :data:`TRIAL_SHARE` of the time left (then
it is scored as it stands), so one slow configuration cannot eat the budget.
"""

from __future__ import annotations

import time
from typing import Any

# Under a timeout, once a trial has finished no trial trains longer than this share of the time
# left (it is scored with the rounds/epochs it reached), so one slow configuration (an MLP on a
# loaded machine) cannot eat the budget the other families would have used.
TRIAL_SHARE = 0.5
MIN_FIT_S = 1.0


class Deadline(Exception):
    """The time budget ran out before the trial could be scored."""


def check_deadline(trial: Any, deadline: float | None) -> None:
    """Stop the trial (:class:`Deadline`, recorded as ``stopped_by: timeout``) once the deadline passed."""
    if deadline is not None and time.time() >= deadline:
        trial.set_user_attr("stopped_by", "timeout")
        raise Deadline()


def fit_deadline(deadline: float | None, any_complete: bool) -> float | None:
    """When a trial's training stops: a share of the time left once one trial has finished."""
    if deadline is None or not any_complete:
        return None
    return time.time() + TRIAL_SHARE * (deadline - time.time())


def fit_seconds(deadline: float | None, trial_deadline: float | None) -> float | None:
    """The training timeout of one fit (at least :data:`MIN_FIT_S` while the study has time)."""
    if deadline is None:
        return None
    return max(min(trial_deadline or deadline, deadline) - time.time(), min(MIN_FIT_S, deadline - time.time()))
