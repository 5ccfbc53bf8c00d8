"""The whole chain on a tiny corpus: real DVC, real kfp.local pipeline, real MLflow (sqlite), real tritonserver.

Two pipeline runs over the same data: one with a permissive gate (candidate promoted, exported, served: the
server's transcripts must equal in-process inference on the exported checkpoint), one with an impossible gate
(candidate registered as challenger, `champion` and Triton untouched).
"""

from __future__ import annotations

import json

import pytest
import soundfile as sf

from components.common.io import sha256_file
from components.common.manifest import read_manifest
from pipelines.local import pipeline_arguments, run_local, task_outputs
from registry.mlflow_adapter import Registry, get_client
from registry.policy import BASE, CHALLENGER, CHAMPION
from serving.server import tritonserver_available
from tests.e2e.world import (
    FLOOR_OVERRIDE,
    PERMISSIVE,
    dvc_repo,
    dvc_version,
    emitting,
    tiny_base_model,
    tiny_corpus,
    tiny_params,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.triton]

# A replay-language regression: any candidate counts as regressing el-GR/es-ES when no increase at all (not even
# a negative one: replay languages would have to get 10,000 points *better*) is allowed. Only those rules fail.
REPLAY_REGRESSION = PERMISSIVE.replace("max_increase: 100.0", "max_increase: -100.0")
MODEL = "e2e-asr"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny versioned dataset, a registered base model and the arguments of a local run."""
    if not tritonserver_available():
        pytest.skip("tritonserver binary (nvidia-pytriton) not installed")
    root = tmp_path_factory.mktemp("e2e")
    tiny_corpus(root / "data")
    dvc_repo(root)
    md5 = dvc_version(root)  # not committed: the run reads data/ in place

    uri = f"sqlite:///{root / 'mlflow.db'}"
    base = tiny_base_model(root)
    Registry(get_client(uri)).register(
        f"{MODEL}-base", emitting(base, root / "base_emitting"), aliases=(BASE,)
    )
    # data_rev empty: data/ in place
    args = pipeline_arguments(tiny_params(MODEL), f"models:/{MODEL}-base@{BASE}")
    args.update(data_root=str(root / "data"), triton_repo=str(root / "triton_repo"), mlflow_tracking_uri=uri)
    return {"root": root, "args": args, "uri": uri, "md5": md5}


def test_pipeline_promotes_exports_and_serves(world, monkeypatch):
    root, uri = world["root"], world["uri"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run_dir = run_local(
        {**world["args"], "gate_policy": PERMISSIVE, "gate_floor_override_reason": FLOOR_OVERRIDE},
        root / "kfp",
    )

    # validation + manifests
    assert task_outputs(run_dir, "validate-data")["passed"] is True
    counts = json.loads(task_outputs(run_dir, "build-manifest")["Output"])
    assert counts  # per split/language counts came back
    test_rows = read_manifest(run_dir / "build-manifest" / "manifests" / "test.jsonl")
    assert {r["lang"] for r in test_rows} == {"el-GR", "bg-BG", "es-ES"}

    # evaluation: both models, both modes, every language, and a decision
    ev = json.loads((run_dir / "evaluate-wer" / "evaluation" / "evaluation.json").read_text())
    for model in ("base", "candidate"):
        for mode in ("streaming", "offline"):
            assert {"el-GR", "bg-BG", "es-ES"} <= set(ev["metrics"][model][mode])
    assert ev["decision"]["passed"] is True and ev["decision"]["rules"]

    # registry: one version, challenger and champion, lineage tags
    reg = Registry(get_client(uri))
    v1 = reg.by_alias(MODEL, CHAMPION)
    assert v1 is not None and CHALLENGER in v1.aliases
    assert v1.tags["data_md5"] == world["md5"] and v1.tags["gate.passed"] == "true"
    assert (
        v1.tags["gate.floor_override_reason"] == FLOOR_OVERRIDE and len(v1.tags["gate.record_sha256"]) == 64
    )
    assert v1.tags["base_model_uri"] == f"models:/{MODEL}-base@{BASE}"
    assert v1.tags["pipeline_run_id"] not in ("", "local")

    # Triton repository: version 1 of both models holds exactly the registered checkpoint
    repo = root / "triton_repo"
    for model in ("asr_offline", "asr_streaming"):
        assert sha256_file(repo / model / "1" / "model.nemo") == v1.tags["checkpoint_sha256"]

    # serving: the real tritonserver answers exactly what in-process inference on that checkpoint answers
    from components.common.asr_infer import AsrModel
    from components.evaluate_wer.core import parse_att_context_size
    from serving.client import transcribe_offline, transcribe_streaming
    from serving.server import TritonServer

    att = parse_att_context_size(task_outputs(run_dir, "preflight-finetune")["att_context_size"])
    assert att == [56, 1]  # the tiny-demo recipe's deploy lookahead, resolved by the preflight
    offline_att = parse_att_context_size(
        task_outputs(run_dir, "preflight-finetune")["offline_att_context_size"]
    )
    assert offline_att == [56, 13]  # asr_offline serves at the checkpoint's most accurate lookahead
    local = AsrModel.load(str(repo / "asr_offline" / "1" / "model.nemo"))
    rows = test_rows[:2]
    audios = [sf.read(r["audio_filepath"], dtype="float32")[0] for r in rows]
    expected = local.transcribe(audios, [r["lang"] for r in rows], att_context_size=offline_att)
    expected_stream = []
    for audio, r in zip(audios, rows, strict=True):
        state = local.new_stream(r["lang"], att)
        text = ""
        for i in range(0, len(audio), 2560):
            text = local.stream_step(state, audio[i : i + 2560], last=i + 2560 >= len(audio))
        expected_stream.append(text)
    assert any(expected) and any(expected_stream), "the model emits nothing: parity below would be trivial"
    with TritonServer(repo, models=["asr_offline", "asr_streaming"]) as server:
        got = [transcribe_offline(server.grpc_url, a, r["lang"]) for a, r in zip(audios, rows, strict=True)]
        got_stream = [
            transcribe_streaming(server.grpc_url, a, r["lang"], chunk_s=0.16, sequence_id=77 + i)
            for i, (a, r) in enumerate(zip(audios, rows, strict=True))
        ]
    assert got == expected
    assert got_stream == expected_stream


def test_failed_gate_moves_nothing(world, monkeypatch):
    root, uri = world["root"], world["uri"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    reg = Registry(get_client(uri))
    champion_before = reg.by_alias(MODEL, CHAMPION)
    run_dir = run_local(
        {**world["args"], "gate_policy": REPLAY_REGRESSION, "gate_floor_override_reason": FLOOR_OVERRIDE},
        root / "kfp",
    )

    ev = json.loads((run_dir / "evaluate-wer" / "evaluation" / "evaluation.json").read_text())
    assert ev["decision"]["passed"] is False
    failed = sorted(r["rule"] for r in ev["decision"]["rules"] if not r["passed"])
    assert failed == ["replay_max_regression[el-GR]", "replay_max_regression[es-ES]"]
    assert not (run_dir / "export-triton").exists()  # the gated branch never ran
    challenger = reg.by_alias(MODEL, CHALLENGER)
    assert challenger.tags["gate.passed"] == "false"
    if champion_before is not None:  # order-independent: the first test may or may not have run
        assert reg.by_alias(MODEL, CHAMPION).version == champion_before.version
        assert challenger.version != champion_before.version
        assert (
            ev["champion_sha256"] == champion_before.tags["checkpoint_sha256"]
        )  # scored against the champion
        assert set(ev["champion_delta_ci"]) == {"bg-BG", "el-GR", "es-ES"}
    else:
        assert reg.by_alias(MODEL, CHAMPION) is None
    assert not (root / "triton_repo" / "asr_offline" / "2").exists()
