"""mlsys registry: list, show, promote, roll back and prune the versions of a model registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mlsys_cli import console
from mlsys_cli.cli._common import DURATION_MAX, JsonOpt, ReportOpt, epilog, integer, number

group = typer.Typer(no_args_is_help=True, rich_markup_mode=None, add_completion=False)

RegistryArg = Annotated[Path, typer.Argument(help="The registry directory (as given to retrain --registry).")]
WaitOpt = Annotated[Optional[float], typer.Option("--wait", click_type=number(0, DURATION_MAX), help="Wait up to SECONDS for the lock (default: exit 5 at once).")]
ReasonOpt = Annotated[Optional[str], typer.Option("--reason", help="Why: recorded in the history.")]


@group.callback()
def command() -> None:
    """Inspect and change the model registry.

    A registry is a directory of versioned model bundles, a champion pointer
    replaced atomically, an append-only history.jsonl and a lock. list and
    show only read; promote, rollback and prune take the lock (exit 5 when
    another writer holds it) and log who, when and why.

    Examples:

        mlsys registry list models/

        mlsys registry show models/ v0003 --json

        mlsys registry rollback models/ --reason "bad predictions since 02:00"
    """


def _emit(result: Any, as_json: bool, report: Optional[Path], human: Any) -> None:
    console.emit(result, as_json=as_json, report=str(report) if report else None, human=human, warnings=_warnings)


def _warnings(d: dict[str, Any]) -> list[str]:
    return [f"recovered: {r['detail']}" for r in d.get("recovered") or []] + list(d.get("warnings") or [])


def _human_list(result: Any) -> None:
    d = result.to_dict()
    console.kv(f"registry {d['registry']}", {"champion": d["champion"] or "-", "versions": len(d["versions"]),
                                             "history events": d["events"]})
    rows = [{**r, "champion": "*" if r["champion"] else ""} for r in d["versions"]]
    console.records("versions", rows, ["version", "champion", "status", "created", "parent", "family", "metric",
                                       "challenger", "champion_value", "rows", "reason"])


def _human_show(result: Any) -> None:
    d = result.to_dict()
    v = d["version"]
    console.kv(f"{v['version']}{' (champion)' if d['champion'] else ''}", {
        "status": v["status"], "reason": v["reason"], "created": v["created"], "parent": v["parent"] or "-",
        "bundle": v["bundle"], "sha256": v["sha256"], "recipe": v["recipe"], "data": v["data"],
        "trigger": v["trigger"] or "-", "who": v["who"]})
    if v["metrics"].get("comparison"):
        console.records("champion vs challenger on the held-out slice", v["metrics"]["comparison"])
    console.records("history", [{"time": e.get("time"), "event": e.get("event"), "decision": e.get("decision", ""),
                                 "champion": e.get("champion"), "reason": e.get("reason") or e.get("detail", "")}
                                for e in d["events"]], ["time", "event", "decision", "champion", "reason"])


def _human_change(result: Any) -> None:
    d = result.to_dict()
    if d["action"] == "prune":
        verb = "would remove" if d["dry_run"] else "removed"
        console.kv(f"prune {d['registry']}", {verb: ", ".join(d["removed"]) or "nothing", "champion": d["champion"] or "-"})
        return
    console.kv(f"{d['action']} {d['registry']}", {"champion": d["champion"], "previous": d["previous"] or "-",
                                                   "reason": (d["event"] or {}).get("reason", "")})


@group.command("list", epilog=epilog("registry"))
def list_(registry: RegistryArg, json_: JsonOpt = False, report: ReportOpt = None) -> None:
    """List the versions, the champion marked (reads only)."""
    from mlsys_cli.continual.registry import list_versions

    _emit(list_versions(registry), json_, report, _human_list)


@group.command("show", epilog=epilog("registry"))
def show(registry: RegistryArg,
         version: Annotated[Optional[str], typer.Argument(help="The version, e.g. v0003 (default: the champion).")] = None,
         json_: JsonOpt = False, report: ReportOpt = None) -> None:
    """Show one version: record, metrics, history (reads only)."""
    from mlsys_cli.continual.registry import show_version

    _emit(show_version(registry, version), json_, report, _human_show)


@group.command("promote", epilog=epilog("registry"))
def promote(registry: RegistryArg, version: Annotated[str, typer.Argument(help="The version to serve, e.g. v0003.")],
            reason: ReasonOpt = None, wait: WaitOpt = None, json_: JsonOpt = False, report: ReportOpt = None) -> None:
    """Make a version the champion (its bundle verified first)."""
    from mlsys_cli.continual.registry import promote as run

    _emit(run(registry, version, reason=reason, wait=wait), json_, report, _human_change)


@group.command("rollback", epilog=epilog("registry"))
def rollback(registry: RegistryArg,
             to: Annotated[Optional[str], typer.Option("--to", help="The version to go back to (default: the previous champion).")] = None,
             reason: ReasonOpt = None, wait: WaitOpt = None, json_: JsonOpt = False, report: ReportOpt = None) -> None:
    """Put the previous champion back (or --to VERSION)."""
    from mlsys_cli.continual.registry import rollback as run

    _emit(run(registry, to, reason=reason, wait=wait), json_, report, _human_change)


@group.command("prune", epilog=epilog("registry"))
def prune(registry: RegistryArg,
          keep: Annotated[int, typer.Option("--keep", click_type=integer(1, 1_000_000), help="Versions to keep, newest first (the champion and the rollback target always stay).")] = 10,
          dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be removed.")] = False,
          wait: WaitOpt = None, json_: JsonOpt = False, report: ReportOpt = None) -> None:
    """Delete old versions, keeping the newest N."""
    from mlsys_cli.continual.registry import prune as run

    _emit(run(registry, keep, dry_run=dry_run, wait=wait), json_, report, _human_change)
