"""Consistency under failure and concurrency, on real MLflow (sqlite).

Failure injection wraps one MlflowClient method so that it raises once (MLflow itself is not mocked); the
concurrent case runs two real processes promoting different versions at the same moment.
"""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest
from mlflow import MlflowClient

from components.register_model.core import register_candidate
from registry import history
from registry.lock import LOCK_SUFFIX, LockLost, RegistryLock
from registry.mlflow_adapter import Registry, get_client
from registry.policy import CHALLENGER, CHAMPION
from registry.rollback import rollback
from tests.unit.test_registry import _evaluation, _migrated_registry_db, _model_dir, tracking_uri  # noqa: F401


@pytest.fixture()
def reg(tracking_uri):  # noqa: F811 (the fixture imported above)
    return Registry(get_client(tracking_uri))


def _candidate(tmp_path, reg, tag: str, passed: bool = True, run: str = "") -> str:
    d = tmp_path / tag if (tmp_path / tag).is_dir() else _model_dir(tmp_path, tag, f"weights-{tag}".encode())
    ev, _ = _evaluation(tmp_path, f"ev-{tag}", passed, d)
    return register_candidate(d, ev, "asr", pipeline_run_id=run, tracking_uri=reg.client.tracking_uri).version


def _fail_once(monkeypatch, method: str, when=lambda *a, **k: True):
    """Make MlflowClient.<method> raise once (the first call for which `when` holds), then behave normally."""
    real = getattr(MlflowClient, method)
    state = {"armed": True}

    def wrapper(self, *args, **kwargs):
        if state["armed"] and when(*args, **kwargs):
            state["armed"] = False
            raise ConnectionError(f"injected failure in {method}")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, method, wrapper)
    return state


def _no_lock_left(reg) -> bool:
    return not [m for m in reg.client.search_registered_models() if m.name.endswith(LOCK_SUFFIX)]


def test_failure_between_registering_and_aliasing_then_retry(tmp_path, reg, monkeypatch):
    v1 = _candidate(tmp_path, reg, "one", run="run-1")
    reg.promote("asr", v1)
    state = _fail_once(monkeypatch, "set_registered_model_alias", lambda name, alias, v: alias == CHALLENGER)
    with pytest.raises(ConnectionError, match="injected"):
        _candidate(tmp_path, reg, "two", run="run-2")
    assert not state["armed"]
    # consistent: the new version exists complete (artifacts + tags) but no alias points at it
    versions = reg.versions("asr")
    assert [v.version for v in versions] == ["1", "2"] and versions[1].aliases == []
    assert versions[1].tags["registration_key"].startswith(versions[1].tags["checkpoint_sha256"] + "/")
    reg.verify(versions[1])  # its checkpoint is there and matches
    assert reg.by_alias("asr", CHALLENGER).version == v1 and reg.by_alias("asr", CHAMPION).version == v1
    # the pipeline step's retry completes the first attempt instead of registering a twin
    v2 = _candidate(tmp_path, reg, "two", run="run-2")
    assert v2 == "2" and len(reg.versions("asr")) == 2
    assert reg.by_alias("asr", CHALLENGER).version == "2" and reg.by_alias("asr", CHAMPION).version == v1


def test_failure_while_moving_champion_then_retry(tmp_path, reg, monkeypatch):
    v1, v2 = _candidate(tmp_path, reg, "one"), _candidate(tmp_path, reg, "two")
    reg.promote("asr", v1)
    _fail_once(monkeypatch, "set_registered_model_alias", lambda name, alias, v: alias == CHAMPION)
    with pytest.raises(ConnectionError, match="injected"):
        reg.promote("asr", v2)
    # champion, history and v2's tags are as before the attempt; the lock was released
    assert reg.by_alias("asr", CHAMPION).version == v1
    assert [e.version for e in reg.history("asr")] == [v1]
    assert "promoted_at" not in reg.get("asr", v2).tags and _no_lock_left(reg)
    reg.promote("asr", v2)  # the retry completes
    assert reg.by_alias("asr", CHAMPION).version == v2
    assert [(e.version, e.prev) for e in reg.history("asr")] == [(v1, ""), (v2, v1)]


def test_writer_dying_after_its_intent_is_dropped_by_the_next_writer(tmp_path, reg, monkeypatch):
    """A process killed between the history write and the alias write (no cleanup ran): simulated by making
    both the alias write and the cleanup fail."""
    v1, v2, v3 = (_candidate(tmp_path, reg, t) for t in ("one", "two", "three"))
    reg.promote("asr", v1)
    _fail_once(monkeypatch, "set_registered_model_alias", lambda name, alias, v: alias == CHAMPION)
    _fail_once(monkeypatch, "set_registered_model_tag", lambda name, key, value: '"v":"2"' not in value)
    with pytest.raises(ConnectionError):
        reg.promote("asr", v2)
    assert [e.version for e in reg.history("asr")] == [v1, v2]  # the unfinished intent is still logged
    reg.promote("asr", v3)  # the next writer reconciles: drops v2's unfinished entry, then moves
    assert [(e.version, e.prev) for e in reg.history("asr")] == [(v1, ""), (v3, v1)]
    assert rollback(reg, "asr", "bad v3").to_version == v1  # so a rollback never lands on v2


