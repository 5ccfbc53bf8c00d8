"""The remaining kfp components, each run by kfp.local as the pipeline runs it, cheaply (a stand-in checkpoint
of bytes: none of these steps loads the model): materialize_data, resolve_base, register_model (+ its model card as a KFP
Markdown output, what the Kubeflow UI shows), release_gate, promote_model, export_triton.

validate_data and build_manifest: test_data_components.py; evaluate_wer: tests/unit/test_evaluate_wer.py;
preflight_finetune and finetune_asr (NeMo): the whole pipeline in tests/e2e/test_pipeline_e2e.py and
test_run_local_failures.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp import dsl, local

from components.common.io import sha256_file
from components.evaluate_wer.component import release_gate
from components.evaluate_wer.gate import load_policy
from components.export_triton.component import export_triton
from components.materialize_data.component import materialize_data
from components.register_model.component import promote_model, register_model
from components.resolve_base.component import resolve_base

pytestmark = pytest.mark.slow  # five kfp.local subprocesses (~1 min)


@pytest.fixture()
def kfp_root(tmp_path) -> Path:
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    return tmp_path / "kfp"


def _inputs(tmp_path: Path, passed: bool) -> tuple[Path, Path]:
    model = tmp_path / "candidate"
    model.mkdir()
    (model / "model.nemo").write_bytes(b"stand-in checkpoint")
    (model / "model.json").write_text(
        json.dumps({"model_class": "EncDecRNNTBPEModelWithPrompt", "languages": ["bg-BG"]})
    )
    ev = tmp_path / "evaluation"
    ev.mkdir()
    (ev / "evaluation.json").write_text(
        json.dumps(
            {
                "candidate_sha256": sha256_file(model / "model.nemo"),
                "att_context_size": [56, 1],
                "target_langs": ["bg-BG"],
                "policy": load_policy(None),
                "metrics": {
                    m: {"streaming": {"bg-BG": {"wer_raw": w, "wer_norm": w, "cer": w / 2, "n_utts": 4}}}
                    for m, w in (("base", 0.9), ("candidate", 0.5))
                },
                "decision": {
                    "passed": passed,
                    "rules": [
                        {
                            "rule": "target_improves[bg-BG]",
                            "value": 0.4,
                            "threshold": 0.0,
                            "passed": passed,
                            "reason": "0.9 -> 0.5",
                        }
                    ],
                },
            }
        )
    )
    return model, ev


def test_materialize_data_and_resolve_base_components(kfp_root, tmp_path, monkeypatch):
    """The first two steps as kfp.local runs them: the dataset's DVC md5 (data_rev empty: the folder in place)
    and the base pinned to its sha256 with the code version."""
    from components.common.io import sha256_file

    data = tmp_path / "data"
    (data / "clips").mkdir(parents=True)
    (data / "metadata.csv").write_text("audio,text,lang,speaker\nclips/a.wav,x,bg-BG,s\n")
    (data / "clips" / "a.wav").write_bytes(b"RIFF")
    t = materialize_data(
        data_repo="", data_rev="", data_root=str(data), data_cache=str(tmp_path / "versions")
    )
    assert t.outputs["data_root"] == str(data) and t.outputs["data_md5"].endswith(".dir")
    assert t.outputs["data_commit"] == ""
    (tmp_path / "base.nemo").write_bytes(b"weights")
    monkeypatch.setenv("ASR_GIT_COMMIT", "c0ffee")
    b = resolve_base(base_model_uri=str(tmp_path / "base.nemo"), base_model_sha256="", mlflow_tracking_uri="")
    assert (
        b.outputs["sha256"] == sha256_file(tmp_path / "base.nemo") and b.outputs["code_version"] == "c0ffee"
    )


def test_register_gate_promote_export_components(kfp_root, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    model, ev = _inputs(tmp_path, passed=True)
    repo = tmp_path / "triton_repo"

    def release(model_uri: str, evaluation_uri: str) -> None:
        m = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model)
        e = dsl.importer(artifact_uri=evaluation_uri, artifact_class=dsl.Artifact)
        reg = register_model(
            candidate=m.output,
            evaluation=e.output,
            settings="model_name=asr",
            data_md5="md5",
            base_model_uri="base.nemo",
            git_commit="c0ffee",
            mlflow_tracking_uri=uri,
            pipeline_run_id="kfp-local",
        )
        gate = release_gate(evaluation=e.output)
        with dsl.If(gate.output == True):  # noqa: E712 (a kfp condition, not a Python comparison)
            promoted = promote_model(
                model_name="asr", version=reg.outputs["version"], mlflow_tracking_uri=uri
            )
            exported = export_triton(
                model_name="asr", settings=f"triton_repo={repo}", mlflow_tracking_uri=uri
            )
            exported.after(promoted)

    release.__annotations__ = {"model_uri": str, "evaluation_uri": str, "return": None}
    dsl.pipeline(release)(model_uri=str(model), evaluation_uri=str(ev))

    card = next(kfp_root.rglob("register-model/model_card"))  # the Markdown artifact the Kubeflow UI renders
    text = card.read_text(encoding="utf-8")
    assert text.startswith("# asr v1") and "## Word error rate" in text and "Gate: **PASSED**" in text
    from registry.mlflow_adapter import Registry, get_client

    reg = Registry(get_client(uri))
    assert reg.by_alias("asr", "champion").version == "1"
    side = json.loads((repo / "asr_offline" / "1" / "model.json").read_text())
    assert side["sha256"] == sha256_file(model / "model.nemo") and side["model_info"]["version"] == "1"
