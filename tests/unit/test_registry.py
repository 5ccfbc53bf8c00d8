"""Registry: real MLflow on a temp sqlite file; champion moves only through the gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from components.register_model.core import headline_metrics, model_card, read_data_md5, register_candidate
from registry.mlflow_adapter import Registry, get_client
from registry.policy import CHALLENGER, CHAMPION, decide_promotion
from registry.resolve import parse_models_uri, resolve_model


def test_policy_only_passing_or_forced_with_reason():
    assert decide_promotion(True).promote
    assert not decide_promotion(False).promote
    assert not decide_promotion(None).promote
    with pytest.raises(ValueError, match="--reason"):
        decide_promotion(False, force=True, reason=" ")
    forced = decide_promotion(False, force=True, reason="hotfix for outage #12")
    assert forced.promote and forced.forced and "hotfix" in forced.reason


def test_parse_models_uri():
    assert parse_models_uri("models:/asr@champion") == ("asr", None, "champion")
    assert parse_models_uri("models:/asr/3") == ("asr", "3", None)
    with pytest.raises(ValueError):
        parse_models_uri("models:/asr")


def test_read_data_md5(tmp_path):
    f = tmp_path / "data.dvc"
    f.write_text("outs:\n- md5: abc123.dir\n  path: data\n")
    assert read_data_md5(f) == "abc123.dir"
    f.write_text("foo: 1\n")
    with pytest.raises(ValueError, match="data.dvc"):
        read_data_md5(f)


def _model_dir(tmp_path, name, payload: bytes):
    d = tmp_path / name
    d.mkdir()
    (d / "model.nemo").write_bytes(payload)
    (d / "model.json").write_text(
        json.dumps(
            {
                "model_class": "EncDecRNNTBPEModelWithPrompt",
                "languages": ["bg-BG"],
                "base_model_sha256": "b" * 64,
            }
        )
    )
    return d


def _evaluation(tmp_path, name, passed: bool, model_dir=None):
    """An evaluation.json as evaluate_wer writes it; bound to `model_dir`'s checkpoint when given."""
    from components.common.io import sha256_file
    from components.evaluate_wer.gate import load_policy

    ev = {
        "att_context_size": [56, 1],
        "policy": load_policy(None),
        "candidate_sha256": sha256_file(model_dir / "model.nemo") if model_dir is not None else "",
        "metrics": {
            "base": {"streaming": {"bg-BG": {"wer_raw": 1.1, "wer_norm": 1.0, "cer": 0.8, "n_utts": 4}}},
            "candidate": {"streaming": {"bg-BG": {"wer_raw": 0.6, "wer_norm": 0.5, "cer": 0.3, "n_utts": 4}}},
        },
        "decision": {
            "passed": passed,
            "rules": [
                {
                    "rule": "target_improves:bg-BG",
                    "passed": passed,
                    "reason": "0.50 < 1.00" if passed else "no gain",
                }
            ],
        },
    }
    p = tmp_path / f"{name}.json"
    p.write_text(json.dumps(ev))
    return p, ev


_TEMPLATE_DB: dict = {}  # one per test session, shared by every module that imports the fixture


@pytest.fixture(scope="session")
def _migrated_registry_db(tmp_path_factory):
    """An empty MLflow sqlite store, created once: building the schema takes 10-15 s here, a copy 0.2 s."""
    if "db" not in _TEMPLATE_DB:
        db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
        client = get_client(f"sqlite:///{db}")
        client.search_registered_models()
        client.search_experiments()
        _TEMPLATE_DB["db"] = db
    return _TEMPLATE_DB["db"]


