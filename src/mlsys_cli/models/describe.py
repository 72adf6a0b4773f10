"""``mlsys info`` for bundles: the manifest of a model or features bundle, verified first."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class BundleInfo:
    """A verified bundle's manifest, as ``mlsys info`` shows it.

    ``to_dict()`` is the manifest itself plus ``path`` and ``size_bytes``, so
    ``mlsys info model.mlsys --json | jq .metrics`` reads the manifest's keys directly.
    """

    path: str
    size_bytes: int
    manifest: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.manifest.get("kind"))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "size_bytes": self.size_bytes,
                **{k: v for k, v in self.manifest.items() if k != "kind"}}

    def render(self, ui: Any) -> None:
        """Human view through the cli's console module (``kv``, ``records``)."""
        m = self.manifest
        head = {"kind": self.kind, "format": m.get("format"), "size_bytes": self.size_bytes,
                "task": m.get("task"), "target": m.get("target")}
        if m.get("classes") is not None:
            head["classes"] = ", ".join(map(str, m["classes"]))
        ui.kv(self.path, {k: v for k, v in head.items() if v is not None})
        if self.kind == "model":
            self._render_model(ui, m)
        else:
            ui.kv("manifest", {k: v for k, v in m.items() if isinstance(v, _SCALARS) and k not in head})
        schema = m.get("input_schema") or []
        if schema:
            ui.records("input schema", [{**c, "categories": len(c.get("categories") or [])} for c in schema],
                       ["name", "type", "role", "categories"])
        roles = m.get("roles")
        if isinstance(roles, dict) and roles:
            ui.records("roles", [{"column": k, **v} for k, v in roles.items() if isinstance(v, dict)],
                       ["column", "role", "reason"])
        if m.get("libraries"):
            ui.kv("libraries", m["libraries"])
        ui.kv("members", {name: digest[:16] for name, digest in (m.get("members") or {}).items()})

    @staticmethod
    def _render_model(ui: Any, m: dict[str, Any]) -> None:
        recipe = m.get("recipe") or {}
        predictor = m.get("predictor") or {}
        data = recipe.get("data") or {}
        ui.kv("recipe", {
            "predictor": predictor.get("kind"), "family": recipe.get("family"), "params": recipe.get("params"),
            "seed": recipe.get("seed"), "features": recipe.get("features"), "class_weight": recipe.get("class_weight"),
            "sample_weight": recipe.get("sample_weight"), "calibrate": recipe.get("calibrate"), "fit": recipe.get("fit"),
            "command": " ".join(recipe.get("command") or []),
            **{f"data.{role}": ", ".join(f"{r['path']} ({r['sha256'][:12]})" for r in records)
               for role, records in data.items() if records},
        })
        metrics = m.get("metrics") or {}
        rows = [{"model": f"model ({split})", **values} for split in ("train", "valid")
                if isinstance(values := metrics.get(split), dict)]
        rows += [{"model": name, **values} for name, values in (metrics.get("baselines") or {}).items()]
        if rows:
            columns = ["model"] + [k for k in rows[0] if k != "model"]
            ui.records(f"metrics (baselines on {metrics.get('evaluated_on')})", rows, columns)
        if m.get("importance"):
            ui.records("top features", m["importance"][:10], ["feature", "importance"])


def describe_bundle(path: str | os.PathLike) -> BundleInfo:
    """Open and verify a bundle (every member's sha256) and describe its manifest."""
    from mlsys_cli.bundle import BundleReader

    reader = BundleReader(path)
    return BundleInfo(path=str(path), size_bytes=os.path.getsize(path), manifest=reader.manifest)
