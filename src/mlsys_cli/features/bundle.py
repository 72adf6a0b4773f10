"""Features bundles (``kind: features``): one fitted Featurizer and its manifest."""

from __future__ import annotations

import os
from typing import Any, Mapping

from mlsys_cli.bundle import BundleReader, BundleWriter, library_versions
from mlsys_cli.errors import InputError

PREFIX = "features/"


def libraries() -> dict[str, str]:
    """Versions of the libraries a fitted featurizer depends on."""
    return library_versions(["numpy", "pandas", "pyarrow", "scikit-learn", "skops", "onnx"])


def manifest_of(featurizer: Any, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of a features bundle: what the featurizer is, and how it was made."""
    spec = {k: (list(v) if isinstance(v, tuple) else v) for k, v in featurizer.get_params().items()}
    return {
        "target": featurizer.target,
        "task": featurizer.task_,
        "classes": featurizer.classes_,
        "input_schema": featurizer.input_schema_,
        "roles": featurizer.roles_,
        "features": featurizer.get_feature_names_out(),
        "n_features": featurizer.n_features_out_,
        "preset": featurizer.preset_,
        "spec": spec,
        "report": featurizer.report_,
        "libraries": libraries(),
        **dict(extra or {}),
    }


def write_features_bundle(featurizer: Any, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> None:
    """Write a fitted featurizer as a features bundle, atomically."""
    writer = BundleWriter("features", manifest_of(featurizer, extra))
    featurizer.save(writer, prefix=PREFIX)
    writer.write(path)


def load_features_bundle(path: str | os.PathLike, target: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The fitted Featurizer of a features bundle and its manifest.

    Raises
    ------
    InputError
        Not a features bundle, tampered or truncated, or fitted for another target than ``target``.
    """
    from mlsys_cli.features.pipeline import Featurizer

    reader = BundleReader(path, kind="features")
    fitted_for = reader.manifest.get("target")
    if target is not None and fitted_for is not None and fitted_for != target:
        raise InputError(f"{path}: features were fitted for target {fitted_for!r}, not {target!r}",
                         f"refit them: mlsys featurize TRAIN --target {target} -o features.mlsys")
    return Featurizer.load(reader, prefix=PREFIX), reader.manifest
