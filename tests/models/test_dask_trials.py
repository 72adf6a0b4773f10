"""tune --engine dask: every trial fits on the cluster, scores as a local trial, and several
tune processes share one PostgreSQL study, each training on Dask."""

from __future__ import annotations

import json
import os

import pytest

from mlsys_cli.data.cluster import Engine
from mlsys_cli.models.dask_trials import EVENT_TOPIC
from mlsys_cli.models.tuning import TuneRequest, tune
from tests.models.test_distributed import _table


def _tables(tmp_path):
    train, valid = tmp_path / "train.parquet", tmp_path / "valid.parquet"
    # Rounded features: fewer distinct values than max_bin, so distributed and local trees coincide.
    _table(1500, rounded=True, seed=11).drop(columns="amount").to_parquet(train, index=False)
    _table(600, rounded=True, seed=12).drop(columns="amount").to_parquet(valid, index=False)
    return train, valid


def _values(storage, study):
    import optuna

    from mlsys_cli.models.study import open_storage

    trials = optuna.load_study(study_name=study, storage=open_storage(storage)).get_trials(deepcopy=False)
    return [(t.state.name, t.value, json.dumps(t.user_attrs["params"], sort_keys=True)) for t in trials]


def _events(address, pids):
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        return [e for _, e in client.get_events(EVENT_TOPIC) if e["pid"] in pids]


def test_trials_on_dask_score_as_local_ones(dask_cluster, tmp_path):
    train, valid = _tables(tmp_path)
    # Row and column subsampling draw on each worker's own rows, so they are fixed off here;
    # every other searched parameter gives the distributed trees exactly.
    fixed = {"n_estimators": 30, "subsample": 1.0, "colsample_bytree": 1.0}
    request = dict(valid=str(valid), target="y", model="xgboost", trials=3, params=fixed, seed=0)
    before = len(_events(dask_cluster.scheduler_address, {os.getpid()}))
    for name, engine in (("local", None), ("dask", Engine("dask", dask_cluster.scheduler_address))):
        tune(str(train), TuneRequest(**request, storage=f"journal:{tmp_path}/{name}.log", study=name, engine=engine))
    local, dist = _values(f"journal:{tmp_path}/local.log", "local"), _values(f"journal:{tmp_path}/dask.log", "dask")
    assert [(s, p) for s, _, p in dist] == [(s, p) for s, _, p in local]  # same proposals, same states
    assert [v for _, v, _ in dist] == pytest.approx([v for _, v, _ in local], abs=1e-6)
    events = _events(dask_cluster.scheduler_address, {os.getpid()})[before:]
    assert len(events) == 3 and all(e["rows"] == 1500 and e["rounds"] == 30 for e in events)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_tune_processes_share_a_postgres_study_each_training_on_dask(dask_cluster, tmp_path, postgres_url):
    """The way it runs on several hosts: the same command started twice, one RDB storage, one cluster."""
    from tests.cli.test_tune import _check_shared_study, _start

    train, valid = _tables(tmp_path)
    args = [train, "--valid", valid, "--target", "y", "--model", "xgboost", "--param", "n_estimators=20",
            "--trials", "6", "--pruner", "none", "--storage", postgres_url, "--study", "dask-shared", "--json",
            "--engine", "dask", "--scheduler", dask_cluster.scheduler_address]
    procs = [_start(args, tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()
    _check_shared_study(postgres_url, "dask-shared", 6)
    events = _events(dask_cluster.scheduler_address, {p.pid for p in procs})
    # Every trial of both processes (at most one extra per process) trained on the cluster.
    assert {e["pid"] for e in events} == {p.pid for p in procs} and 6 <= len(events) <= 7


@pytest.mark.slow
@pytest.mark.xdist_group("dask-loss")  # mostly waiting for Dask to notice the death: beside the other group
def test_a_trial_whose_worker_is_killed_is_fitted_again(loss_cluster, tmp_path):
    """The matrices scattered to the killed worker are lost with it: the trial sends them again and refits."""
    from tests.dask_cluster import kill_a_worker_during

    train, valid = _tables(tmp_path)
    address = loss_cluster.scheduler_address
    request = TuneRequest(valid=str(valid), target="y", model="xgboost", trials=4, params={"n_estimators": 150},
                          seed=0, pruner="none", storage=f"journal:{tmp_path}/s.log", study="s",
                          engine=Engine("dask", address))
    before = len(_events(address, {os.getpid()}))
    outcome = kill_a_worker_during(loss_cluster, lambda: tune(str(train), request),
                                   lambda: len(_events(address, {os.getpid()})) > before)
    assert "result" in outcome, outcome
    trials = _values(f"journal:{tmp_path}/s.log", "s")
    assert [state for state, _, _ in trials] == ["COMPLETE"] * 4
    assert len(_events(address, {os.getpid()})) - before == 4


def test_a_trial_that_fails_twice_leaves_no_broken_data_to_the_next_trials(monkeypatch):
    """A second loss failed the trial but kept the matrices it had scattered again in the cache:
    when they were lost too, every later trial reused them and failed (CI: COMPLETE, FAIL, FAIL, FAIL)."""
    from types import SimpleNamespace

    from mlsys_cli.data import cluster
    from mlsys_cli.models import dask_trials, distributed

    client = object()
    fits = []

    def lost(*args):
        fits.append(1)
        dask_trials._ON_CLUSTER[("fold", len(fits))] = (client, None, None)  # what a fit scatters
        raise cluster.WorkerLost("the Dask job failed: a worker was lost", "rerun")

    monkeypatch.setattr(cluster, "shared_client", lambda engine: client)
    monkeypatch.setattr(distributed, "check_family", lambda name: None)
    monkeypatch.setattr(dask_trials, "_fit_once", lost)
    with pytest.raises(cluster.WorkerLost):
        dask_trials.fit_trial(SimpleNamespace(name="xgboost"), None, None, SimpleNamespace(timeout=None), None)
    assert len(fits) == 2  # fitted once more after the first loss
    assert not [key for key, (held, _, _) in dask_trials._ON_CLUSTER.items() if held is client]


# One xdist worker runs every Dask test: they share one LocalCluster (tests/dask_cluster.py).
pytestmark = pytest.mark.xdist_group("dask")
