"""The model manifest, typed: what a model bundle says about itself, and how to make it again.

A model bundle's ``manifest.json`` has one shape whichever command wrote it (train, tune's kept
models and ``--save-model``, ensemble, compress):

- :class:`Recipe`: everything needed to train the same model again (family, task, target,
  parameters, seed, featurizer settings, weights, calibration, the command and the data
  fingerprints), plus what a command that is not ``train`` adds (the study and trial a tuned
  model came from, an ensemble's method and members, a compressed model's technique);
- :class:`Manifest`: the recipe with the metrics, baselines, reference statistics, input
  schema, importance, library versions and, once written, the predictor layout and the
  container's member hashes.

:func:`model_writer` is the one writer of model bundles (``ModelBundle.save`` goes through it)
and :func:`read_manifest` the one reader: it verifies the bundle (the manifest digest and every
member hash, see :mod:`mlsys_cli.bundle`) without deserialising any member, so a manifest can be
read, and a bundle checked, without loading the model. ``format`` is the schema version: a
bundle written before this schema (format 1) is refused with a rebuild hint (exit 3).
``Recipe.from_manifest(path)`` is what ``retrain`` calls to train a model again on new data.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from mlsys_cli import bundle as container
from mlsys_cli.errors import InputError

FORMAT_VERSION = container.FORMAT_VERSION

# Recipe keys every recipe writes (None when unused), then the ones only some commands add.
_RECIPE_CORE = ("family", "task", "target", "params", "seed", "features", "class_weight", "sample_weight",
                "calibrate", "fit", "command", "data")
_RECIPE_EXTRA = ("study", "method", "metric", "folds", "members", "compress")
_REQUIRED = ("task", "target", "input_schema", "recipe")


def frozen(value: Any) -> Any:
    """A read-only deep copy of a JSON-like value (mappings as MappingProxyType, lists as tuples)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: frozen(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(frozen(v) for v in value)
    return value


def plain(value: Any) -> Any:
    """The JSON-ready copy of a :func:`frozen` value (dicts and lists)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Recipe:
    """How a model was made: enough to train the same model again on the same (or newer) data.

    Parameters
    ----------
    family : str
        Family name (``xgboost``, ``linear``, ...; ``ensemble`` for an ensemble).
    task : {"binary", "multiclass", "regression"}
    target : str, optional
        The target column (the manifest's ``target`` when the recipe does not record it).
    params : mapping
        The family's resolved parameters (an ensemble: its combiner).
    seed : int
    features : mapping, optional
        Featurizer settings (``preset``, ``family``, ``task`` and options), or ``{"bundle": record}``
        for a features bundle used as fitted.
    class_weight, sample_weight, calibrate : str, optional
        ``train``'s ``--class-weight``, ``--sample-weight`` column and ``--calibrate`` method.
    fit : mapping, optional
        The fit's record (``n_estimators``, ``best_iteration``, ``stopped_by``).
    command : sequence of str, optional
        The command line that made the model.
    data : mapping, optional
        Fingerprints of the tables (``train``, ``valid``, ...: lists of input records).
    study, method, metric, folds, members, compress : optional
        What tune (``study``: name, trial, value), ensemble (``method``, ``metric``, ``folds``,
        ``members``) and compress (``compress``: technique, detail, the recipe it started from) add.
    """

    family: str
    task: str
    target: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    features: Mapping[str, Any] | None = None
    class_weight: str | None = None
    sample_weight: str | None = None
    calibrate: str | None = None
    fit: Mapping[str, Any] | None = None
    command: tuple[str, ...] | None = None
    data: Mapping[str, Any] | None = None
    study: Mapping[str, Any] | None = None
    method: str | None = None
    metric: str | None = None
    folds: int | None = None
    members: tuple[Mapping[str, Any], ...] | None = None
    compress: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, frozen(getattr(self, f.name)))

    def to_dict(self) -> dict[str, Any]:
        """The recipe as the manifest stores it (JSON-ready)."""
        out = {key: plain(getattr(self, key)) for key in _RECIPE_CORE}
        out.update({key: plain(getattr(self, key)) for key in _RECIPE_EXTRA if getattr(self, key) is not None})
        return out

    @classmethod
    def from_dict(cls, doc: Any, target: str | None = None, source: Any = "manifest") -> "Recipe":
        """A recipe from its manifest form; ``target`` fills in a recipe that does not record one.

        Raises
        ------
        InputError
            Not a mapping, no ``family`` or ``task``, or keys this mlsys does not know.
        """
        if not isinstance(doc, Mapping) or not doc.get("family") or not doc.get("task"):
            raise InputError(f"{source}: the manifest's recipe has no family or task")
        unknown = sorted(set(doc) - set(_RECIPE_CORE) - set(_RECIPE_EXTRA))
        if unknown:
            raise InputError(f"{source}: unknown recipe key(s) {', '.join(map(repr, unknown))}",
                             "the bundle was made by a newer mlsys")
        values = dict(doc)
        if values.get("target") is None:
            values["target"] = target
        return cls(**values)

    @classmethod
    def from_manifest(cls, path: str | os.PathLike) -> "Recipe":
        """The recipe of a model bundle (verified, nothing deserialised): what ``retrain`` reruns."""
        return read_manifest(path).recipe


@dataclass(frozen=True)
class Manifest:
    """A model bundle's manifest (ARCHITECTURE.md, "The model bundle").

    Parameters
    ----------
    task, target : str
    classes : sequence, optional
        Sorted class labels (classification).
    input_schema : sequence of mapping
        ``[{"name", "type", "role", "categories"}]`` of the raw input columns.
    recipe : Recipe
    metrics : mapping
        ``evaluated_on``, ``primary`` ({name, higher_is_better}), ``train``, ``valid``,
        ``baselines`` ({zero_rule, random}) and what a command adds.
    reference : mapping
        Reference statistics: ``features`` (per input column) and ``predictions`` (per output).
    libraries : mapping
        Library versions the model needs (``mlsys`` included).
    mlsys_version : str
    importance : sequence of mapping, optional
        ``[{"feature", "importance"}]``, most important first.
    threshold : float, optional
        Binary decision threshold on P(second class) (default 0.5).
    predictor : mapping, optional
        The predictor's layout (filled in by :func:`model_writer`).
    format, kind, members : optional
        The container's schema version, kind and member hashes (filled in when written).
    """

    task: str
    target: str
    input_schema: tuple[Mapping[str, Any], ...]
    recipe: Recipe
    classes: tuple[Any, ...] | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    reference: Mapping[str, Any] = field(default_factory=dict)
    libraries: Mapping[str, str] = field(default_factory=dict)
    mlsys_version: str | None = None
    importance: tuple[Mapping[str, Any], ...] | None = None
    threshold: float | None = None
    predictor: Mapping[str, Any] | None = None
    format: int | None = None
    kind: str | None = None
    members: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name != "recipe":
                object.__setattr__(self, f.name, frozen(getattr(self, f.name)))

    def to_dict(self) -> dict[str, Any]:
        """The manifest as ``manifest.json`` holds it (JSON-ready; unset optional keys left out)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "recipe":
                out["recipe"] = value.to_dict()
            elif value is not None or f.name in ("classes", "mlsys_version"):
                out[f.name] = plain(value)
        return out

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], source: Any = "manifest") -> "Manifest":
        """A manifest from its ``manifest.json`` form.

        Raises
        ------
        InputError
            A required key (``task``, ``target``, ``input_schema``, ``recipe``) is missing, or a
            key this mlsys does not know is present (a newer schema).
        """
        for key in _REQUIRED:
            if key not in doc:
                raise InputError(f"{source}: model manifest has no {key!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - names)
        if unknown:
            raise InputError(f"{source}: unknown manifest key(s) {', '.join(map(repr, unknown))}",
                             "the bundle was made by a newer mlsys")
        values = dict(doc)
        values["recipe"] = (doc["recipe"] if isinstance(doc["recipe"], Recipe)
                            else Recipe.from_dict(doc["recipe"], doc.get("target"), source))
        return cls(**values)

    def replace(self, **changes: Any) -> "Manifest":
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


def read_manifest(path: str | os.PathLike) -> Manifest:
    """The verified manifest of a model bundle; no member is deserialised.

    Raises
    ------
    InputError
        No such file, not a bundle, a features bundle, a bundle of an older format (rebuild
        hint), or a manifest or member that fails its sha256 check.
    """
    return Manifest.from_dict(container.BundleReader(path, kind="model").manifest, path)


def model_writer(manifest: Manifest | Mapping[str, Any], predictor: Any) -> tuple[Any, dict[str, Any]]:
    """The one writer of model bundles: a ``BundleWriter`` with the predictor's members and the manifest.

    Parameters
    ----------
    manifest : Manifest or its dict form
        Validated through :meth:`Manifest.from_dict`; ``predictor`` is replaced by the layout
        the predictor saves, ``format``, ``kind`` and ``members`` by the container's.
    predictor : object with ``save(writer, prefix) -> layout``

    Returns
    -------
    (BundleWriter, dict)
        The writer (``.write(path)`` or ``.to_bytes()``) and the predictor layout.
    """
    typed = manifest if isinstance(manifest, Manifest) else Manifest.from_dict(manifest)
    writer = container.BundleWriter("model")
    layout = predictor.save(writer, "")
    record = typed.replace(predictor=layout, format=None, kind=None, members=None)
    writer.manifest.update(record.to_dict())
    return writer, layout
