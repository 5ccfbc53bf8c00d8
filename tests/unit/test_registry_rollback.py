"""Champion history, gated promotion with recorded overrides, and rollback (registry + Triton re-export).

Real MLflow on a temp sqlite file; the "checkpoints" are a few bytes (the registry stores files and checks
their sha256, and export_model only verifies and places the file, so the bytes need not be a real .nemo).
"""

from __future__ import annotations

import json

import pytest

from components.register_model.core import register_candidate
from registry import history
from registry.__main__ import rollback_and_export
from registry.history import Entry
from registry.mlflow_adapter import Registry, get_client
from registry.policy import CHALLENGER, CHAMPION
from registry.rollback import rollback
from tests.unit.test_registry import _evaluation, _migrated_registry_db, _model_dir, tracking_uri  # noqa: F401

# -- pure history rules ------------------------------------------------------------------------------------


def _e(v, op="promote", prev=""):
    return Entry(v, op, "2026-01-01T00:00:00Z", "t", prev)


def test_history_stack_is_undo():
    log = [_e("1"), _e("2", prev="1"), _e("3", prev="2")]
    assert history.stack(log) == ["1", "2", "3"]
    assert history.rollback_target(log, "3") == "2"
    log.append(_e("2", "rollback", "3"))
    assert history.stack(log) == ["1", "2"]
    assert history.rollback_target(log, "2") == "1"  # a second rollback goes further back, not to 3
    assert history.rollback_target(log, "2", to="3") == "3"  # unless asked to
    with pytest.raises(LookupError, match="never champion"):
        history.rollback_target(log, "2", to="7")
    assert history.rollback_target(log, "2", to="7", also_champions=frozenset({"7"})) == "7"
    with pytest.raises(LookupError, match="no previous champion"):
        history.rollback_target([_e("1")], "1")
    with pytest.raises(LookupError, match="no current champion"):
        history.rollback_target(log, None)
    with pytest.raises(LookupError, match="reconcile"):
        history.rollback_target(log, "9")


def test_history_roundtrip_and_size_limit():
    log = [_e(str(i), prev=str(i - 1)) for i in range(1, 200)]
    text = history.dump(log)
    assert len(text) <= history.MAX_CHARS  # fits Postgres' VARCHAR(5000) registered-model tag
    kept = history.parse(text)
    assert kept[-1] == log[-1] and history.dropped_count(text) == len(log) - len(kept) > 0
    assert history.parse("") == []
    with pytest.raises(ValueError, match="champion history"):
        history.parse("not json")


# -- registry ----------------------------------------------------------------------------------------------


@pytest.fixture()
def reg(tracking_uri):  # noqa: F811 (the fixture imported above)
    return Registry(get_client(tracking_uri))


def _candidate(tmp_path, reg, tag: str, passed: bool, run: str = "") -> str:
    d = _model_dir(tmp_path, tag, f"weights-{tag}".encode())
    ev, _ = _evaluation(tmp_path, f"ev-{tag}", passed, d)
    r = register_candidate(
        d,
        ev,
        "asr",
        data_md5=f"md5-{tag}",
        pipeline_run_id=run,
        commit="c0ffee",
        tracking_uri=reg.client.tracking_uri,
    )
    return r.version


def test_promote_refuses_without_passing_gate_and_records_override(tmp_path, reg):
    good = _candidate(tmp_path, reg, "good", True)
    bad = _candidate(tmp_path, reg, "bad", False)
    reg.promote("asr", good, actor="alice")
    with pytest.raises(PermissionError, match="gate FAILED"):
        reg.promote("asr", bad)
    with pytest.raises(ValueError, match="--reason"):
        reg.promote("asr", bad, force=True)
    assert reg.by_alias("asr", CHAMPION).version == good  # refusals move nothing
    assert [e.version for e in reg.history("asr")] == [good]

    v = reg.promote("asr", bad, force=True, reason="hotfix, ticket 7", actor="bob", run_id="run-9")
    assert v.tags["promotion_forced"] == "true" and v.tags["promotion_override_reason"] == "hotfix, ticket 7"
    assert v.tags["promoted_by"] == "bob" and v.tags["previous_champion"] == good
    assert v.tags["promotion_run_id"] == "run-9"
    last = reg.history("asr")[-1]
    assert (last.version, last.op, last.forced, last.prev, last.by) == (bad, "promote", True, good, "bob")
    assert "hotfix" in last.why
    # promoting the current champion again is a no-op, not a second history entry
    reg.promote("asr", bad, force=True, reason="again")
    assert len(reg.history("asr")) == 2


def test_promote_refuses_a_version_whose_artifacts_are_gone_or_changed(tmp_path, reg):
    v = _candidate(tmp_path, reg, "good", True)
    reg.client.set_model_version_tag(
        "asr", v, "checkpoint_sha256", "0" * 64
    )  # the stored file no longer matches
    with pytest.raises(PermissionError, match="gate record is for checkpoint"):  # the tag edit is caught
        reg.promote("asr", v)
    with pytest.raises(ValueError, match="does not match sha256"):  # even a forced move checks the file
        reg.promote("asr", v, force=True, reason="incident 3")
    assert reg.by_alias("asr", CHAMPION) is None and reg.history("asr") == []


