"""Predictors: what a model bundle holds, from raw rows to scores.

A predictor maps a raw frame to scores (class probabilities ``[N, C]`` or values ``[N]``) and
knows how to save itself under a member prefix; its layout (with a ``kind``) goes into the
manifest's ``predictor`` key, so loading needs nothing but the manifest.
:class:`SinglePredictor` is one featurizer, one estimator and an optional :class:`Calibrator`;
the ensemble (``models.combiner.EnsemblePredictor``) is registered on first use, and other
kinds register themselves with :func:`register_predictor`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from mlsys_cli import bundle as _bundle
from mlsys_cli.errors import InputError

_bundle.trust("sklearn.isotonic.IsotonicRegression", "sklearn.linear_model._logistic.LogisticRegression")

CALIBRATION_METHODS = ("isotonic", "sigmoid")

# kind -> loader(reader, prefix, layout) -> predictor
PREDICTORS: dict[str, Callable[[Any, str, Mapping[str, Any]], Any]] = {}


def register_predictor(kind: str, loader: Callable[[Any, str, Mapping[str, Any]], Any]) -> None:
    """Make predictors of ``kind`` loadable (``loader(reader, prefix, layout)``)."""
    PREDICTORS[kind] = loader


def load_predictor(reader: Any, prefix: str, layout: Mapping[str, Any]) -> Any:
    """Rebuild the predictor described by ``layout`` from members under ``prefix``."""
    kind = layout.get("kind") if isinstance(layout, Mapping) else None
    if kind == "ensemble" and kind not in PREDICTORS:
        from mlsys_cli.models.combiner import EnsemblePredictor

        # Its members are predictors again: the combiner module gets this loader, not the registry.
        register_predictor(kind, lambda r, p, lay: EnsemblePredictor.load(r, p, lay, load_member=load_predictor))
    if kind not in PREDICTORS:
        raise InputError(f"{reader.path}: unknown predictor kind {kind!r}", "the bundle was made by a newer mlsys")
    return PREDICTORS[kind](reader, prefix, layout)


class Calibrator:
    """Maps a classifier's probabilities to calibrated ones (fit on held-out rows).

    Parameters
    ----------
    method : {"isotonic", "sigmoid"}
        ``isotonic``: scikit-learn ``IsotonicRegression`` on each class probability;
        ``sigmoid`` (Platt): a one-feature ``LogisticRegression`` on the logit of each class
        probability. Multiclass calibrates each class one-vs-rest and renormalizes the rows.

    Attributes
    ----------
    models_ : list
        One fitted scikit-learn model per calibrated column (one for binary).
    """

    def __init__(self, method: str = "isotonic"):
        self.method = method

    @staticmethod
    def _logit(p: Any) -> Any:
        import numpy as np

        p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
        return np.log(p / (1 - p)).reshape(-1, 1)

    def _columns(self, proba: Any) -> list[int]:
        return [1] if proba.shape[1] == 2 else list(range(proba.shape[1]))

    def fit(self, proba: Any, y: Any, sample_weight: Any = None) -> "Calibrator":
        """Fit on probabilities ``[N, C]`` and class indices ``y``."""
        import numpy as np
        from sklearn.isotonic import IsotonicRegression
        from sklearn.linear_model import LogisticRegression

        if self.method not in CALIBRATION_METHODS:
            raise ValueError(f"unknown calibration method {self.method!r}")
        y = np.asarray(y)
        self.models_ = []
        for k in self._columns(proba):
            target = (y == k).astype(int)
            if self.method == "isotonic":
                model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
                model.fit(proba[:, k], target, sample_weight=sample_weight)
            else:
                model = LogisticRegression(C=1e6)
                model.fit(self._logit(proba[:, k]), target, sample_weight=sample_weight)
            self.models_.append(model)
        return self

    def transform(self, proba: Any) -> Any:
        """Calibrated probabilities ``[N, C]`` (rows sum to 1)."""
        import numpy as np

        cols = self._columns(proba)
        out = np.array(proba, dtype=float, copy=True)
        for k, model in zip(cols, self.models_):
            if self.method == "isotonic":
                out[:, k] = model.predict(proba[:, k])
            else:
                out[:, k] = model.predict_proba(self._logit(proba[:, k]))[:, 1]
        if len(cols) == 1:
            out[:, 0] = 1.0 - out[:, 1]
            return out
        total = out.sum(axis=1, keepdims=True)
        uniform = np.full_like(out, 1.0 / out.shape[1])
        return np.where(total > 0, out / np.where(total > 0, total, 1.0), uniform)

    def save(self, writer: Any, prefix: str) -> dict[str, Any]:
        for i, model in enumerate(self.models_):
            writer.add_skops(f"{prefix}calibrator/{i}.skops", model)
        return {"method": self.method, "n_models": len(self.models_)}

    @classmethod
    def load(cls, reader: Any, prefix: str, layout: Mapping[str, Any]) -> "Calibrator":
        cal = cls(layout["method"])
        cal.models_ = [reader.skops(f"{prefix}calibrator/{i}.skops") for i in range(int(layout["n_models"]))]
        return cal


class SinglePredictor:
    """One fitted featurizer, one fitted estimator of a family, and an optional calibrator.

    Parameters
    ----------
    featurizer : features.Featurizer (fitted)
    family : models.families.Family
    estimator : fitted estimator of ``family``
    spec : dict
        ``family.spec(...)``: task, n_classes, params, seed, fit info.
    calibrator : Calibrator, optional
    """

    kind = "single"

    def __init__(self, featurizer: Any, family: Any, estimator: Any, spec: Mapping[str, Any], calibrator: Calibrator | None = None):
        self.featurizer = featurizer
        self.family = family
        self.estimator = estimator
        self.spec = dict(spec)
        self.calibrator = calibrator

    @property
    def task(self) -> str:
        return self.spec["task"]

    @property
    def input_schema(self) -> list[dict[str, Any]]:
        return list(self.featurizer.input_schema_)

    def scores_from_features(self, X: Any, calibrated: bool = True) -> Any:
        """Probabilities ``[N, C]`` or values ``[N]`` from a featurized matrix."""
        import numpy as np

        if self.task == "regression":
            return np.asarray(self.estimator.predict(X), dtype=np.float64).ravel()
        proba = np.asarray(self.estimator.predict_proba(X), dtype=np.float64)
        if calibrated and self.calibrator is not None:
            proba = self.calibrator.transform(proba)
        return proba

    def predict_scores(self, df: Any) -> Any:
        """Probabilities ``[N, C]`` or values ``[N]`` for raw rows."""
        return self.scores_from_features(self.featurizer.transform(df, dtype=self.family.input_dtype))

    def save(self, writer: Any, prefix: str) -> dict[str, Any]:
        """Add members under ``prefix``; returns the layout for the manifest."""
        self.featurizer.save(writer, prefix=f"{prefix}features/")
        self.family.save(self.estimator, writer, f"{prefix}model/")
        layout: dict[str, Any] = {"kind": self.kind, "family": self.family.name, "estimator": self.spec,
                                  "calibrator": None}
        if self.calibrator is not None:
            layout["calibrator"] = self.calibrator.save(writer, prefix)
        return layout

    @classmethod
    def load(cls, reader: Any, prefix: str, layout: Mapping[str, Any]) -> "SinglePredictor":
        from mlsys_cli.features import Featurizer
        from mlsys_cli.models.families import get_family

        try:
            family = get_family(layout["family"])
            spec = layout["estimator"]
            featurizer = Featurizer.load(reader, prefix=f"{prefix}features/")
            estimator = family.load(reader, f"{prefix}model/", spec)
            cal = layout.get("calibrator")
            calibrator = Calibrator.load(reader, prefix, cal) if cal else None
        except (KeyError, TypeError) as exc:
            raise InputError(f"{reader.path}: invalid predictor layout ({type(exc).__name__}: {exc})") from None
        return cls(featurizer, family, estimator, spec, calibrator)


register_predictor(SinglePredictor.kind, SinglePredictor.load)
