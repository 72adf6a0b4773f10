"""mlsys registry and the registry's guarantees across real processes: locks, stale locks, read-only disks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from tests.conftest import ROOT, assert_clean_error, run_cli, run_proc


def _holder(reg):
    proc = subprocess.Popen([sys.executable, "-m", "tests.continual.holder", str(reg)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "locked\n"
    return proc


def _retrain(reg, data, *args):
    return run_proc("retrain", "--registry", reg, "--data", data, "--time-col", "snapshot_date", "--bootstrap", "0",
                    *args)


def test_a_champion_whose_bundle_is_gone_is_warned_about_by_list_and_show(registry):
    """Both showed a healthy champion (exit 0, no word) that serve and retrain then refuse."""
    bundle = registry / "versions" / "v0001" / "model.mlsys"
    bundle.unlink()
    for args in (["list"], ["show"]):
        result = run_cli("registry", *args, registry)
        assert result.code == 0, result.stderr
        assert "warning: v0001: its bundle" in result.stderr and "serve and retrain refuse the champion" in result.stderr
    assert run_cli("registry", "show", registry, "--json").json["warnings"]


def test_one_unreadable_version_record_is_flagged_by_list_not_fatal(registry):
    """list (a diagnostic) exited 3 on it; now it lists the others and names the broken one."""
    import json
    import shutil

    versions = registry / "versions"
    shutil.copytree(versions / "v0001", versions / "v0002")
    meta = json.loads((versions / "v0002" / "meta.json").read_text())
    (versions / "v0002" / "meta.json").write_text(json.dumps({**meta, "version": "v0002", "status": "rejected"}))
    (versions / "v0001" / "meta.json").write_text('{"broken')
    listed = run_cli("registry", "list", registry, "--json")
    assert listed.code == 0, listed.stderr
    assert [v["version"] for v in listed.json["versions"]] == ["v0002"]
    assert "warning: v0001: left out: " in listed.stderr and "unreadable version record" in listed.stderr
    assert any(w.startswith("v0001: left out") for w in listed.json["warnings"])
    assert run_cli("registry", "show", registry, "v0002").code == 0
    assert_clean_error(run_cli("registry", "show", registry), 3)  # the champion itself: refused


def test_list_show_json(registry):
    listing = run_cli("registry", "list", registry, "--json")
    assert listing.code == 0, listing.stderr
    doc = listing.json
    assert doc["champion"] == "v0001" and doc["events"] == 1 and doc["warnings"] == []
    (row,) = doc["versions"]
    assert row["champion"] is True and row["status"] == "promoted" and row["metric"] == "auc" and row["rows"] > 0
    shown = run_cli("registry", "show", registry, "--json").json
    assert shown["champion"] is True and shown["version"]["version"] == "v0001"
    assert shown["version"]["bundle"].endswith("versions/v0001/model.mlsys")
    human = run_cli("registry", "list", registry)
    assert "v0001\t*\tpromoted" in human.stdout


def test_promote_rollback_prune_through_the_cli(registry, churn):
    assert run_cli("retrain", "--registry", registry, "--data", churn["q3"], "--time-col", "snapshot_date",
                   "--bootstrap", "0").code == 0
    back = run_cli("registry", "rollback", registry, "--reason", "pager at 3 a.m.", "--json")
    assert back.code == 0 and back.json["champion"] == "v0001" and back.json["previous"] == "v0002"
    assert back.json["event"]["reason"] == "pager at 3 a.m."
    assert run_cli("registry", "promote", registry, "v0002").code == 0
    assert_clean_error(run_cli("registry", "promote", registry, "v0007"), 3)
    assert_clean_error(run_cli("registry", "promote", registry, "latest"), 2)
    assert_clean_error(run_cli("registry", "promote", registry, "v0002"), 2)  # already the champion
    pruned = run_cli("registry", "prune", registry, "--keep", "1", "--json")
    assert pruned.code == 0 and pruned.json["removed"] == []  # champion and rollback target stay
    assert_clean_error(run_cli("registry", "list", registry.parent / "nope"), 3)


def test_a_second_writer_exits_5_at_once_or_waits(registry, churn):
    holder = _holder(registry)
    try:
        busy = _retrain(registry, churn["q3"])
        assert_clean_error(busy, 5)
        assert f"pid {holder.pid}" in busy.stderr and "--wait" in busy.stderr
        assert_clean_error(run_proc("registry", "rollback", registry), 5)
        waiting = subprocess.Popen([sys.executable, "-m", "mlsys_cli", "retrain", "--registry", str(registry), "--data",
                                    str(churn["q3"]), "--time-col", "snapshot_date", "--bootstrap", "0", "--wait", "600",
                                    "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        holder.stdin.close()
        holder.wait()
    out, err = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, err
    assert json.loads(out)["decision"] == "promoted" and json.loads(out)["recovered"] == []


def test_a_lock_held_by_a_killed_process_is_stale_not_blocking(registry, churn):
    holder = _holder(registry)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    result = _retrain(registry, churn["q3"], "--json")
    assert result.code == 0, result.stderr
    (repair,) = result.json["recovered"]
    assert repair["repair"] == "lock" and repair["stale_lock"]["pid"] == holder.pid


def _read_only(path):
    """Run mlsys with ``path`` on a read-only mount (a user and mount namespace), or as a user
    who may not write it when not root."""
    if os.geteuid() == 0:
        mount = f"mount --bind {path} {path} && mount -o remount,bind,ro {path}"
        return lambda *args: _ns(mount, args)
    os.chmod(path, 0o555)
    return lambda *args: run_proc(*args)


def _ns(mount, args):
    command = " ".join(["exec", sys.executable, "-m", "mlsys_cli", *map(_quote, args)])
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", f"{mount} && {command}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "NO_COLOR": "1"})
    from tests.conftest import Result

    return Result(proc.returncode, proc.stdout, proc.stderr)


def _quote(text):
    import shlex

    return shlex.quote(str(text))


def test_a_read_only_registry_is_read_but_not_written(registry, churn):
    before = {p: p.read_bytes() for p in registry.rglob("*") if p.is_file()}
    mlsys = _read_only(registry)
    listing = mlsys("registry", "list", registry, "--json")
    assert listing.code == 0, listing.stderr
    assert json.loads(listing.stdout)["champion"] == "v0001"
    for args in (("retrain", "--registry", registry, "--data", churn["q3"], "--time-col", "snapshot_date"),
                 ("registry", "prune", registry, "--keep", "1")):
        result = mlsys(*args)
        assert_clean_error(result, 3)
        assert "the registry is read-only" in result.stderr
    assert {p: p.read_bytes() for p in registry.rglob("*") if p.is_file()} == before
