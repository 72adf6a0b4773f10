"""An ONNX file written by ``mlsys export``, loaded as a model.

The file carries everything needed to use it: the graph (raw columns -> ``label`` +
``probabilities``, or ``prediction``), the bundle's manifest as JSON under the
``metadata_props`` key ``mlsys``, and under ``mlsys.sha256`` one sha256 over the graph *and* that
manifest: the manifest's class list, task and threshold change what a prediction means, so
editing any of it is refused like editing a weight. :class:`OnnxModel` verifies the hash, opens an onnxruntime session tuned for CPU serving,
maps a raw frame to the graph inputs through the canonical form
(``features.schema.canonicalize``) and returns the same outputs as ``ModelBundle.predict``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlsys_cli.errors import InputError

MANIFEST_KEY = "mlsys"
HASH_KEY = "mlsys.sha256"


def graph_digest(model: Any) -> str:
    """The sha256 of a model without its metadata (deterministic serialisation)."""
    import onnx

    from mlsys_cli.fsutil import sha256_bytes

    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.metadata_props[:]
    return sha256_bytes(bare.SerializeToString(deterministic=True))


def model_digest(model: Any, manifest_text: str) -> str:
    """The sha256 stamped under ``mlsys.sha256``: the graph (without metadata) and the manifest text."""
    from mlsys_cli.fsutil import sha256_bytes

    return sha256_bytes(f"{graph_digest(model)}\n{manifest_text}".encode())


def stamp(model: Any, manifest: dict[str, Any]) -> Any:
    """Put the manifest and the hash of graph + manifest into ``metadata_props`` (in place; returns model)."""
    from onnx import helper

    del model.metadata_props[:]
    text = json.dumps(manifest, sort_keys=True)
    helper.set_model_props(model, {MANIFEST_KEY: text, HASH_KEY: model_digest(model, text)})
    return model


def session_options(threads: int | None = None) -> Any:
    """onnxruntime settings for CPU serving.

    Full graph optimisation (constant folding, node fusion) is done once at load time;
    sequential execution because these graphs are mostly a chain, where the parallel
    executor only adds scheduling overhead; one intra-op thread by default, because
    requests are single rows or small micro-batches where a thread pool only adds
    synchronisation, and a server runs beside other processes: measured on a shared 2-core
    machine, one thread beat two on every 10,000-row batch too (1.5-2x,
    benchmarks/results/export.md). ``threads`` raises it for big offline batches.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


def parse_onnx(data: bytes, source: str) -> Any:
    import onnx
    from google.protobuf.message import DecodeError

    if not data:
        raise InputError(f"{source}: empty file")
    try:
        model = onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{source}: not a valid ONNX file ({type(exc).__name__})") from None
    if not model.graph.node and not model.graph.output:
        raise InputError(f"{source}: not a valid ONNX file (no graph)")
    return model