def test_failure_after_moving_alias_is_reconciled(tmp_path, reg, monkeypatch):
    """The alias moved but the read-back/tags failed: the move stands, a retry fills in the audit tags."""
    v1, v2 = _candidate(tmp_path, reg, "one"), _candidate(tmp_path, reg, "two")
    reg.promote("asr", v1)
    _fail_once(monkeypatch, "set_model_version_tag", lambda name, v, key, value: key == "promoted_at")
    with pytest.raises(ConnectionError):
        reg.promote("asr", v2, actor="pipeline", run_id="run-7")
    assert reg.by_alias("asr", CHAMPION).version == v2 and reg.history("asr")[-1].version == v2
    assert "promoted_at" not in reg.get("asr", v2).tags
    info = reg.promote("asr", v2, actor="pipeline", run_id="run-7")
    assert info.tags["promoted_at"] == reg.history("asr")[-1].at and info.tags["previous_champion"] == v1
    assert len(reg.history("asr")) == 2


def test_alias_moved_by_hand_is_recorded_as_unverified_and_not_a_rollback_target(tmp_path, reg):
    """Setting `champion` outside promote (UI, raw client) is a bypass: the log records it as an unverified
    `reconcile`, and rollback never lands on such a version without an audited force."""
    v1, v2 = _candidate(tmp_path, reg, "one"), _candidate(tmp_path, reg, "two")
    v3 = _candidate(tmp_path, reg, "three", passed=False)
    reg.promote("asr", v1)
    reg.promote("asr", v2)
    reg.client.set_registered_model_alias("asr", CHAMPION, v1)  # someone in the UI, to a gated version
    entries, current = reg.reconcile("asr")
    assert current == v1 and (entries[-1].version, entries[-1].op, entries[-1].why) == (v1, "reconcile", "")
    reg.client.set_registered_model_alias("asr", CHAMPION, v3)  # ... and to one whose gate failed
    entries, current = reg.reconcile("asr")
    assert current == v3 and entries[-1].op == "reconcile" and entries[-1].why.startswith("unverified")
    assert [e.version for e in reg.history("asr")] == [v1, v2, v1, v3]
    reg.promote("asr", v2)
    with pytest.raises(PermissionError, match="gate FAILED"):
        rollback(reg, "asr", "back to the hand-set one", to=v3)
    assert reg.by_alias("asr", CHAMPION).version == v2


def test_lock_excludes_breaks_stale_leases_and_detects_loss(reg):
    a = RegistryLock(reg.client, "asr", timeout_s=0.5, poll_s=0.05).acquire()
    with pytest.raises(TimeoutError, match="held by"):
        RegistryLock(reg.client, "asr", timeout_s=0.5, poll_s=0.05).acquire()
    a.check()
    a.release()
    assert _no_lock_left(reg)
    stale = RegistryLock(reg.client, "asr", lease_s=0.2).acquire()  # a holder that died
    time.sleep(0.3)
    b = RegistryLock(reg.client, "asr", timeout_s=5, poll_s=0.05).acquire()  # breaks the expired lease
    with pytest.raises(LockLost):
        stale.check()  # the dead holder, if it wakes up, stops before writing
    stale.release()  # and does not delete the new holder's lock
    b.check()
    b.release()


def _promote_worker(uri: str, version: str, barrier, out):
    reg = Registry(get_client(uri), lock_options={"poll_s": 0.05, "timeout_s": 60})
    barrier.wait()
    try:
        reg.promote("asr", version, actor=f"pipeline-{version}")
        out.put((version, "ok"))
    except Exception as e:  # reported to the parent, which fails the test with it
        out.put((version, f"{type(e).__name__}: {e}"))


def test_two_pipelines_promoting_at_once_leave_one_champion_and_a_consistent_history(tmp_path, reg):
    v1, v2, v3 = (_candidate(tmp_path, reg, t) for t in ("one", "two", "three"))
    reg.promote("asr", v1)
    ctx = mp.get_context("spawn")  # fresh interpreters: no sqlite connection shared across fork
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_promote_worker, args=(reg.client.tracking_uri, v, barrier, out)) for v in (v2, v3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    results = dict(out.get(timeout=5) for _ in procs)
    assert results == {v2: "ok", v3: "ok"}, results

    champions = [v.version for v in reg.versions("asr") if CHAMPION in v.aliases]
    log = reg.history("asr")
    assert len(champions) == 1 and champions[0] == log[-1].version
    # no lost update: both promotions are logged, each one's `prev` is the entry before it
    assert sorted(e.version for e in log[1:]) == sorted([v2, v3])
    assert [e.prev for e in log] == ["", *(e.version for e in log[:-1])]
    assert history.stack(log) == [e.version for e in log]
    for e in log[1:]:
        assert reg.get("asr", e.version).tags["previous_champion"] == e.prev
    assert _no_lock_left(reg)
