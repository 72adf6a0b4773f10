"""The index of the model families: each family's name and the featurizer preset it uses.

This is the one place a family is named outside its own class: ``models.families`` registers
one :class:`~mlsys_cli.models.family.Family` object under each name here (a test checks that
the two agree), ``Family.preset`` reads its preset from here, the featurizer resolves
``preset="auto"`` for a family with it (features must not import models), and ``mlsys train
--help`` lists the names without importing the models layer (this module imports nothing).
Adding a family: one line here, one Family subclass in ``models.families``, and its tests.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

# Trees split on raw values and route missing values themselves; linear models and networks need
# imputed, scaled, one-hot features (features.pipeline.PRESETS defines each preset).
FAMILY_PRESETS: Mapping[str, str] = MappingProxyType({
    "baseline": "trees", "linear": "linear", "forest": "trees", "xgboost": "trees", "hgb": "trees", "mlp": "mlp",
})
FAMILIES: tuple[str, ...] = tuple(FAMILY_PRESETS)
