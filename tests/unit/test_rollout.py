"""registry.rollout: canary -> full -> rollback as pure state transitions, each audited; the file round-trips."""

from __future__ import annotations

import pytest

from registry.rollout import (
    RolloutState,
    load_state,
    plan_canary,
    plan_full,
    plan_rollback,
    save_state,
)
from serving.gateway.core import GatewayConfig


def test_two_step_rollout_and_rollbacks(tmp_path):
    s = RolloutState(model="m", champion_version="1")
    c = plan_canary(s, "m", "5", "2", 0.1, "alice", "new bg model")
    assert (c.stage, c.champion_version, c.challenger_version, c.canary_share) == ("canary", "1", "2", 0.1)
    with pytest.raises(ValueError, match="already running"):
        plan_canary(c, "m", "6", "3", 0.1, "alice")
    # rollback during the canary: share 0, champion untouched
    r = plan_rollback(c, "bob", "WER regressed")
    assert (r.stage, r.champion_version, r.challenger_version, r.canary_share) == ("stable", "1", "", 0.0)
    # canary -> full -> rollback: champion returns to the version the full step replaced
    f = plan_full(c, "alice")
    assert (f.champion_version, f.challenger_version, f.canary_share) == ("2", "", 0.0)
    back = plan_rollback(f, "bob", "latency")
    assert back.champion_version == "1" and back.canary_share == 0.0
    assert [h["action"] for h in back.history] == ["canary", "full", "rollback"]
    assert all(h["actor"] and h["at"] for h in back.history)
    path = tmp_path / "rollout.json"
    save_state(path, c)
    assert load_state(path) == c
    g = GatewayConfig.from_rollout(path)  # what the gateway routes by
    assert (g.champion_version, g.challenger_version, g.canary_share) == ("1", "2", 0.1)


def test_refusals_are_named(tmp_path):
    s = RolloutState(champion_version="1")
    with pytest.raises(ValueError, match="--share"):
        plan_canary(s, "m", "5", "2", 0.0, "a")
    with pytest.raises(ValueError, match="already the champion"):
        plan_canary(s, "m", "5", "1", 0.5, "a")
    with pytest.raises(ValueError, match="no canary is running"):
        plan_full(s, "a")
    with pytest.raises(ValueError, match="--reason"):
        plan_rollback(s, "a", " ")
    with pytest.raises(ValueError, match="nothing to roll back to"):
        plan_rollback(s, "a", "why")
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match="not a rollout state file"):
        load_state(tmp_path / "bad.json")


@pytest.mark.slow  # MLflow creates its sqlite schema (~20 s on the loaded box)
def test_registry_side_canary_full_rollback_on_real_mlflow(tmp_path):
    """run_canary gate-checks and moves `challenger`; run_full promotes (champion); run_rollback re-points
    champion to the previous one and sets the share to 0 -- one action each, audited in the file."""
    from registry.mlflow_adapter import Registry, get_client
    from registry.rollout import run_canary, run_full, run_rollback
    from tests.unit.test_release_safety import _candidate  # gated candidates with a real gate record

    reg = Registry(get_client(f"sqlite:///{tmp_path / 'mlflow.db'}"))

    class V:
        def __init__(self, version):
            self.version = version

    v1, v2 = V(_candidate(tmp_path, reg, "one")), V(_candidate(tmp_path, reg, "two"))
    bad = V(_candidate(tmp_path, reg, "bad", passed=False))
    reg.promote("asr", v1.version)
    state = tmp_path / "rollout.json"
    save_state(state, RolloutState(model="asr", champion_version="1"))
    with pytest.raises(PermissionError, match="gate FAILED"):
        run_canary(reg, "asr", bad.version, state, "3", 0.1, "alice")
    s = run_canary(reg, "asr", v2.version, state, "2", 0.25, "alice", "new model")
    assert (s.stage, s.canary_share) == ("canary", 0.25) and reg.by_alias(
        "asr", "challenger"
    ).version == v2.version
    s = run_full(reg, "asr", state, "alice")
    assert s.champion_version == "2" and reg.by_alias("asr", "champion").version == v2.version
    s = run_rollback(reg, "asr", state, "bob", "p99 regressed")
    assert (s.champion_version, s.canary_share) == ("1", 0.0)
    assert reg.by_alias("asr", "champion").version == v1.version
    assert [h["action"] for h in load_state(state).history] == ["canary", "full", "rollback"]