def test_rollback_moves_champion_back_audits_and_reexports(tmp_path, reg, monkeypatch):
    v1 = _candidate(tmp_path, reg, "one", True)
    v2 = _candidate(tmp_path, reg, "two", True)
    v3 = _candidate(tmp_path, reg, "three", True)
    for v in (v1, v2, v3):
        reg.promote("asr", v, actor="pipeline")
    repo = tmp_path / "triton_repo"
    monkeypatch.setenv("ASR_REGISTRY_ACTOR", "oncall-carol")

    r = rollback_and_export(
        reg, "asr", "WER regression on live traffic", triton_repo=repo, run_id="incident-42"
    )
    assert (r.from_version, r.to_version, r.actor) == (v3, v2, "oncall-carol")
    assert reg.by_alias("asr", CHAMPION).version == v2
    restored, demoted = reg.get("asr", v2).tags, reg.get("asr", v3).tags
    assert restored["rollback.reason"] == "WER regression on live traffic"
    assert restored["rollback.restored_by"] == "oncall-carol" and restored["rollback.from_version"] == v3
    assert restored["rollback.run_id"] == "incident-42" and restored["rollback.restored_at"].endswith("Z")
    assert demoted["rollback.demoted_to"] == v2 and demoted["rollback.demoted_reason"].startswith("WER")
    last = reg.history("asr")[-1]
    assert (last.op, last.version, last.prev, last.run) == ("rollback", v2, v3, "incident-42")

    # serving re-pointed: the restored checkpoint is the newest Triton version, at its evaluated operating point
    assert r.triton_version == 1 and restored["rollback.triton_version"] == "1"
    for model in ("asr_offline", "asr_streaming"):
        vdir = repo / model / "1"
        assert (vdir / "model.nemo").read_bytes() == b"weights-two"
        side = json.loads((vdir / "model.json").read_text())
        assert side["sha256"] == restored["checkpoint_sha256"] and side["att_context_size"] == [56, 1]
        assert side["model_info"]["version"] == v2 and side["model_info"]["rollback"]["from_version"] == v3
    assert not [p for p in repo.iterdir() if p.name.startswith(".rollback-")]  # download dir cleaned up

    # a second rollback undoes one more step; --to can name any earlier champion
    r2 = rollback_and_export(reg, "asr", "still bad", triton_repo=repo)
    assert (r2.from_version, r2.to_version, r2.triton_version) == (v2, v1, 2)
    r3 = rollback_and_export(reg, "asr", "v3 was fine after all", to=v3, triton_repo=None)
    assert r3.to_version == v3 and r3.triton_version is None and reg.by_alias("asr", CHAMPION).version == v3
    assert history.stack(reg.history("asr"))[-1] == v3


def test_rollback_refusals_leave_everything_in_place(tmp_path, reg):
    with pytest.raises(ValueError, match="--reason"):
        rollback(reg, "asr", " ")
    v1 = _candidate(tmp_path, reg, "one", True)
    with pytest.raises(LookupError, match="no current champion"):
        rollback(reg, "asr", "why")
    reg.promote("asr", v1)
    with pytest.raises(LookupError, match="no previous champion"):
        rollback(reg, "asr", "why")
    v2 = _candidate(tmp_path, reg, "two", False)  # registered, never champion
    with pytest.raises(LookupError, match="never champion"):
        rollback(reg, "asr", "why", to=v2)
    assert reg.by_alias("asr", CHAMPION).version == v1 and len(reg.history("asr")) == 1
    assert reg.by_alias("asr", CHALLENGER).version == v2


def test_cli_promote_rollback_list_show(tmp_path, reg, capsys):
    from registry.__main__ import main

    uri = reg.client.tracking_uri
    v1 = _candidate(tmp_path, reg, "one", True)
    v2 = _candidate(tmp_path, reg, "two", False)
    cli = ["--tracking-uri", uri, "--model", "asr"]
    assert main([*cli, "promote", v1, "--actor", "alice"]) == 0
    assert main([*cli, "promote", v2]) == 2
    assert "gate FAILED" in capsys.readouterr().err
    assert main([*cli, "promote", v2, "--force", "--reason", "customer demo"]) == 0
    capsys.readouterr()
    assert main([*cli, "list"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["champion"] == v2 and [e["v"] for e in state["champion_history"]] == [v1, v2]
    assert (
        main([*cli, "rollback", "--reason", "forced build misbehaves", "--triton-repo", str(tmp_path / "tr")])
        == 0
    )
    out = capsys.readouterr().out
    assert f"champion v{v2} -> v{v1}" in out and "Triton version 1" in out
    assert main([*cli, "rollback", "--reason", "x", "--no-export"]) == 2  # nothing older than v1
    assert "no previous champion" in capsys.readouterr().err
    assert main([*cli, "show", v1, "--card"]) == 0
    assert "## Word error rate" in capsys.readouterr().out
    assert main([*cli, "show", v1]) == 0
    assert json.loads(capsys.readouterr().out)["tags"]["rollback.reason"] == "forced build misbehaves"
