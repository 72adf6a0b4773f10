"""The model bundle: one ``.mlsys`` file holding the whole pipeline from raw columns.

A :class:`ModelBundle` is a manifest (:mod:`.manifest`) plus a **predictor** (:mod:`.predictors`):
``predict`` turns the predictor's scores into labels and probabilities, or values. Saving goes
through the one model-bundle writer (``manifest.model_writer``).

Loading goes through :class:`~mlsys_cli.bundle.BundleReader`: every member's sha256 is
checked and only trusted types are rebuilt, so a tampered bundle is refused (exit 3).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mlsys_cli import bundle as _bundle
from mlsys_cli.errors import InputError
from mlsys_cli.models.predictors import load_predictor

def as_probabilities(scores: Any) -> Any:
    """Class probabilities ``[N, C]`` as float64 rows that sum to 1 (to float64 precision).

    Predictors and ONNX graphs compute in float32, so their rows sum to 1 only within ~1e-7;
    every output path (``predict``, ``serve``, ``evaluate``, from a bundle or an ONNX file)
    goes through this one function, so they all print the same, exactly normalised values.
    A row summing to 0 (or not finite) is left as it is rather than divided into NaN.
    """
    import numpy as np

    proba = np.array(scores, dtype=np.float64, copy=True)
    total = proba.sum(axis=1, keepdims=True)
    good = np.isfinite(total) & (total > 0)
    np.divide(proba, total, out=proba, where=good)
    return proba


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
        proba = as_probabilities(scores)
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
