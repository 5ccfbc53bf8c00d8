"""Release safety (issue 15): `champion` moves only on a gate record bound to the checkpoint; the gate's policy
has a floor, compares with the champion and means something statistically; offline means offline.

Real MLflow on a temp sqlite file (the fixture copies a migrated template), real files; nothing is mocked.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from components.evaluate_wer import gate as gate_mod
from components.evaluate_wer.gate import PolicyError, decide, load_policy
from components.register_model.core import register_candidate
from registry.gate_record import RECORD_TAG, GateRecordError
from registry.mlflow_adapter import Registry, get_client
from registry.policy import CHAMPION
from registry.rollback import rollback
from tests.unit.test_registry import _evaluation, _migrated_registry_db, _model_dir, tracking_uri  # noqa: F401

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def reg(tracking_uri):  # noqa: F811 (the fixture imported above)
    return Registry(get_client(tracking_uri))


def _candidate(tmp_path, reg, tag: str, passed: bool = True) -> str:
    d = _model_dir(tmp_path, tag, f"weights-{tag}".encode())
    ev, _ = _evaluation(tmp_path, f"ev-{tag}", passed, d)
    return register_candidate(d, ev, "asr", tracking_uri=reg.client.tracking_uri).version


# ----------------------------------------------------------------------------------- finding 1: CLI bypass
def test_cli_cannot_set_champion_directly(tmp_path, reg, capsys):
    from registry.__main__ import main

    nemo = tmp_path / "any.nemo"
    nemo.write_bytes(b"never gated")
    uri = reg.client.tracking_uri
    assert main(["--tracking-uri", uri, "--model", "asr", "register", str(nemo), "--alias", "champion"]) == 2
    assert "champion" in capsys.readouterr().err
    assert reg.by_alias("asr", CHAMPION) is None
    with pytest.raises(ValueError, match="champion"):
        reg.register("asr", nemo, aliases=(CHAMPION,))
    # registered under another alias, it still cannot be promoted without evidence
    assert main(["--tracking-uri", uri, "--model", "asr", "register", str(nemo), "--alias", "base"]) == 0
    assert main(["--tracking-uri", uri, "--model", "asr", "promote", "1"]) == 2
    assert "no gate record" in capsys.readouterr().err and reg.by_alias("asr", CHAMPION) is None


def test_alias_set_by_hand_is_never_accepted_by_rollback(tmp_path, reg):
    good1, good2 = _candidate(tmp_path, reg, "one"), _candidate(tmp_path, reg, "two")
    bad = _candidate(tmp_path, reg, "bad", passed=False)
    reg.promote("asr", good1)
    reg.promote("asr", good2)
    reg.client.set_registered_model_alias("asr", CHAMPION, bad)  # someone with the raw API or the UI
    entries, current = reg.reconcile("asr")
    assert current == bad and (entries[-1].version, entries[-1].op) == (bad, "reconcile")
    assert entries[-1].why.startswith("unverified")  # the history says it came without evidence
    reg.promote("asr", good2)  # the pipeline's next promotion puts a gated version back
    with pytest.raises(GateRecordError, match="gate FAILED"):
        rollback(reg, "asr", "go back to the hand-set one", to=bad)
    assert reg.by_alias("asr", CHAMPION).version == good2
    forced = rollback(reg, "asr", "incident 12: audited override", to=bad, force=True)
    assert forced.to_version == bad and reg.get("asr", bad).tags["gate.override_sha256"]


# --------------------------------------------------------------------------- finding 3: tags are not evidence
def test_tag_tampering_is_refused_by_name(tmp_path, reg):
    bad = _candidate(tmp_path, reg, "bad", passed=False)
    reg.client.set_model_version_tag("asr", bad, "gate.passed", "true")  # the old bypass
    with pytest.raises(GateRecordError, match="gate FAILED"):
        reg.promote("asr", bad)
    good = _candidate(tmp_path, reg, "good")
    reg.client.set_model_version_tag("asr", good, RECORD_TAG, "0" * 64)
    with pytest.raises(GateRecordError, match="does not match its tag"):
        reg.promote("asr", good)
    other = _candidate(tmp_path, reg, "other")
    info = reg.get("asr", other)
    reg.client.set_model_version_tag(
        "asr", good, RECORD_TAG, info.tags[RECORD_TAG]
    )  # another version's record
    with pytest.raises(GateRecordError, match="does not match its tag"):
        reg.promote("asr", good)
    assert reg.by_alias("asr", CHAMPION) is None
    v = reg.get("asr", other)
    assert v.tags["gate.policy_sha256"] and len(v.tags[RECORD_TAG]) == 64


def test_string_false_never_passes(tmp_path, reg):
    d = _model_dir(tmp_path, "m", b"weights")
    ev_path, ev = _evaluation(tmp_path, "ev", True, d)
    ev["decision"]["passed"] = "false"
    ev_path.write_text(json.dumps(ev))
    with pytest.raises(ValueError, match="decision.passed must be a JSON boolean"):
        register_candidate(d, ev_path, "asr", tracking_uri=reg.client.tracking_uri)

    from components.evaluate_wer.component import release_gate

    out = tmp_path / "evaluation"
    out.mkdir()
    (out / "evaluation.json").write_text(json.dumps(ev))
    with pytest.raises(ValueError, match="JSON boolean"):
        release_gate.python_func(evaluation=type("A", (), {"path": str(out)})())


def test_evaluation_for_another_checkpoint_is_refused(tmp_path, reg):
    d = _model_dir(tmp_path, "m", b"weights")
    other = _model_dir(tmp_path, "o", b"other weights")
    ev, _ = _evaluation(tmp_path, "ev", True, other)
    with pytest.raises(ValueError, match="candidate_sha256"):
        register_candidate(d, ev, "asr", tracking_uri=reg.client.tracking_uri)


# ----------------------------------------------------------------------------- finding 2: the sidecar verifies
def _load_sync():
    name = "infra_k8s_sync_champion"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "infra/k8s/base/triton/sync_champion.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def test_sidecar_refuses_an_ungated_alias_and_keeps_serving(tmp_path, reg):
    sync = _load_sync()
    repo = tmp_path / "models"
    good = _candidate(tmp_path, reg, "good")
    reg.promote("asr", good)
    first = sync.sync_once(repo, "asr", client=reg.client)
    assert first.action == "exported" and first.served_version == 1
    bad = _candidate(tmp_path, reg, "bad", passed=False)
    reg.client.set_registered_model_alias("asr", CHAMPION, bad)  # one curl to the MLflow API
    metrics = sync.SyncMetrics()
    r = sync.sync_once(repo, "asr", client=reg.client, metrics=metrics)
    assert r.action == "refused" and r.registry_version == bad and "gate FAILED" in r.error
    assert sync.served_sha256(repo) == (1, reg.get("asr", good).tags["checkpoint_sha256"])  # last good serves
    text = metrics.render()
    assert 'asr_sync_refusals_total{model="asr"} 1' in text and 'asr_sync_refused{model="asr"} 1' in text
    reg.promote("asr", good)
    assert sync.sync_once(repo, "asr", client=reg.client, metrics=metrics).action == "unchanged"
    assert 'asr_sync_refused{model="asr"} 0' in metrics.render()


# -------------------------------------------------------------- findings 4, 5: policy floor, champion, CI rule
def test_policy_floor_refuses_a_weaker_policy_unless_forced():
    floor = gate_mod.load_floor()
    assert gate_mod.floor_violations(load_policy(None), floor) == []  # the default meets the floor
    weak = load_policy(
        "rules:\n  target_improves: {min_improvement: -0.5}\n  replay_max_regression: {max_increase: 0.3}\n"
    )
    v = gate_mod.floor_violations(weak, floor)
    assert any("target_improves.min_improvement -0.5" in x for x in v)
    assert any("replay_max_regression.max_increase 0.3" in x for x in v)
    assert any("target_ci_below_zero" in x and "missing" in x for x in v)
    assert any("champion_not_worse" in x for x in v)
    with pytest.raises(PolicyError, match="below the policy floor"):
        gate_mod.enforce_floor(weak)
    info = gate_mod.enforce_floor(weak, override_reason="experiment 4, approved by the ML lead")
    assert info["violations"] == v and info["override_reason"].startswith("experiment 4")
    off = load_policy("rules:\n  target_ci_below_zero: {enabled: false}\n")
    assert any("target_ci_below_zero" in x and "disabled" in x for x in gate_mod.floor_violations(off, floor))


def _noise(n=40):
    """Per-utterance errors of base and of a candidate that differs from it by noise: +-2 errors on every
    utterance, one error fewer on two of them (a 0.5-point "improvement")."""
    words = [10] * n
    base = [5] * n
    cand = [5 + (2 if i % 2 else -2) - (1 if i < 2 else 0) for i in range(n)]
    return base, cand, words


def test_ci_rule_refuses_an_improvement_that_is_noise():
    from components.common.wer import paired_bootstrap

    b_err, c_err, words = _noise()
    ci = paired_bootstrap(b_err, c_err, words, n_resamples=1000, seed=0)
    b, c = sum(b_err) / sum(words), sum(c_err) / sum(words)
    m = {
        "target_langs": ["bg-BG"],
        "replay_langs": [],
        "metrics": {
            model: {mode: {"bg-BG": {"wer_norm": w}} for mode in ("streaming", "offline")}
            for model, w in (("base", b), ("candidate", c))
        },
        "delta_ci": {"bg-BG": ci.__dict__},
    }
    assert c < b and ci.delta < 0 and ci.low < 0 < ci.high  # better on average, but the CI straddles zero
    d = decide(m, load_policy(None))
    failed = [r.rule for r in d.rules if not r.passed]
    assert not d.passed and failed == [
        "target_ci_below_zero[bg-BG]"
    ]  # it did "improve", but not beyond noise


def _with_champion(cand_minus_champ_ci: dict | None) -> dict:
    m = {
        "target_langs": ["bg-BG"],
        "replay_langs": [],
        "metrics": {
            "base": {"streaming": {"bg-BG": {"wer_norm": 1.1}}, "offline": {"bg-BG": {"wer_norm": 1.1}}},
            "candidate": {
                "streaming": {"bg-BG": {"wer_norm": 0.60}},
                "offline": {"bg-BG": {"wer_norm": 0.58}},
            },
        },
        "delta_ci": {"bg-BG": {"delta": -0.5, "low": -0.6, "high": -0.4}},
    }
    if cand_minus_champ_ci is not None:
        m["metrics"]["champion"] = {"streaming": {"bg-BG": {"wer_norm": 0.45}}}
        m["champion_delta_ci"] = {"bg-BG": cand_minus_champ_ci}
    return m


def test_candidate_worse_than_the_champion_is_refused():
    policy = load_policy(None)
    worse = decide(_with_champion({"delta": 0.15, "low": 0.08, "high": 0.22}), policy)
    assert not worse.passed and [r.rule for r in worse.rules if not r.passed] == ["champion_not_worse[bg-BG]"]
    assert "champion" in next(r.reason for r in worse.rules if r.rule == "champion_not_worse[bg-BG]")
    tied = decide(_with_champion({"delta": 0.02, "low": -0.03, "high": 0.07}), policy)
    assert tied.passed, tied.summary()  # within the CI of the champion: not worse beyond noise
    first = decide(_with_champion(None), policy)  # no champion yet: compared with the base
    rule = next(r for r in first.rules if r.rule == "champion_not_worse[bg-BG]")
    assert first.passed and "no champion" in rule.reason and "base" in rule.reason


def test_default_policy_is_the_documented_one():
    p = load_policy(None)["rules"]
    assert p["target_ci_below_zero"].get("enabled", True) is not False
    assert p["replay_max_regression"]["max_increase"] == 0.05
    assert 0 < p["target_ceiling"]["max_wer"] < 1.0
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    registry_doc = (REPO / "docs" / "REGISTRY.md").read_text(encoding="utf-8")
    ceiling = f"{p['target_ceiling']['max_wer'] * 100:.0f} %"
    for doc in (readme, registry_doc):
        assert ceiling in doc and "5 points" in doc and "champion" in doc


# ------------------------------------------------------------------------- finding 6: offline means offline
def test_offline_lookahead_is_the_largest_supported():
    from components.evaluate_wer.core import offline_att_context_size

    assert offline_att_context_size([[56, 0], [56, 1], [56, 6], [56, 13]]) == [56, 13]
    assert offline_att_context_size([[70, 13], [56, 13], [56, 3]]) == [70, 13]
    assert offline_att_context_size([[56, 0], [56, 3]], "[56,0]") == [56, 0]  # an explicit parameter wins
    with pytest.raises(ValueError, match="not supported"):
        offline_att_context_size([[56, 3]], "[56,9]")


def test_asr_offline_is_exported_at_the_largest_lookahead(tmp_path):
    from components.export_triton.core import export_model

    d = tmp_path / "m"
    d.mkdir()
    (d / "model.nemo").write_bytes(b"w")
    (d / "model.json").write_text(json.dumps({"att_context_sizes": [[56, 0], [56, 1], [56, 13]]}))
    export_model(d / "model.nemo", tmp_path / "repo", None, {}, [56, 1])
    off = (tmp_path / "repo" / "asr_offline" / "config.pbtxt").read_text()
    st = (tmp_path / "repo" / "asr_streaming" / "config.pbtxt").read_text()
    assert 'string_value: "[56, 13]"' in off and 'string_value: "[56, 1]"' in st
    export_model(d / "model.nemo", tmp_path / "repo2", None, {}, [56, 1], offline_att_context_size=[56, 0])
    assert 'string_value: "[56, 0]"' in (tmp_path / "repo2" / "asr_offline" / "config.pbtxt").read_text()


def test_gate_record_unit_checks():
    from registry.gate_record import build_record, check_record

    ev = {"candidate_sha256": "c" * 64, "policy": {"rules": {}}, "decision": {"passed": True, "rules": []}}
    text = json.dumps(ev)
    rec = build_record(text, "c" * 64)
    raw = rec.to_json().encode()
    from registry.gate_record import sha256_bytes

    assert check_record("v1", raw, sha256_bytes(raw), "c" * 64, text.encode()).passed is True
    with pytest.raises(GateRecordError, match="not " + "d" * 64):
        check_record("v1", raw, sha256_bytes(raw), "d" * 64, text.encode())
    tampered = copy.deepcopy(ev)
    tampered["decision"]["passed"] = False
    with pytest.raises(GateRecordError, match="evaluation_sha256"):
        check_record("v1", raw, sha256_bytes(raw), "c" * 64, json.dumps(tampered).encode())