def read_metadata(model: Any, source: str) -> dict[str, Any]:
    """The verified mlsys manifest of a parsed ONNX model (exit 3 when absent or tampered)."""
    props = {p.key: p.value for p in model.metadata_props}
    if MANIFEST_KEY not in props:
        raise InputError(f"{source}: this ONNX file was not written by mlsys (no 'mlsys' metadata)",
                         "export a model bundle with: mlsys export model.mlsys -o model.onnx")
    if props.get(HASH_KEY) != model_digest(model, props[MANIFEST_KEY]):
        older = props.get(HASH_KEY) == graph_digest(model)  # mlsys < 0.2 hashed the graph alone
        raise InputError(f"{source}: the ONNX graph or its mlsys metadata fails its sha256 check",
                         "exported by an older mlsys; export it again" if older else
                         "the file was changed after export; export it again")
    try:
        manifest = json.loads(props[MANIFEST_KEY])
    except ValueError:
        raise InputError(f"{source}: the mlsys metadata is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "model":
        raise InputError(f"{source}: the mlsys metadata does not describe a model")
    _check_manifest(manifest, source)
    return manifest


def _check_manifest(manifest: dict[str, Any], source: str) -> None:
    """What predictions need from the metadata: a task, and for classification its classes."""
    task = manifest.get("task")
    if task not in ("binary", "multiclass", "regression"):
        raise InputError(f"{source}: the mlsys metadata has no valid task ({task!r})", "export the model bundle again")
    classes = manifest.get("classes")
    if task != "regression" and (not isinstance(classes, list) or len(classes) < 2 or len(set(map(str, classes))) != len(classes)):
        raise InputError(f"{source}: the mlsys metadata has no valid class list", "export the model bundle again")
    if not isinstance(manifest.get("input_schema"), list):
        raise InputError(f"{source}: the mlsys metadata has no input schema", "export the model bundle again")


class OnnxModel:
    """A model loaded from an mlsys ONNX file; answers like ``ModelBundle``.

    Parameters
    ----------
    path : path of the ``.onnx`` file
    threads : int, optional
        Intra-op threads (default 1, see :func:`session_options`).
    data : bytes, optional
        The file's bytes, when already read.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, data: bytes | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if data is None:
            if not self.path.is_file():
                raise InputError(f"{path}: no such file")
            data = self.path.read_bytes()
        model = parse_onnx(data, str(path))
        self.manifest: dict[str, Any] = read_metadata(model, str(path))
        self.size_bytes = len(data)
        self.opset = {o.domain or "ai.onnx": o.version for o in model.opset_import}
        try:
            self.session = ort.InferenceSession(data, sess_options=session_options(threads), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
            raise InputError(f"{path}: onnxruntime cannot load the graph ({str(exc).splitlines()[0]})") from None
        self._inputs = {i.name: i.type for i in self.session.get_inputs()}
        self._outputs = [o.name for o in self.session.get_outputs()]
        # InferenceSession.run checks the feed against the graph's inputs on every call, reading
        # each input's name and type through pybind (measured ~15 µs for the churn model's 16
        # inputs, a sixth of its one-row run); the feeds built here name every input, so call the
        # binding it wraps (same arguments; the public method where a version has no ``_sess``).
        self._run = getattr(self.session, "_sess", self.session).run
        self._graph_schema: list[dict[str, Any]] | None = None
        self._labels: tuple[dict[str, Any], Any] | None = None
        self._feed_groups: list[tuple[Any, tuple[str, ...]]] | None = None
        self._readers: dict[bool, Any] = {}

    @classmethod
    def load(cls, path: str | os.PathLike, threads: int | None = None) -> "OnnxModel":
        return cls(path, threads=threads)

    @classmethod
    def from_proto(cls, model: Any, threads: int | None = None, data: bytes | None = None,
                   source: str = "<in-memory ONNX model>") -> "OnnxModel":
        """Load an ``onnx.ModelProto`` (stamped by ``deploy.export.to_onnx``) without a file.

        ``data`` is the model's serialised bytes when already at hand.
        """
        return cls(source, threads=threads, data=model.SerializeToString() if data is None else data)

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def target(self) -> str | None:
        return self.manifest.get("target")

    @property
    def classes(self) -> list[Any]:
        return list(self.manifest.get("classes") or [])

    @property
    def input_schema(self) -> list[dict[str, Any]]:
        return list(self.manifest["input_schema"])

    def feeds(self, df: Any, strict: bool = False) -> dict[str, Any]:
        """The graph inputs for raw rows: one [N, 1] array per raw column, canonical form.

        ``df`` is a frame (pandas, pyarrow, polars) or a list of records (dicts); records take
        the pandas-free path of ``features.schema.canonical_records`` (one row in microseconds).
        ``strict`` (records only) refuses what the frame path treats as missing (see there).
        """
        from mlsys_cli.features.schema import canonical_arrays

        if isinstance(df, list):
            return self.feeds_from_canonical(self.record_reader(strict)(df))
        return self.feeds_from_canonical(canonical_arrays(df, self.graph_schema))

    def record_reader(self, strict: bool = False) -> Any:
        """The graph's :class:`~mlsys_cli.features.schema.RecordReader` (built once per ``strict``)."""
        reader = self._readers.get(strict)
        if reader is None:
            from mlsys_cli.features.schema import RecordReader

            reader = self._readers[strict] = RecordReader(self.graph_schema, strict)
        return reader

    @property
    def graph_schema(self) -> list[dict[str, Any]]:
        """The input-schema columns the graph reads (a column no transform uses has no input)."""
        if self._graph_schema is None:
            self._graph_schema = [c for c in self.input_schema if c["name"] in self._inputs]
        return self._graph_schema

    def feeds_from_canonical(self, canon: dict[str, Any]) -> dict[str, Any]:
        """Graph inputs from canonical arrays (``features.schema``): one [N, 1] array per input.

        The inputs of one dtype are converted together, into one array whose rows are the
        columns, each input a view of its row: for a few rows the cost is per NumPy call, so one
        call per dtype instead of two per input.
        """
        import numpy as np

        if self._feed_groups is None:
            kinds = {"tensor(string)": object, "tensor(int64)": np.int64, "tensor(double)": np.float64}
            groups: dict[Any, list[str]] = {}
            for name, kind in self._inputs.items():
                groups.setdefault(kinds.get(kind, np.float32), []).append(name)
            self._feed_groups = [(dtype, tuple(names)) for dtype, names in groups.items()]
        feeds: dict[str, Any] = {}
        for dtype, names in self._feed_groups:
            block = np.array([canon[name] for name in names], dtype=dtype)
            feeds.update(zip(names, block.reshape(len(names), block.shape[1], 1)))
        return feeds

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Run the graph on prepared inputs; outputs by name."""
        return dict(zip(self._outputs, self._run(self._outputs, feeds, None)))

    def predict(self, df: Any) -> dict[str, Any]:
        """Outputs for raw rows, like ``ModelBundle.predict``.

        Returns
        -------
        dict
            ``label`` [N] and ``probabilities`` [N, C] (float64) for classification,
            ``prediction`` [N] (float64) for regression.
        """
        return self.outputs(self.run(self.feeds(df)))

    def outputs(self, out: dict[str, Any]) -> dict[str, Any]:
        """``predict``'s dict from the graph's raw outputs (``run``)."""
        import numpy as np

        from mlsys_cli.models.bundle import as_probabilities

        if self.task == "regression":
            return {"prediction": np.asarray(out["prediction"], dtype=np.float64).reshape(-1)}
        labels = np.asarray(out["label"]).reshape(-1)
        lookup, dtype = self._label_lookup()
        # The graph holds labels as int64 or strings (from the manifest's classes); give back the
        # manifest's own values: one dict lookup per distinct label, indexed back (no loop per row).
        if len(labels) <= 64:  # a few rows (serving): a lookup each is cheaper than np.unique
            label = np.empty(len(labels), dtype=object)
            label[:] = [lookup.get(str(v), v) for v in labels.tolist()]
        else:
            distinct, index = np.unique(labels, return_inverse=True)
            mapped = np.array([lookup.get(str(v), v) for v in distinct.tolist()], dtype=object)
            label = mapped[index.reshape(-1)]
        if dtype is not None:
            label = label.astype(dtype)
        return {"label": label, "probabilities": as_probabilities(out["probabilities"])}

    def _label_lookup(self) -> tuple[dict[str, Any], Any]:
        """str(label) -> the manifest's class value, and the NumPy dtype of the labels (None: object)."""
        import numpy as np

        if self._labels is None:
            classes = self.classes
            dtype = None
            if classes and all(isinstance(c, bool) for c in classes):
                dtype = bool
            elif classes and all(isinstance(c, int) for c in classes):
                dtype = np.int64
            self._labels = ({str(c): c for c in classes}, dtype)
        return self._labels

    def predict_frame(self, df: Any) -> Any:
        """Outputs as a pandas frame: ``label`` + ``proba_<class>``, or ``prediction``."""
        import pandas as pd

        out = self.predict(df)
        if self.task == "regression":
            return pd.DataFrame({"prediction": out["prediction"]})
        frame = {"label": out["label"]}
        for i, c in enumerate(self.classes):
            frame[f"proba_{c}"] = out["probabilities"][:, i]
        return pd.DataFrame(frame)
