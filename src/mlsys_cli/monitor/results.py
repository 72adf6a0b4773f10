"""The results of drift detection and the options that shape them (see :mod:`mlsys_cli.monitor.drift`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from mlsys_cli.errors import UsageError


@dataclass(frozen=True)
class DriftOptions:
    """What counts as drift, and how to look for it.

    Parameters
    ----------
    alpha : float
        False discovery rate of the Benjamini–Hochberg correction across all tests.
    wasserstein : float
        Numeric effect threshold: Wasserstein distance divided by the reference std.
    psi : float
        Population stability index threshold (numbers and categories; 0.2 is the usual "major shift").
    jensen_shannon : float
        Categorical effect threshold: Jensen–Shannon distance (base 2, in [0, 1]).
    missing_rate : float
        Effect threshold for the missing rate: absolute change (0.05 = five percentage points).
    unseen_share : float
        Share of current values in categories the reference never saw that counts as drift.
    min_rows : int
        Fewest non-missing rows on each side to decide at all (below: "too few rows", no verdict).
    domain_classifier : bool
        Run the multivariate domain-classifier test (needs reference rows: a table reference).
    domain_auc : float
        AUC the domain classifier must reach (besides a significant permutation test) to count.
    domain_rows : int
        Rows sampled from each side for the domain classifier.
    permutations : int
        Permutations of the domain classifier's test.
    time_col : str, optional
        Column of the current data that defines windows (serve logs: ``_mlsys_time``).
    window : str, optional
        Window length: ``1h``, ``1d``, ``7d``, ... (needs ``time_col``).
    columns : sequence of str, optional
        Only these features (default: every column both sides share).
    exclude : sequence of str
        Leave these columns out.
    target : str, optional
        The label column (default: the model's target); never tested as a feature.
    include_shadow : bool
        Keep rows a shadow model served (``_mlsys_role == "shadow"``).
    backend : {"native", "alibi"}
        ``alibi`` takes the per-feature p-values and the multivariate tests from alibi-detect.
    seed : int
        Seeds the domain classifier's sample, fit and permutations.
    """

    alpha: float = 0.05
    wasserstein: float = 0.1
    psi: float = 0.2
    jensen_shannon: float = 0.1
    missing_rate: float = 0.05
    unseen_share: float = 0.05
    min_rows: int = 50
    domain_classifier: bool = True
    domain_auc: float = 0.55
    domain_rows: int = 2000
    permutations: int = 200
    time_col: str | None = None
    window: str | None = None
    columns: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    target: str | None = None
    include_shadow: bool = False
    backend: str = "native"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise UsageError(f"invalid alpha {self.alpha}: must be in (0, 1)")
        for name in ("wasserstein", "psi", "jensen_shannon", "missing_rate", "unseen_share"):
            if getattr(self, name) < 0:
                raise UsageError(f"invalid {name} threshold {getattr(self, name)}: must be >= 0")
        if self.min_rows < 2:
            raise UsageError(f"invalid min_rows {self.min_rows}: must be at least 2")
        if self.backend not in ("native", "alibi"):
            raise UsageError(f"invalid backend {self.backend!r}", "choose native or alibi")
        if self.window and not self.time_col:
            raise UsageError("--window needs --time-col", "serve logs: --time-col _mlsys_time")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["columns"] = list(self.columns) if self.columns is not None else None
        d["exclude"] = list(self.exclude)
        return d


@dataclass(frozen=True)
class FeatureDrift:
    """The verdict on one feature (or one model output: ``name`` starts with ``prediction:``).

    ``test`` is ``ks`` or ``chi2``; ``statistic``/``p_value``/``q_value`` are that test's
    (q = Benjamini–Hochberg adjusted); ``effect`` names the effect sizes that decide with
    their values; ``drifted`` is the verdict, ``reasons`` say which rule fired, ``decided`` is
    False when there were too few rows (then ``note`` says why).
    """

    name: str
    kind: str
    test: str
    rows_reference: int
    rows_current: int
    statistic: float | None
    p_value: float | None
    q_value: float | None
    effect: dict[str, float | None]
    missing_reference: float | None
    missing_current: float | None
    missing_q_value: float | None
    drifted: bool
    reasons: tuple[str, ...] = ()
    decided: bool = True
    importance: float | None = None
    note: str | None = None
    plot: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        d.pop("plot")
        return d


def verdict(feature: Mapping[str, Any]) -> bool | str:
    """A feature's verdict as shown: drifted, not, or ``"undecided"`` (too few rows to test and no
    rule fired). A column whose missing rate alone drifted (every current value missing, so no
    distribution to test) is drifted, as the headline counts it, not undecided."""
    return feature["drifted"] if feature["decided"] or feature["drifted"] else "undecided"


@dataclass(frozen=True)
class WindowDrift:
    """One time window: its bounds, rows and verdict."""

    start: str
    end: str
    rows: int
    drift_detected: bool | None
    drifted: tuple[str, ...]
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "rows": self.rows, "drift_detected": self.drift_detected,
                "drifted": list(self.drifted), "note": self.note}


@dataclass(frozen=True)
class DriftReport:
    """What :func:`detect` found (``to_dict()`` is the ``--json`` document)."""

    drift_detected: bool
    reference: dict[str, Any]
    current: dict[str, Any]
    features: tuple[FeatureDrift, ...]
    multivariate: dict[str, Any] | None
    model: dict[str, Any] | None
    windows: tuple[WindowDrift, ...]
    schema_changes: tuple[dict[str, Any], ...]
    skipped: tuple[dict[str, Any], ...]
    options: DriftOptions
    seconds: float
    #: The model's importance summed over all its input columns, compared or not (excluded
    #: columns count as not drifted); None without a model or importances.
    importance_total: float | None = None

    @property
    def drifted(self) -> list[str]:
        """Names of the drifted features and outputs, most important first."""
        return [f.name for f in self.features if f.drifted]

    def importance_share(self) -> float | None:
        """Share of the model's importance carried by the drifted input features.

        Over all the model's input columns (model outputs and the label left out; a column not
        compared, such as one excluded, counts as not drifted); None when the model gave no
        importances (or no model was given).
        """
        inputs = [f for f in self.features if not f.name.startswith(("prediction:", "label:"))]
        total = self.importance_total or sum(f.importance or 0.0 for f in inputs)
        if total <= 0:
            return None
        return sum(f.importance or 0.0 for f in inputs if f.drifted) / total

    def to_dict(self) -> dict[str, Any]:
        return {
            "drift_detected": self.drift_detected, "drifted": self.drifted,
            "reference": self.reference, "current": self.current,
            "features": [f.to_dict() for f in self.features],
            "multivariate": self.multivariate, "model": self.model,
            "windows": [w.to_dict() for w in self.windows],
            "schema_changes": list(self.schema_changes), "skipped": list(self.skipped),
            "options": self.options.to_dict(), "seconds": self.seconds,
        }
