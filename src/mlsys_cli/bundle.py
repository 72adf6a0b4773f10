"""The ``.mlsys`` bundle container: one zip file, a manifest, hashed members, no pickle.

Features bundles and model bundles share this container (DESIGN.md section 4):

- ``manifest.json`` holds ``format``, ``kind``, whatever the stage records, and ``members``:
  the sha256 of every other member;
- fitted scikit-learn objects are stored with ``skops`` and loaded only when every type in
  them is in :data:`TRUSTED_TYPES`, a list written in our code (modules add their own classes
  with :func:`trust`), never read from the file;
- other members are bytes (XGBoost UBJSON, safetensors, JSON);
- ``manifest_sha256``, inside ``manifest.json``, is the sha256 of the canonical JSON of the
  rest of the manifest (:func:`canonical_json`: sorted keys, no spaces). The manifest holds
  every member's hash, so this one digest covers the whole file: an edited manifest (a class
  list, a metric) or an edited member is refused, and a bundle can be verified without
  deserialising anything. It detects corruption and hand edits, not a forger (who could
  recompute it): authenticity needs a signature, which is out of scope.

Loading checks the manifest digest and every member hash before anything is deserialised: a
changed byte is refused (exit 3). ``format`` is the container's schema version: bundles of
format 1 (mlsys before the manifest digest) are refused with a rebuild hint.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

from mlsys_cli.errors import InputError
from mlsys_cli.fsutil import atomic_path, sha256_bytes

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
DIGEST = "manifest_sha256"
TAMPERED = "the file was tampered with or damaged"
# What reading a damaged zip can raise: a bad header, a bad deflate stream (zlib.error), a
# compression method or flag changed in a header (NotImplementedError, RuntimeError), a
# truncated structure (EOFError, struct.error), bad JSON or UTF-8 (ValueError).
_DAMAGED = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, KeyError,
            NotImplementedError, RuntimeError, struct.error)
KINDS = ("features", "model")

# Types skops may rebuild. Scikit-learn's own building blocks we use are listed here; stages
# add their estimator classes with trust() when their module is imported.
TRUSTED_TYPES: set[str] = {
    "builtins.slice",
    "numpy.dtype",
    "numpy.ndarray",
    "numpy.float64",
    "numpy.float32",
    "numpy.int64",
    "numpy.int32",
    "numpy.bool_",
    "numpy.str_",
    "numpy.random._mt19937.MT19937",
    "numpy.random.mtrand.RandomState",
    "numpy.random._generator.Generator",
    "numpy.random._pcg64.PCG64",
    "collections.OrderedDict",
    "collections.defaultdict",
}


def trust(*type_names: str) -> None:
    """Allow these fully qualified types to be loaded from skops members."""
    TRUSTED_TYPES.update(type_names)


class BundleWriter:
    """Collects members and writes the bundle atomically.

    Parameters
    ----------
    kind : {"features", "model"}
    manifest : dict
        Everything the stage records; ``format``, ``kind`` and ``members`` are filled in.
    """

    def __init__(self, kind: str, manifest: dict[str, Any] | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown bundle kind {kind!r}")
        self.kind = kind
        self.manifest: dict[str, Any] = dict(manifest or {})
        self._members: dict[str, bytes] = {}

    def add_bytes(self, name: str, data: bytes) -> None:
        if name == MANIFEST or name in self._members:
            raise ValueError(f"duplicate bundle member {name!r}")
        self._members[name] = bytes(data)

    def add_json(self, name: str, obj: Any) -> None:
        self.add_bytes(name, json.dumps(obj, sort_keys=True, indent=1).encode())

    def add_skops(self, name: str, obj: Any) -> None:
        sio = skops_io()
        self.add_bytes(name, _canonical_skops(sio.dumps(obj)))

    def to_bytes(self) -> bytes:
        """The bundle as bytes (deterministic: fixed member order and timestamps)."""
        manifest = dict(self.manifest)
        manifest.pop(DIGEST, None)
        manifest["format"] = FORMAT_VERSION
        manifest["kind"] = self.kind
        manifest["members"] = {name: sha256_bytes(data) for name, data in sorted(self._members.items())}
        # Digest what a reader will parse (JSON turns tuples into lists, keys into strings).
        manifest = json.loads(json.dumps(manifest))
        manifest[DIGEST] = manifest_digest(manifest)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in [(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode()), *sorted(self._members.items())]:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, data)
        return buf.getvalue()

    def write(self, path: str | os.PathLike) -> Path:
        """Write the bundle to ``path`` atomically."""
        data = self.to_bytes()
        with atomic_path(path, suffix=".mlsys") as tmp:
            tmp.write_bytes(data)
        return Path(path)


def canonical_json(obj: Any) -> bytes:
    """The canonical bytes of a JSON value: sorted keys, no whitespace, ASCII."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON, without its own ``manifest_sha256`` key."""
    return sha256_bytes(canonical_json({k: v for k, v in manifest.items() if k != DIGEST}))


