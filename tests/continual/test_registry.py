"""The registry on disk: versions, champion pointer, history, lock, recovery, and their bad inputs."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading

import pytest

from mlsys_cli.continual import registry as r
from mlsys_cli.errors import BusyError, InputError, UsageError


def _events(reg):
    return [json.loads(line) for line in (reg / "history.jsonl").read_text().splitlines()]


def _add(reg, status="promoted", payload=b"bundle"):
    with r.Registry(reg).writer(create=True) as w:
        version = w.add_version(lambda path: path.write_bytes(payload), {"status": status, "reason": "test"})
        if status == "promoted":
            w.promote(version)
        pointer = r.Registry(reg).champion()
        w.append({"event": "retrain", "decision": status, "version": version.version,
                  "champion": pointer.version if pointer else None})
    return version


def test_a_new_registry_has_the_documented_layout(tmp_path):
    reg = tmp_path / "reg"
    v1 = _add(reg)
    assert json.loads((reg / "registry.json").read_text()) == {"format": "mlsys-registry", "version": 1}
    assert json.loads((reg / "champion.json").read_text()) == {
        "version": "v0001", "bundle": "versions/v0001/model.mlsys", "sha256": v1.sha256}
    meta = json.loads((reg / "versions/v0001/meta.json").read_text())
    assert meta["status"] == "promoted" and meta["sha256"] == v1.sha256 and meta["created"].endswith("Z")
    assert r.read_champion(reg).bundle == reg / "versions/v0001/model.mlsys"
    assert (reg / ".lock").read_bytes() == b""  # a clean release leaves the lock file empty
    assert [e["event"] for e in _events(reg)] == ["retrain"]
    assert {"user", "host", "pid", "command"} <= set(_events(reg)[0]["who"])


def test_version_names_are_never_reused_after_a_prune(tmp_path):
    reg = tmp_path / "reg"
    for status in ("promoted", "rejected", "rejected", "promoted"):
        _add(reg, status)
    change = r.prune(reg, keep=1)
    # v0004 is the champion, v0001 the rollback target: both stay.
    assert change.removed == ["v0002", "v0003"]
    assert [v.version for v in r.Registry(reg).versions()] == ["v0001", "v0004"]
    assert _add(reg, "rejected").version == "v0005"
    _add(reg, "rejected")
    dry = r.prune(reg, keep=1, dry_run=True)
    assert dry.dry_run and dry.removed == ["v0005"] and (reg / "versions/v0005").is_dir()


def test_promote_and_rollback_follow_the_champion_stack(tmp_path):
    reg = tmp_path / "reg"
    for status in ("promoted", "promoted", "rejected", "promoted"):
        _add(reg, status)
    assert r.read_champion(reg).version == "v0004"
    assert r.rollback(reg).champion == "v0002"
    assert r.rollback(reg, reason="bad night").champion == "v0001"
    with pytest.raises(InputError, match="no earlier champion"):
        r.rollback(reg)
    assert r.promote(reg, "v0003", reason="the rejected one was right").champion == "v0003"
    assert r.rollback(reg).champion == "v0001"
    last = _events(reg)[-1]
    assert last["event"] == "rollback" and last["previous"] == "v0003" and last["champion"] == "v0001"
    with pytest.raises(UsageError, match="already the champion"):
        r.promote(reg, "v0001")


def test_unknown_or_malformed_versions(tmp_path):
    reg = tmp_path / "reg"
    _add(reg)
    with pytest.raises(InputError, match="no version v0009") as info:
        r.promote(reg, "v0009")
    assert "v0001" in info.value.hint
    with pytest.raises(UsageError, match="invalid version"):
        r.rollback(reg, to="latest")


def test_a_tampered_or_missing_bundle_is_never_promoted(tmp_path):
    reg = tmp_path / "reg"
    _add(reg)
    _add(reg)
    (reg / "versions/v0001/model.mlsys").write_bytes(b"changed")
    with pytest.raises(InputError, match="fails its sha256 check"):
        r.rollback(reg)
    (reg / "versions/v0001/model.mlsys").unlink()
    with pytest.raises(InputError, match="missing"):
        r.promote(reg, "v0001")
    assert r.read_champion(reg).version == "v0002"


def test_not_a_registry(tmp_path):
    (tmp_path / "data.csv").write_text("a\n1\n")
    with pytest.raises(InputError, match="not an mlsys registry"):
        r.list_versions(tmp_path)
    with pytest.raises(InputError, match="not an mlsys registry"):
        with r.Registry(tmp_path).writer(create=True):
            pass
    with pytest.raises(InputError, match="no such registry"):
        r.list_versions(tmp_path / "missing")
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "registry.json").write_text('{"format": "mlsys-registry", "version": 2}')
    with pytest.raises(InputError, match="version 2 is not supported"):
        r.list_versions(newer)


def test_a_truncated_history_line_is_tolerated_then_repaired(tmp_path):
    reg = tmp_path / "reg"
    _add(reg)
    partial = b'{"time": "2025-01-01T00:00:00Z", "event": "retr'  # a writer killed mid-line
    with open(reg / "history.jsonl", "ab") as fh:
        fh.write(partial)
    listing = r.list_versions(reg)
    assert listing.events == 1 and "truncated" in listing.warnings[0]
    _add(reg, "rejected")  # the next writer repairs, logs the repair, then appends
    events = _events(reg)
    assert [e["event"] for e in events] == ["retrain", "recover", "retrain"]
    assert events[1]["repair"] == "history" and f"{len(partial)} bytes" in events[1]["detail"]
    assert r.list_versions(reg).warnings == []


def test_a_corrupt_middle_line_is_refused(tmp_path):
    reg = tmp_path / "reg"
    _add(reg)
    text = (reg / "history.jsonl").read_text()
    (reg / "history.jsonl").write_text("not json\n" + text)
    with pytest.raises(InputError, match="line 1 is not JSON"):
        r.list_versions(reg)


def test_busy_at_once_and_waiting_for_the_lock(tmp_path):
    reg = tmp_path / "reg"
    _add(reg)
    fd = os.open(reg / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, json.dumps({"pid": 4242, "host": "elsewhere", "since": "2025-01-01T00:00:00Z",
                              "command": ["mlsys", "retrain"]}).encode(), 0)
    try:
        with pytest.raises(BusyError, match="pid 4242 on elsewhere") as info:
            r.promote(reg, "v0001")
        assert "--wait" in info.value.hint
        with pytest.raises(BusyError):
            r.prune(reg, keep=1, wait=0.2)
        # The holder finishes while we wait: the waiting writer proceeds (no stale lock: it cleared the file).
        released = threading.Event()

        def release():
            released.wait()
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)

        thread = threading.Thread(target=release)
        thread.start()
        released.set()
        change = r.prune(reg, keep=5, wait=60)
        thread.join()
        assert change.recovered == []
    finally:
        os.close(fd)


def test_a_lock_left_by_a_killed_writer_is_stale_and_logged(tmp_path):
    reg = tmp_path / "reg"
    _add(reg)
    # What a SIGKILLed holder leaves: its record in the file, but no flock (the kernel dropped it).
    (reg / ".lock").write_text(json.dumps({"pid": 999999, "host": "vm", "since": "2025-01-01T00:00:00Z",
                                           "command": ["mlsys", "retrain"]}))
    _add(reg, "rejected")
    recover = [e for e in _events(reg) if e["event"] == "recover"]
    assert len(recover) == 1 and recover[0]["repair"] == "lock" and recover[0]["stale_lock"]["pid"] == 999999


def test_garbage_in_the_lock_file_is_no_problem(tmp_path):
    reg = tmp_path / "reg"
    _add(reg)
    (reg / ".lock").write_bytes(b"\x00\xffnot json")
    _add(reg, "rejected")
    assert (reg / ".lock").read_bytes() == b""
    (reg / ".lock").unlink()  # deleted by hand: recreated, never needed
    _add(reg, "rejected")
    assert [v.status for v in r.Registry(reg).versions()] == ["promoted", "rejected", "rejected"]


def test_a_lock_file_that_is_a_directory(tmp_path):
    reg = tmp_path / "reg"
    _add(reg)
    (reg / ".lock").unlink()
    (reg / ".lock").mkdir()
    with pytest.raises(InputError, match="lock file is a directory"):
        r.promote(reg, "v0001")


def test_recovery_finishes_a_decided_promotion_and_removes_leftovers(tmp_path):
    reg = tmp_path / "reg"
    _add(reg)
    # A writer killed after renaming its version into place, before pointing at it or logging it:
    with r.Registry(reg).writer() as w:
        w.add_version(lambda path: path.write_bytes(b"new"), {"status": "promoted", "reason": "better"})
    (reg / "versions/.v0003.123.tmp").mkdir()
    (reg / ".champion.json.abc.tmp").write_text("{")
    _add(reg, "rejected")
    assert r.read_champion(reg).version == "v0002"
    events = _events(reg)
    assert [e.get("repair") for e in events if e["event"] == "recover"] == ["version"]
    assert "promotion is completed" in events[1]["detail"]
    assert not (reg / "versions/.v0003.123.tmp").exists() and not (reg / ".champion.json.abc.tmp").exists()
    assert [v.version for v in r.Registry(reg).versions()] == ["v0001", "v0002", "v0003"]


def test_show_lists_the_events_of_a_version(tmp_path):
    reg = tmp_path / "reg"
    _add(reg)
    _add(reg, "rejected")
    shown = r.show_version(reg)
    assert shown.champion and shown.version["version"] == "v0001"
    assert [e["event"] for e in r.show_version(reg, "v0002").events] == ["retrain"]


def test_removals_of_a_prune_killed_before_logging_them_are_logged(tmp_path):
    reg = tmp_path / "reg"
    for status in ("promoted", "rejected", "rejected", "promoted"):
        _add(reg, status)
    shutil.rmtree(reg / "versions/v0002")  # what a prune killed before its history line leaves
    with r.Registry(reg).writer() as w:
        assert [x["repair"] for x in w.recovered] == ["prune"] and w.recovered[0]["removed"] == ["v0002"]
    assert r.prune(reg, keep=1).removed == ["v0003"]
    with r.Registry(reg).writer() as w:
        assert w.recovered == []  # logged once; a logged prune is no repair
    assert r.show_version(reg, "v0001").version["version"] == "v0001"


@pytest.mark.parametrize("garbage", [b"{", b"", b'{"version": 1}', b"\xff\xfe"])
def test_an_unreadable_champion_pointer_is_restored_from_the_history(tmp_path, garbage):
    reg = tmp_path / "reg"
    _add(reg)
    _add(reg)
    (reg / "champion.json").write_bytes(garbage)
    with pytest.raises(InputError, match="unreadable champion pointer") as info:
        r.list_versions(reg)  # readers never write: they say who repairs it
    assert "restores it" in info.value.hint
    assert r.promote(reg, "v0001").previous == "v0002"  # a writer repairs first, then promotes
    repair = [e for e in _events(reg) if e["event"] == "recover"]
    assert repair[0]["repair"] == "pointer" and "v0002" in repair[0]["detail"]
    assert r.read_champion(reg).version == "v0001"


def test_an_unreadable_pointer_without_a_valid_champion_is_set_aside(tmp_path):
    reg = tmp_path / "reg"
    _add(reg)
    _add(reg)
    (reg / "versions/v0002/model.mlsys").write_bytes(b"changed")  # the history's last champion fails its check
    (reg / "champion.json").write_text("{")
    assert r.promote(reg, "v0001").previous is None
    assert [p.name.startswith("champion.json.unreadable-") for p in reg.iterdir() if "unreadable" in p.name] == [True]
    assert r.read_champion(reg).version == "v0001"