@pytest.fixture()
def tracking_uri(tmp_path, _migrated_registry_db):
    shutil.copyfile(_migrated_registry_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_register_promote_and_gate(tmp_path, tracking_uri):
    good = _model_dir(tmp_path, "good", b"good-weights")
    ev_good, _ = _evaluation(tmp_path, "ev_good", True, good)
    r1 = register_candidate(
        good,
        ev_good,
        "asr",
        data_md5="d1.dir",
        base_model_uri="models:/asr-base@base",
        tracking_uri=tracking_uri,
        commit="c0ffee",
    )
    assert r1.gate_passed and CHALLENGER in r1.aliases and CHAMPION not in r1.aliases
    reg = Registry(get_client(tracking_uri))
    v1 = reg.get("asr", r1.version)
    assert v1.tags["data_md5"] == "d1.dir" and v1.tags["git_commit"] == "c0ffee"
    assert v1.tags["gate.passed"] == "true" and len(v1.tags["checkpoint_sha256"]) == 64
    assert float(v1.tags["metrics.candidate.streaming.bg-BG.wer_norm"]) == 0.5
    assert v1.tags["att_context_size"] == v1.tags["params.att_context_size"] == "[56, 1]"  # latency point
    assert v1.tags["base_model_sha256"] == "b" * 64 and v1.tags["pipeline_run_id"] == "local"
    assert (
        "gate.reasons" in v1.tags
        and "## Word error rate" in reg.client.get_model_version("asr", "1").description
    )
    reg.promote("asr", r1.version, actor="test")
    assert reg.by_alias("asr", CHAMPION).version == r1.version

    bad = _model_dir(tmp_path, "bad", b"bad-weights")
    ev_bad, _ = _evaluation(tmp_path, "ev_bad", False, bad)
    r2 = register_candidate(bad, ev_bad, "asr", tracking_uri=tracking_uri)
    assert not r2.gate_passed
    assert reg.by_alias("asr", CHALLENGER).version == r2.version  # challenger = latest evaluated
    with pytest.raises(PermissionError, match="gate FAILED"):
        reg.promote("asr", r2.version)
    assert reg.by_alias("asr", CHAMPION).version == r1.version  # a failed gate leaves champion where it was

    forced = reg.promote("asr", r2.version, force=True, reason="manual override, ticket 7")
    assert forced.tags["promotion_forced"] == "true" and forced.tags["previous_champion"] == r1.version

    # resolution downloads and verifies the checkpoint
    path = resolve_model("models:/asr@champion", tmp_path / "dl", client=reg.client)
    assert open(path, "rb").read() == b"bad-weights"


def test_register_tags_the_evaluation_run_id(tmp_path, tracking_uri):
    """Lineage: the version names the MLflow run of its evaluation (the sync sidecar fetches the golden set
    from that run's artifacts); no evaluation run (MLflow off), no tag."""
    d = _model_dir(tmp_path, "m", b"w")
    ev, _ = _evaluation(tmp_path, "ev", True, d)
    reg = Registry(get_client(tracking_uri))
    r = register_candidate(d, ev, "asr", tracking_uri=tracking_uri, evaluation_run_id="0123abcd")
    assert reg.get("asr", r.version).tags["evaluation_run_id"] == "0123abcd"
    d2 = _model_dir(tmp_path, "m2", b"w2")
    ev2, _ = _evaluation(tmp_path, "ev2", True, d2)
    r2 = register_candidate(d2, ev2, "asr", tracking_uri=tracking_uri)
    assert "evaluation_run_id" not in reg.get("asr", r2.version).tags


def test_register_refuses_sidecar_mismatch(tmp_path, tracking_uri):
    d = _model_dir(tmp_path, "m", b"x")
    (d / "model.json").write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(ValueError, match="does not match"):
        Registry(get_client(tracking_uri)).register("asr", d)


def test_model_card_and_metrics(tmp_path):
    _, ev = _evaluation(tmp_path, "e", True)
    assert headline_metrics(ev)["base.streaming.bg-BG.wer_norm"] == 1.0
    ev["delta_ci"] = {"bg-BG": {"delta": -0.5, "low": -0.6, "high": -0.4, "confidence": 0.95}}
    summary = {
        "counts": {"train": {"bg-BG": 500}, "test": {"bg-BG": 60}},
        "hours": {"train": {"bg-BG": 0.5}, "test": {"bg-BG": 0.05}},
    }
    card = model_card(
        "asr",
        {"model_class": "X", "languages": ["bg-BG"], "rows_per_lang": {"bg-BG": 500}, "train_steps": 300},
        ev,
        {"data_md5": "m", "base_model_uri": "models:/b@base"},
        summary,
    )
    # the WER table: base vs candidate with the paired-bootstrap CI of the delta
    assert "| bg-BG | streaming | 1.000 | 0.600 | 0.500 | 0.300 | 4 | -0.500 [-0.600, -0.400] (95%) |" in card
    assert "**PASSED**" in card and "att_context_size `[56, 1]`" in card and "`models:/b@base`" in card
    assert "| train | 500 clips / 0.50 h |" in card and "bg-BG 500 (300 steps)" in card  # data statistics
    assert "## Intended use and limitations" in card and "target bg-BG" in card
    no_gate = model_card("asr", {}, {}, {})
    assert "no decision recorded" in no_gate and "(none recorded)" in no_gate


def test_cli_register_list_promote_refusal(tmp_path, tracking_uri, capsys):
    from registry.__main__ import main

    nemo = tmp_path / "base.nemo"
    nemo.write_bytes(b"nemotron-weights")
    assert (
        main(["--tracking-uri", tracking_uri, "--model", "m", "register", str(nemo), "--alias", "base"]) == 0
    )
    assert main(["--tracking-uri", tracking_uri, "--model", "m", "list"]) == 0
    assert '"base"' in capsys.readouterr().out
    # no gate decision recorded: promote refuses, and --force without a reason is refused too
    assert main(["--tracking-uri", tracking_uri, "--model", "m", "promote", "1"]) == 2
    assert main(["--tracking-uri", tracking_uri, "--model", "m", "promote", "1", "--force"]) == 2
    assert (
        main(["--tracking-uri", tracking_uri, "--model", "m", "promote", "1", "--force", "--reason", "ok"])
        == 0
    )
    assert "no gate record" in capsys.readouterr().err


def test_rerun_on_the_same_candidate_registers_no_second_version(tmp_path, tracking_uri):
    """Issue 16 item 7: register is never cached; a re-run with the same checkpoint and evaluation (another
    pipeline run id) reuses the version; a new evaluation of it (another policy) is a new version."""
    d = _model_dir(tmp_path, "m", b"weights")
    ev, _ = _evaluation(tmp_path, "ev", True, d)
    r1 = register_candidate(
        d,
        ev,
        "asr",
        data_md5="d.dir",
        pipeline_run_id="run-1",
        tracking_uri=tracking_uri,
        run={
            "data_rev": "HEAD~1",
            "data_commit": "c" * 40,
            "base_model_sha256": "b" * 64,
            "parameters": {"max_steps": "2"},
        },
    )
    r2 = register_candidate(
        d, ev, "asr", data_md5="d.dir", pipeline_run_id="run-2", tracking_uri=tracking_uri
    )
    assert r1.version == r2.version
    reg = Registry(get_client(tracking_uri))
    assert len(reg.versions("asr")) == 1
    info = reg.get("asr", r1.version)
    assert info.tags["data_rev"] == "HEAD~1" and info.tags["data_commit"] == "c" * 40
    lineage = json.loads(reg._artifact_bytes(info, "lineage.json"))
    assert (
        lineage["parameters"] == {"max_steps": "2"}
        and lineage["checkpoint_sha256"] == info.tags["checkpoint_sha256"]
    )
    ev2, _ = _evaluation(tmp_path, "ev2", False, d)
    assert (
        register_candidate(
            d, ev2, "asr", data_md5="d.dir", pipeline_run_id="run-3", tracking_uri=tracking_uri
        ).version
        != r1.version
    )
    with pytest.raises(ValueError, match="trained from base sha256 b{64}"):
        register_candidate(
            d,
            ev,
            "asr",
            data_md5="d.dir",
            pipeline_run_id="run-4",
            tracking_uri=tracking_uri,
            run={"base_model_sha256": "a" * 64},
        )


def test_an_unchanged_rerun_promotes_without_opening_the_registry(tmp_path, tracking_uri):
    """The re-run's register_model finds its version already champion and says so; promote_model then moves
    nothing and opens no registry (an unreachable one here), saving a process's MLflow start-up (about 3.5 s,
    docs/REPRODUCE.md). A first registration is not champion: promote moves the alias through the gate."""
    from components.register_model.core import promote

    d = _model_dir(tmp_path, "m", b"weights")
    ev, _ = _evaluation(tmp_path, "ev", True, d)
    first = register_candidate(
        d, ev, "asr", data_md5="d.dir", pipeline_run_id="run-1", tracking_uri=tracking_uri
    )
    assert not first.champion
    assert promote("asr", first.version, tracking_uri=tracking_uri, already_champion=first.champion) == "1"
    again = register_candidate(
        d, ev, "asr", data_md5="d.dir", pipeline_run_id="run-2", tracking_uri=tracking_uri
    )
    assert again.version == first.version and again.champion
    unreachable = "http://127.0.0.1:9"  # the discard port: any request would fail
    assert promote("asr", again.version, tracking_uri=unreachable, already_champion=again.champion) == "1"


def test_a_rerun_finds_its_registration_without_hashing_the_checkpoint(tmp_path, tracking_uri, monkeypatch):
    """The re-run's registration is found by its key (checkpoint sha256 from the sidecar + evaluation sha256),
    and nothing is uploaded: hashing the local .nemo again (2.5 GB for Nemotron, seconds) proves nothing the
    registry needs. A first registration still hashes it and checks it against the sidecar."""
    from components.common.io import sha256_file
    from registry import mlflow_adapter

    d = _model_dir(tmp_path, "m", b"weights")
    sidecar = json.loads((d / "model.json").read_text())  # as the fine-tune writes it: with the sha256
    (d / "model.json").write_text(json.dumps({**sidecar, "sha256": sha256_file(d / "model.nemo")}))
    ev, _ = _evaluation(tmp_path, "ev", True, d)
    first = register_candidate(
        d, ev, "asr", data_md5="d.dir", pipeline_run_id="run-1", tracking_uri=tracking_uri
    )

    def no_hashing(path):
        raise AssertionError(f"{path} hashed again")

    monkeypatch.setattr(mlflow_adapter, "sha256_file", no_hashing)
    again = register_candidate(
        d, ev, "asr", data_md5="d.dir", pipeline_run_id="run-2", tracking_uri=tracking_uri
    )
    assert again.version == first.version and again.sha256 == first.sha256


def test_parameters_text_keeps_multi_line_values():
    from components.register_model.core import parse_parameters

    policy = "\nmode: streaming\nrules:\n  target_improves: {min_improvement: -100.0}\n"
    text = f"max_steps=2\ngate_policy={policy}\ngate_floor_override_reason=a=b\nreplay_langs="
    assert parse_parameters(text) == {
        "max_steps": "2",
        "gate_policy": policy,
        "gate_floor_override_reason": "a=b",
        "replay_langs": "",
    }


def _finetune_run_with_checkpoint(tmp_path, tracking_uri) -> tuple[Path, str]:
    """A candidate folder and the fine-tune run that logged its model.nemo (as finetune_asr does): (dir, run id)."""
    from types import SimpleNamespace

    from components.finetune_asr.core import write_sidecar
    from components.finetune_asr.tracking import FinetuneTracker

    d = _model_dir(tmp_path, "cand", b"weights-finetuned")
    write_sidecar(d / "model.nemo", {"model_class": "EncDecRNNTBPEModelWithPrompt", "languages": ["bg-BG"]})
    tracker = FinetuneTracker(tracking_uri, {"lr": 1e-4})
    ft_run = tracker.start()
    tracker.finish(
        SimpleNamespace(
            final_loss=1.0,
            steps_done=2,
            seconds=1.0,
            resumed_from_step=0,
            replay_rows_distilled=0,
            val_wer={},
            resolved_config=None,
            sidecar_path=str(d / "model.json"),
            model_path=str(d / "model.nemo"),
        )  # fmt: skip
    )
    return d, ft_run


def test_register_reuses_the_finetune_runs_checkpoint_one_upload(tmp_path, tracking_uri):
    """The fine-tune run already logged model.nemo: the version is created from that artifact, not uploaded
    again (a Nemotron checkpoint is ~2.4 GB); download/verify/promote read it from there."""
    from components.common.io import sha256_file

    d, ft_run = _finetune_run_with_checkpoint(tmp_path, tracking_uri)
    ev, _ = _evaluation(tmp_path, "ev", True, d)
    r = register_candidate(d, ev, "asr", pipeline_run_id="run-1", tracking_uri=tracking_uri)
    reg = Registry(get_client(tracking_uri))
    info = reg.get("asr", r.version)
    assert info.tags["model_run_id"] == ft_run and info.run_id != ft_run
    assert info.source == f"{reg.client.get_run(ft_run).info.artifact_uri}/model"
    assert "model" not in {a.path for a in reg.client.list_artifacts(info.run_id)}  # no second upload
    store = Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"  # the store beside the db
    assert len(list(store.rglob("model.nemo"))) == 1
    nemo = reg.download(info, tmp_path / "dl")
    assert nemo.read_bytes() == b"weights-finetuned" and sha256_file(nemo) == info.tags["checkpoint_sha256"]
    reg.promote("asr", r.version)  # verifies the checkpoint (downloaded from the fine-tune run) and the gate
