"""data.partitioned: a failed job's scratch directory goes away even while its tasks still write."""

from __future__ import annotations

import os
import threading

import pytest

from mlsys_cli.data.partitioned import job_scratch, part_file


def _keep_writing(scratch: str, started: threading.Event) -> None:
    """A task of a failed job that goes on writing parts (cancelling a future does not stop it)."""
    for i in range(20_000):
        try:
            with part_file(scratch, i % 50) as (_, tmp):
                tmp.write_bytes(b"part")
        except Exception:  # the scratch directory is gone: the task's write fails, as on a worker
            return
        started.set()


@pytest.mark.parametrize("trial", range(5))
def test_a_failed_jobs_scratch_is_removed_while_a_task_still_writes(tmp_path, trial):
    # A plain TemporaryDirectory cleanup failed here every time (a part created during rmtree:
    # "Directory not empty"), leaving the directory and replacing the job's error.
    started = threading.Event()
    with pytest.raises(KeyError, match="the job's own error"):
        with job_scratch(tmp_path / "out.parquet") as scratch:
            writer = threading.Thread(target=_keep_writing, args=(scratch, started))
            writer.start()
            started.wait(10)
            raise KeyError("the job's own error")
    writer.join(30)
    assert not writer.is_alive() and os.listdir(tmp_path) == []


def test_a_published_scratch_directory_is_left_alone(tmp_path):
    with job_scratch(tmp_path / "out") as scratch:
        (tmp_path / "x").mkdir()
        os.rename(scratch, tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["out", "x"]
