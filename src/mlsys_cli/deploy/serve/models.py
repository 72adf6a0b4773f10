"""The models a server answers with: loaded from a file or a registry, swapped atomically.

A :class:`ServedModel` is one loaded model with its name, version and role (``primary``,
``shadow``, ``canary``). ``.onnx`` files are served through onnxruntime; a ``.mlsys`` bundle is
turned into its ONNX graph in memory (``deploy.export.to_onnx``), checked against the bundle on
rows drawn from its reference statistics, and served through the graph too: one row costs
tens of microseconds in onnxruntime against milliseconds in the bundle's Python pipeline
(benchmarks/results/serve.md). A bundle whose graph cannot be built or disagrees is served
as a bundle.

Where a model comes from is a :class:`Source`: a callable returning a :class:`ModelRef`
(version, path). ``deploy`` knows files; the registry's champion pointer is read by a source
the CLI layer passes in (``continual`` sits above ``deploy``).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mlsys_cli.errors import InputError

ROLES = ("primary", "shadow", "canary")
PARITY_ROWS = 200


@dataclass(frozen=True)
class ModelRef:
    """Where a model is: its file, its version when the source knows one (a registry), and the
    sha256 the source recorded for the file (a registry's champion pointer), checked on loading."""

    path: Path
    version: str | None = None
    sha256: str | None = None


Source = Callable[[], ModelRef]


def file_source(path: str | os.PathLike) -> Source:
    """A source that always points at one file (its version is the file's sha256 prefix)."""
    ref = ModelRef(Path(path))
    return lambda: ref


def read_model_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a model bundle, verified (the one place serve reads a bundle's manifest)."""
    from mlsys_cli.models.manifest import read_manifest

    return read_manifest(path).to_dict()


class ServedModel:
    """One model being served.

    Parameters
    ----------
    engine : OnnxModel or ModelBundle
        What predicts.
    name, version, role : str
    manifest : dict
        The model's manifest (task, classes, input schema).
    """

    def __init__(self, engine: Any, name: str, version: str, role: str, manifest: dict[str, Any], path: Path):
        self.engine = engine
        self.name = name
        self.version = version
        self.role = role
        self.manifest = manifest
        self.path = path
        self.task: str = manifest["task"]
        self.classes: list[Any] = list(manifest.get("classes") or [])
        self.input_schema: list[dict[str, Any]] = list(manifest["input_schema"])
        self.kind = "onnx" if hasattr(engine, "session") else "bundle"
        self.header = f"{name}/{version}".encode()  # the x-mlsys-model header of its answers
        self.fingerprint: tuple | None = None  # the source's state it was loaded from (Slot)
        self.batcher: Any = None  # set by the app: how requests reach predict()
        from mlsys_cli.features.schema import RecordReader
        from mlsys_cli.features.unseen import UnseenCategories

        self._reader = RecordReader(self.input_schema, strict=True)
        self._unseen = UnseenCategories(self.input_schema)

    def read(self, kind: str, data: Any) -> dict[str, Any]:
        """Validated canonical arrays of ``records`` (a list of objects) or ``columns`` (V2: column ->
        values); InputError names the problem."""
        if kind == "records":
            return self._reader(data)
        from mlsys_cli.features.schema import canonical_columns

        return canonical_columns(data, self.input_schema, strict=True)

    def unseen(self, kind: str, data: Any) -> dict[str, dict[str, Any]]:
        """Per categorical column, the rows of validated ``records`` or ``columns`` holding a category
        this model never saw (:class:`~mlsys_cli.features.unseen.UnseenCategories`)."""
        return self._unseen.records(data) if kind == "records" else self._unseen.columns(data)

    def predict(self, canon: dict[str, Any]) -> dict[str, Any]:
        """Outputs (``ModelBundle.predict``'s dict) for canonical arrays."""
        if self.kind == "onnx":
            return self.engine.outputs(self.engine.run(self.engine.feeds_from_canonical(canon)))
        import pandas as pd

        # Canonical values are their own canonical form, so the bundle's featurizer takes them as raw.
        return self.engine.predict(pd.DataFrame(canon))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "role": self.role, "task": self.task,
                "engine": self.kind, "path": str(self.path)}


def _sha_version(path: Path) -> str:
    from mlsys_cli.fsutil import sha256_file

    return sha256_file(path)[:12]


def load_served(ref: ModelRef, name: str, role: str) -> ServedModel:
    """Load the model ``ref`` points at (exit 3 with the reason when it cannot be served)."""
    path = Path(ref.path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    if ref.sha256:  # a bundle replaced after it was registered is not served (retrain refuses it too)
        from mlsys_cli.fsutil import sha256_file

        actual = sha256_file(path)
        if actual != ref.sha256:
            raise InputError(f"{path}: the bundle of {ref.version} fails its sha256 check (recorded {ref.sha256[:12]}, "
                             f"found {actual[:12]})", "it was changed after it was registered; promote another "
                             "version: mlsys registry rollback DIR")
    version = ref.version or _sha_version(path)
    if path.suffix.lower() == ".onnx":
        from mlsys_cli.deploy.onnx_model import OnnxModel

        engine = OnnxModel.load(path)
        return ServedModel(engine, name, version, role, engine.manifest, path)
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a model (expected a .mlsys bundle or an .onnx file)")
    return ServedModel(_bundle_engine(path), name, version, role, read_model_manifest(path), path)


def _bundle_engine(path: Path) -> Any:
    """The bundle's ONNX graph in memory when it agrees with the bundle, else the bundle itself."""
    from mlsys_cli.deploy.export import check_parity, synthesize_rows, to_onnx
    from mlsys_cli.deploy.onnx_model import OnnxModel
    from mlsys_cli.models.bundle import ModelBundle

    bundle = ModelBundle.load(path)
    try:
        graph = OnnxModel.from_proto(to_onnx(bundle), source=str(path))
        rows = synthesize_rows(bundle.manifest, rows=PARITY_ROWS)
        if check_parity(bundle, graph, rows)["ok"]:
            return graph
    except InputError:
        pass  # no ONNX form for a piece of this model: the bundle answers
    return bundle


@dataclass
class Slot:
    """A role's model and where it comes from; ``current`` is replaced whole on reload."""

    role: str
    name: str
    source: Source
    current: ServedModel | None = None
    installed: tuple | None = None
    failed: tuple | None = None

    def fingerprint(self) -> tuple | None:
        """What the source points at now: the reference and the file's identity (None: unreadable)."""
        try:
            ref = self.source()
            st = Path(ref.path).stat()
        except (InputError, OSError):
            return None  # a pointer being replaced or a file being written: look again next time
        return (ref, st.st_ino, st.st_size, st.st_mtime_ns)

    def changed(self) -> bool:
        """Whether the source points at something else than the model serving (or the last failure)."""
        now = self.fingerprint()
        return now is not None and now != self.installed and now != self.failed

    def load(self) -> ServedModel:
        """Load and install the source's model (at start: a failure is exit 3)."""
        model, ref = self.prepare()
        self.install(model, ref)
        return model

    def prepare(self) -> tuple[ServedModel, ModelRef]:
        """Load the source's current model without installing it (raises like :func:`load_served`)."""
        before = self.fingerprint()
        ref = self.source()
        model = load_served(ref, self.name, self.role)
        model.fingerprint = before
        return model, ref

    def install(self, model: ServedModel, ref: ModelRef) -> None:
        """Make ``model`` the one answering: one reference assignment, atomic for every request."""
        self.current = model
        self.installed = model.fingerprint
        self.failed = None


def check_challenger(primary: ServedModel, other: ServedModel) -> None:
    """Refuse a shadow or canary that cannot answer the primary's requests (:class:`InputError`).

    Requests are validated against the primary's inputs and handed to the challenger as they
    are: it must answer the same question and read only columns the primary reads, as the same
    types (a column it lacks would make every canary answer a 422 and every shadow call fail).
    """
    if other.task != primary.task:
        raise InputError(f"the {other.role} model is {other.task}, the primary {primary.task}",
                         "a challenger must answer the same question")
    types = {c["name"]: c["type"] for c in primary.input_schema}
    absent = [c["name"] for c in other.input_schema if c["name"] not in types]
    differ = [f"{c['name']} ({c['type']}, the primary's {types[c['name']]})" for c in other.input_schema
              if c["name"] in types and types[c["name"]] != c["type"]]
    if absent or differ:
        what = (f"columns the primary's requests need not carry: {', '.join(absent)}" if absent
                else f"columns as other types: {', '.join(differ)}")
        raise InputError(f"the {other.role} model {other.name} ({other.version}) reads {what}",
                         "a challenger must read the primary's inputs: train it on the same columns")


def describe_error(exc: BaseException) -> str:
    """One line for a failed load (a reload failure is logged and counted, never raised)."""
    return exc.message if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
