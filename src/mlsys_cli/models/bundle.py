"""The model bundle: one ``.mlsys`` file holding the whole pipeline from raw columns.

A :class:`ModelBundle` is a manifest plus a **predictor**. A predictor maps a raw frame to
scores (class probabilities ``[N, C]`` or values ``[N]``) and knows how to save itself under a
member prefix; its layout is recorded in ``manifest["predictor"]`` (with a ``kind``), so
loading needs nothing but the manifest. :class:`SinglePredictor` is one featurizer, one
estimator and an optional calibrator; other kinds (the ensemble) register themselves with
:func:`register_predictor`.

Loading goes through :class:`~mlsys_cli.bundle.BundleReader`: every member's sha256 is
checked and only trusted types are rebuilt, so a tampered bundle is refused (exit 3).
"""

from __future__ import annotations

import os
from pathlib import Path
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
    if kind not in PREDICTORS and kind == "ensemble":
        import importlib

        importlib.import_module("mlsys_cli.models.ensemble")  # registers itself on import
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


class ModelBundle:
    """A trained model with its manifest: what ``train`` writes and ``predict`` reads.

    Parameters
    ----------
    manifest : models.manifest.Manifest or its dict form
        Kept as a dict (``.manifest``; :attr:`record` is the typed view); ``predictor`` is
        filled in on save from the predictor's layout.
    predictor : SinglePredictor or another registered predictor kind
    """

    def __init__(self, manifest: Any, predictor: Any, path: str | None = None):
        from mlsys_cli.models.manifest import Manifest

        self.manifest = manifest.to_dict() if isinstance(manifest, Manifest) else dict(manifest)
        self.predictor = predictor
        self.path = path

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def target(self) -> str:
        return self.manifest["target"]

    @property
    def classes(self) -> list[Any] | None:
        return self.manifest.get("classes")

    @property
    def input_schema(self) -> list[dict[str, Any]]:
        return self.manifest["input_schema"]

    @property
    def threshold(self) -> float:
        """Decision threshold on P(second class) for binary labels."""
        return float(self.manifest.get("threshold", 0.5))

    def outputs(self, scores: Any) -> dict[str, Any]:
        """``predict``'s dict from the predictor's scores."""
        import numpy as np

        if self.task == "regression":
            return {"prediction": np.asarray(scores, dtype=np.float64).ravel()}
        proba = np.asarray(scores, dtype=np.float64)
        if self.task == "binary":
            index = (proba[:, 1] >= self.threshold).astype(np.int64)
        else:
            index = proba.argmax(axis=1)
        return {"probabilities": proba, "label": np.asarray(self.classes)[index]}

    def predict(self, df: Any) -> dict[str, Any]:
        """Predict raw rows.

        Returns
        -------
        dict
            ``probabilities`` [N, C] and ``label`` [N] (classification), or ``prediction`` [N].

        Raises
        ------
        InputError
            A column of the input schema is missing or holds values of the wrong type.
        """
        return self.outputs(self.predictor.predict_scores(df))

    def output_columns(self) -> list[str]:
        """The columns of :meth:`predict_frame`, in order."""
        if self.task == "regression":
            return ["prediction"]
        return ["label"] + [f"proba_{c}" for c in self.classes]

    def predict_frame(self, df: Any) -> Any:
        """Predictions as a pandas frame: ``label`` + ``proba_<class>``, or ``prediction``."""
        import pandas as pd

        out = self.predict(df)
        if self.task == "regression":
            return pd.DataFrame({"prediction": out["prediction"]})
        cols = {"label": out["label"]}
        cols.update({name: out["probabilities"][:, i] for i, name in enumerate(self.output_columns()[1:])})
        return pd.DataFrame(cols)

    @property
    def record(self) -> Any:
        """The manifest as a typed :class:`~mlsys_cli.models.manifest.Manifest`."""
        from mlsys_cli.models.manifest import Manifest

        return Manifest.from_dict(self.manifest, self.path or "manifest")

    def to_writer(self) -> Any:
        """A :class:`~mlsys_cli.bundle.BundleWriter` holding the manifest and every member."""
        from mlsys_cli.models.manifest import model_writer

        writer, layout = model_writer(self.record, self.predictor)
        self.manifest["predictor"] = layout
        return writer

    def save(self, path: str | os.PathLike) -> Path:
        """Write the bundle atomically (same model, same bytes)."""
        out = self.to_writer().write(path)
        self.path = str(path)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ModelBundle":
        """Open a model bundle, verifying its manifest and every member; a features bundle is refused (exit 3)."""
        from mlsys_cli.models.manifest import Manifest

        reader = _bundle.BundleReader(path, kind="model")
        manifest = reader.manifest
        Manifest.from_dict(manifest, path)
        if "predictor" not in manifest:
            raise InputError(f"{path}: model manifest has no 'predictor'")
        return cls(manifest, load_predictor(reader, "", manifest["predictor"]), path=str(path))