def _canonical_skops(data: bytes) -> bytes:
    """Make a skops file depend only on the object: same object, same bytes.

    skops names members and memo ids after ``id(obj)`` (memory addresses) and stamps zip
    entries with the current time; both are renumbered/fixed here so bundles are reproducible.
    Structured arrays (scikit-learn's tree nodes) carry padding bytes that hold whatever was in
    memory; they are rewritten with the padding zeroed.
    """
    import re

    src = zipfile.ZipFile(io.BytesIO(data))
    ids: dict[str, str] = {}

    def renumber(old: Any) -> str:
        return ids.setdefault(str(old), str(len(ids) + 1))

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if key == "__id__" and isinstance(value, int):
                out[key] = int(renumber(value))
            elif key == "file" and isinstance(value, str) and re.fullmatch(r"\d+\.\w+", value):
                stem, ext = value.split(".", 1)
                out[key] = f"{renumber(stem)}.{ext}"
            else:
                out[key] = walk(value)
        return out

    schema = walk(json.loads(src.read("schema.json")))
    members = {"schema.json": json.dumps(schema, indent=2).encode()}
    for name in src.namelist():
        if name != "schema.json":
            stem, ext = name.split(".", 1)
            payload = src.read(name)
            members[f"{renumber(stem)}.{ext}"] = _zero_padding(payload) if ext == "npy" else payload
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, payload in sorted(members.items()):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, payload)
    return buf.getvalue()


def _zero_padding(npy: bytes) -> bytes:
    """A ``.npy`` payload whose structured dtype has padding, rewritten with the padding zeroed."""
    import numpy as np

    arr = np.load(io.BytesIO(npy), allow_pickle=False)
    names = arr.dtype.names
    if not names or sum(arr.dtype.fields[n][0].itemsize for n in names) == arr.dtype.itemsize:
        return npy
    clean = np.zeros(arr.shape, dtype=arr.dtype)
    for name in names:
        clean[name] = arr[name]
    out = io.BytesIO()
    np.save(out, clean, allow_pickle=False)
    return out.getvalue()


class BundleReader:
    """An opened, verified bundle.

    Parameters
    ----------
    path : path of a ``.mlsys`` file
    kind : str, optional
        Refuse a bundle of another kind (exit 3) when given.
    """

    def __init__(self, path: str | os.PathLike, kind: str | None = None, data: bytes | None = None):
        self.path = Path(path)
        if data is None:
            if not self.path.exists():
                raise InputError(f"{path}: no such file")
            data = self.path.read_bytes()
        if not data:
            raise InputError(f"{path}: empty file")
        if not data.startswith(b"PK"):  # not a zip at all (an ONNX graph, a table...): not a damaged bundle
            raise InputError(f"{path}: not an mlsys bundle",
                             "this needs the .mlsys bundle (an ONNX export lacks its reference statistics and recipe)"
                             if self.path.suffix.lower() == ".onnx" else None)
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
            names = set(zf.namelist())
            if MANIFEST not in names:
                raise InputError(f"{path}: not an mlsys bundle (no manifest.json)")
            manifest = json.loads(zf.read(MANIFEST))
            members = {n: zf.read(n) for n in names if n != MANIFEST}
        except _DAMAGED as exc:
            # A damaged zip or deflate stream is a damaged bundle, never a crash.
            raise InputError(f"{path}: not a valid mlsys bundle ({type(exc).__name__}: {exc})",
                             "the file may be truncated or damaged; rebuild it") from None
        self.manifest: dict[str, Any] = verify(path, manifest, members)
        self._members = members
        if kind is not None and self.manifest.get("kind") != kind:
            raise InputError(f"{path}: is a {self.manifest.get('kind')} bundle, expected a {kind} bundle")
        self.kind: str = self.manifest.get("kind", "")

    def names(self) -> list[str]:
        return sorted(self._members)

    def bytes(self, name: str) -> bytes:
        try:
            return self._members[name]
        except KeyError:
            raise InputError(f"{self.path}: bundle has no member {name!r}") from None

    def json(self, name: str) -> Any:
        return json.loads(self.bytes(name))

    def skops(self, name: str) -> Any:
        """Load a skops member, refusing any type not in :data:`TRUSTED_TYPES`."""
        sio = skops_io()
        data = self.bytes(name)
        try:
            untrusted = set(sio.get_untrusted_types(data=data))
        except Exception as exc:
            raise InputError(f"{self.path}: member {name!r} is not a valid skops file ({exc})") from None
        unknown = sorted(untrusted - TRUSTED_TYPES)
        if unknown:
            raise InputError(f"{self.path}: member {name!r} holds types mlsys does not trust: {', '.join(unknown[:5])}")
        return sio.loads(data, trusted=sorted(untrusted))


