"""features stage of the lifecycle: the Featurizer (fit on train only), roles, leakage, ONNX.

``from mlsys_cli.features import Featurizer`` loads the pipeline on first use, so importing a
submodule (``features.schema``) does not pull in scikit-learn.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Featurizer", "canonicalize", "infer_schema"]


def __getattr__(name: str) -> Any:
    if name == "Featurizer":
        from mlsys_cli.features.pipeline import Featurizer

        return Featurizer
    if name in ("canonicalize", "infer_schema"):
        from mlsys_cli.features import schema

        return getattr(schema, name)
    raise AttributeError(name)
