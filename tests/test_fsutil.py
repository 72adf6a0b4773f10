"""The one safe-write path: atomic replaces, temporaries a later run can recognise and remove."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mlsys_cli.errors import InputError
from mlsys_cli.fsutil import atomic_path, atomic_write_text, sweep_stale, temp_dir, temp_prefix


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_writers_temporaries_are_swept_by_the_next_write(tmp_path):
    dead = _dead_pid()
    prefix = temp_prefix(tmp_path / "model.mlsys").replace(f"-{os.getpid()}-", f"-{dead}-")
    stale_file = tmp_path / f"{prefix}abc.tmp"
    stale_dir = tmp_path / f"{prefix}scratch"
    stale_file.write_text("half a model")
    stale_dir.mkdir()
    (stale_dir / "spill").write_text("x")
    live = tmp_path / f"{temp_prefix(tmp_path / 'other')}live.tmp"  # this process: still running
    live.write_text("in progress")
    unrelated = tmp_path / ".hidden.tmp"
    unrelated.write_text("not ours")
    atomic_write_text(tmp_path / "report.json", "{}")
    assert not stale_file.exists() and not stale_dir.exists()
    assert live.exists() and unrelated.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["report.json"]


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "t.parquet"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_temporary_names_carry_the_mark_the_sweeper_reads(tmp_path):
    with temp_dir(tmp_path / "out.parquet") as scratch:
        assert os.path.basename(scratch).startswith(".out.parquet.mlsys-tmp-")
    assert sweep_stale(tmp_path) == []


def test_a_directory_that_cannot_be_written_is_an_input_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        atomic_write_text(blocker / "sub" / "out.json", "{}")


def test_an_output_that_is_a_device_or_fifo_or_a_link_to_one_is_refused_and_left_as_it_was(tmp_path):
    # The atomic rename replaced the node itself: run as root, -o /dev/full became a Parquet file.
    import stat

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "stdout"
    link.symlink_to(fifo)
    for target in (fifo, link):
        with pytest.raises(InputError, match="is not a regular file"):
            atomic_write_text(target, "x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and os.path.islink(link)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe", "stdout"]
    regular = tmp_path / "file.txt"
    regular.write_text("old")
    (tmp_path / "to_file").symlink_to(regular)
    atomic_write_text(tmp_path / "to_file", "new")  # a link to a file: replaced, the file kept
    assert regular.read_text() == "old" and (tmp_path / "to_file").read_text() == "new"