def verify(path: Any, manifest: Any, members: dict[str, bytes]) -> dict[str, Any]:
    """The manifest without its digest, once the digest and every member hash match.

    Raises
    ------
    InputError
        Not a manifest of a supported format, a format-1 bundle (no digest: rebuild it), a
        manifest whose digest does not match, or members that are missing, extra or changed.
    """
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt == 1:
        raise InputError(f"{path}: written by an older mlsys (bundle format 1, whose manifest is not integrity-checked)",
                         "rebuild it with this mlsys: rerun the command recorded under recipe.command "
                         f"(unzip -p {path} manifest.json)")
    if fmt != FORMAT_VERSION:
        raise InputError(f"{path}: unsupported bundle format {fmt!r}", "it was made by another mlsys version; rebuild it")
    if manifest.get(DIGEST) != manifest_digest(manifest):
        raise InputError(f"{path}: manifest.json fails its sha256 check", TAMPERED)
    manifest = {k: v for k, v in manifest.items() if k != DIGEST}
    declared = manifest.get("members")
    if not isinstance(declared, dict) or set(declared) != set(members):
        extra = sorted(set(members) ^ set(declared if isinstance(declared, dict) else {}))
        raise InputError(f"{path}: bundle members do not match its manifest ({', '.join(extra[:3])})", TAMPERED)
    for name, digest in declared.items():
        if sha256_bytes(members[name]) != digest:
            raise InputError(f"{path}: member {name!r} fails its sha256 check", TAMPERED)
    return manifest


# sklearn's array-API adapters that import their library (see skops_io).
SKOPS_SKIPPED_SHIMS = ("sklearn.externals.array_api_compat.torch", "sklearn.externals.array_api_compat.dask")


def skops_io() -> Any:
    """``skops.io``, imported without importing torch or dask.array.

    Importing skops.io lists scikit-learn's estimators, which walks and imports every sklearn
    package, including its array-API shims for torch and Dask, which import torch and
    dask.array (1.4 s and 0.2 s here, for every bundle opened by predict or evaluate) before
    ``externals`` is skipped. A placeholder stands in for each shim during the import only;
    sklearn imports the real one later if it ever needs it.
    """
    import sys
    import types

    placeholders = {}
    if "skops.io" not in sys.modules:
        for shim in SKOPS_SKIPPED_SHIMS:
            if shim not in sys.modules:
                placeholders[shim] = sys.modules[shim] = types.ModuleType(shim)
    try:
        import skops.io as sio
    finally:
        for shim, placeholder in placeholders.items():
            if sys.modules.get(shim) is placeholder:
                del sys.modules[shim]
    return sio


def library_versions(names: list[str]) -> dict[str, str]:
    """Installed versions of ``names`` (those present) and of mlsys, for a manifest."""
    import importlib.metadata as md

    from mlsys_cli import __version__

    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    out["mlsys"] = __version__
    return out


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The verified manifest of a bundle (members are checked, not deserialised)."""
    return BundleReader(path).manifest
