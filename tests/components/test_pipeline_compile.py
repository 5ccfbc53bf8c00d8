"""The compiled pipeline YAML is what the Kubeflow UI gets: it must load back and carry every step and every
cluster setting (GPU, node selector, tolerations, /dev/shm, PVC, secrets) as pipeline parameters."""

from __future__ import annotations

import inspect

import pytest
import yaml
from google.protobuf import json_format
from kfp import compiler, components
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines.asr_pipeline import asr_finetune_pipeline

STEPS = [
    "materialize-data",
    "resolve-base",
    "validate-data",
    "build-manifest",
    "finetune-asr",
    "evaluate-wer",
    "register-model",
    "release-gate",
    "promote-model",
    "export-triton",
]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("compile") / "pipeline.yaml"
    compiler.Compiler().compile(asr_finetune_pipeline, str(out))
    docs = list(yaml.safe_load_all(out.read_text()))
    return out, docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _tasks(spec: dict) -> dict:
    """Every task of the DAG, the ones inside the dsl.If branch and the fan-out's ParallelFor included."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for name, comp in spec["components"].items():
        if name.startswith(("comp-condition", "comp-for-loop")):
            tasks.update(comp["dag"]["tasks"])
    return tasks


def test_compile_loads_back_with_every_step(compiled):
    out, spec, _ = compiled
    pb = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())  # strict: unknown fields raise
    executors = set(pb.deployment_spec.fields["executors"].struct_value.fields)
    for step in STEPS:
        assert f"exec-{step}" in executors, step
    # the gate: promote/export sit inside the dsl.If branch
    gate = next(t for name, t in spec["root"]["dag"]["tasks"].items() if name.startswith("condition"))
    assert "release-gate" in gate["triggerPolicy"]["condition"]
    # and the YAML loads back as a component with the pipeline's parameters
    comp = components.load_component_from_file(str(out))
    assert {"data_root", "base_model_uri", "target_langs", "att_context_size"} <= set(
        comp.component_spec.inputs
    )


def test_gpu_settings_come_from_pipeline_parameters(compiled):
    _, spec, k8s = compiled
    res = spec["deploymentSpec"]["executors"]["exec-finetune-asr"]["container"]["resources"]
    assert res["accelerator"]["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpus']}}"
    assert res["accelerator"]["resourceType"] == "{{$.inputs.parameters['pipelinechannel--gpu_resource']}}"
    assert "train_memory" in res["resourceMemoryLimit"]
    ft = k8s["exec-finetune-asr"]
    assert ft["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"] == "gpu_node_selector"
    assert ft["tolerations"][0]["tolerationJson"]["componentInputParameter"] == "gpu_tolerations"
    assert ft["emptyDirMounts"][0] == {
        "medium": "Memory",
        "mountPath": "/dev/shm",
        "sizeLimit": "16Gi",
        "volumeName": "dshm",
    }
    assert ft["pvcMount"][0]["pvcNameParameter"]["componentInputParameter"] == "data_pvc"
    assert ft["pvcMount"][0]["mountPath"] == "/mnt"
    secret = ft["secretAsEnv"][0]
    assert secret["secretNameParameter"]["componentInputParameter"] == "credentials_secret"
    assert {e["envVar"] for e in secret["keyToEnv"]} >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    # Lightning devices/strategy are wired from the same parameters as the GPU request
    args = _tasks(spec)["finetune-asr"]["inputs"]["parameters"]
    assert args["devices"]["componentInputParameter"] == "gpus"
    assert args["strategy"]["componentInputParameter"] == "strategy"
    assert args["work_root"]["componentInputParameter"] == "work_root"
    # the defaults a user sees in the UI
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["gpu_node_selector"]["defaultValue"] == {"nvidia.com/gpu.present": "true"}
    assert params["gpu_tolerations"]["defaultValue"][0]["key"] == "nvidia.com/gpu"
    # the evaluation runs on one GPU of the same kind, with the same placement
    assert (
        k8s["exec-evaluate-wer"]["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"]
        == "gpu_node_selector"
    )
    # every step that talks to MLflow/S3 gets the credentials
    for step in ("finetune-asr", "evaluate-wer", "register-model", "promote-model", "export-triton"):
        assert k8s[f"exec-{step}"]["secretAsEnv"], step


def test_every_parameter_is_described_for_the_ui(compiled):
    _, spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == set(inspect.signature(asr_finetune_pipeline.pipeline_func).parameters)
    undocumented = [name for name, p in params.items() if len(p.get("description", "")) < 15]
    assert not undocumented


def test_display_names_and_caching_policy(compiled):
    _, spec, _ = compiled
    tasks = _tasks(spec)
    for name in STEPS:
        assert tasks[name]["taskInfo"]["name"][0].isupper(), name  # a display name, not the function name
    cached = {name for name, t in tasks.items() if t.get("cachingOptions", {}).get("enableCache")}
    # the steps that compute are cached; the first two (they decide the keys) and the side effects are not
    # (the fan-out: its plan is a function of build_pods and the data version, its pods are keyed by the data
    # md5 like the merge: it rides in the loop's items, see fanout_shards)
    assert cached == {
        "validate-data",
        "build-manifest",
        "fanout-shards",
        "build-manifest-shard",
        "preflight-finetune",
        "finetune-asr",
        "evaluate-wer",
    }
    shard_version = tasks["build-manifest-shard"]["inputs"]["parameters"]["data_version"]
    assert shard_version["componentInputParameter"] == "pipelinechannel--fanout-shards-Output-loop-item"
    assert shard_version["parameterExpressionSelector"] == 'parseJson(string_value)["data_version"]'
    plan = tasks["fanout-shards"]["inputs"]["parameters"]["data_version"]["taskOutputParameter"]
    assert plan == {"outputParameterKey": "data_md5", "producerTask": "materialize-data"}
    for step in ("validate-data", "build-manifest"):  # the cache key follows the dataset version's DVC md5
        src = tasks[step]["inputs"]["parameters"]["data_version"]["taskOutputParameter"]
        assert src == {"outputParameterKey": "data_md5", "producerTask": "materialize-data"}, step
    # the fine-tune's key: (data md5, base sha256, every training setting, code version) and nothing per-run
    ft = tasks["finetune-asr"]["inputs"]["parameters"]
    assert ft["data_md5"]["taskOutputParameter"]["producerTask"] == "materialize-data"
    assert ft["base_model_sha256"]["taskOutputParameter"] == {
        "outputParameterKey": "sha256",
        "producerTask": "resolve-base",
    }
    assert ft["code_version"]["taskOutputParameter"]["outputParameterKey"] == "code_version"
    assert ft["base_model_uri"]["taskOutputParameter"]["outputParameterKey"] == "uri"  # pinned, not the alias
    for step in sorted(cached):
        params = tasks[step]["inputs"].get("parameters", {})
        assert not [n for n, p in params.items() if "pipeline_job_uuid" in str(p)], step
    for step in ("register-model", "promote-model"):  # the registry links back to the run
        run_id = tasks[step]["inputs"]["parameters"]["pipeline_run_id"]
        assert run_id == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}, step
    reg = tasks["register-model"]["inputs"]["parameters"]
    assert reg["git_commit"]["taskOutputParameter"]["producerTask"] == "resolve-base"
    assert reg["data_md5"]["taskOutputParameter"]["producerTask"] == "materialize-data"
    assert tasks["finetune-asr"]["retryPolicy"]["maxRetryCount"] >= 1
    # lineage: the registered version is tagged with the MLflow run id of its evaluation
    src = tasks["register-model"]["inputs"]["parameters"]["evaluation_run_id"]["taskOutputParameter"]
    assert src == {"producerTask": "evaluate-wer", "outputParameterKey": "mlflow_run_id"}
    # an unchanged re-run: register_model finds its version already champion and promote opens no registry
    champion = tasks["promote-model"]["inputs"]["parameters"]["already_champion"]
    assert champion == {"componentInputParameter": "pipelinechannel--register-model-champion"}, champion


def test_dataset_version_is_a_parameter_and_a_params_yaml_key():
    from pipelines.local import load_params

    params = inspect.signature(asr_finetune_pipeline.pipeline_func).parameters
    assert {"data_rev", "data_repo", "data_cache", "base_model_sha256"} <= set(params)
    assert "data_md5" not in params and "git_commit" not in params  # outputs of steps, never typed
    assert load_params()["run"]["data_rev"] == ""


# --- issue 16 (datascale): audio stays on the data volume; conversion fans out ---------------------------------
# Every artifact a step outputs (what KFP uploads to the artifact store) and what it may hold. Audio is in none:
# build_manifest's `manifests` holds manifests + summary.json + build.json when build_root is set (the
# cluster default, tests/unit/test_datascale.py builds one and lists it); the fan-out pods output parameters.
ARTIFACT_OUTPUTS = {
    "comp-validate-data": {"report": "system.Metrics", "data_docs": "system.HTML"},
    "comp-build-manifest": {"manifests": "system.Dataset"},
    "comp-preflight-finetune": {"report": "system.Artifact"},
    "comp-finetune-asr": {"model": "system.Model"},
    "comp-evaluate-wer": {
        "evaluation": "system.Artifact",
        "metrics": "system.Metrics",
        "report": "system.HTML",
    },
    "comp-register-model": {"model_card": "system.Markdown"},
}


def test_no_audio_travels_through_artifacts_at_scale(compiled):
    _, spec, k8s = compiled
    outputs = {
        name: {k: v["artifactType"]["schemaTitle"] for k, v in c["outputDefinitions"]["artifacts"].items()}
        for name, c in spec["components"].items()
        if (c.get("outputDefinitions") or {}).get("artifacts")
    }
    assert outputs == ARTIFACT_OUTPUTS
    # the audio goes to build_root, whose default lies on the data PVC (mounted at /mnt) of the steps writing it
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["build_root"]["defaultValue"].startswith("/mnt/")
    tasks = _tasks(spec)
    merge_settings = tasks["build-manifest"]["inputs"]["parameters"]["settings"]["runtimeValue"]["constant"]
    assert "build_root={{$.inputs.parameters['pipelinechannel--build_root']}}" in merge_settings.split("\n")
    for step in ("build-manifest", "build-manifest-shard"):
        assert k8s[f"exec-{step}"]["pvcMount"][0]["mountPath"] == "/mnt", step
    # the fan-out: a ParallelFor over fanout_shards(build_pods) of shard pods, the merge after it
    loop = next(c for name, c in spec["components"].items() if name.startswith("comp-for-loop"))
    assert "build-manifest-shard" in loop["dag"]["tasks"]
    shard_params = loop["dag"]["tasks"]["build-manifest-shard"]["inputs"]["parameters"]
    assert shard_params["build_root"]["componentInputParameter"] == "pipelinechannel--build_root"
    fan = tasks["fanout-shards"]["inputs"]["parameters"]["n_shards"]["componentInputParameter"]
    assert fan == "build_pods" and params["build_pods"]["defaultValue"] == 1
    loop_task = next(name for name in tasks if name.startswith("for-loop"))
    assert loop_task in tasks["build-manifest"]["dependentTasks"]


def test_every_step_that_reads_the_registry_gets_the_pipelines_tracking_uri(compiled):
    """A step without the parameter resolves `models:/` on the image's default store, not the cluster's
    registry (preflight_finetune did: it failed to find the base the other steps found)."""
    _, spec, _ = compiled
    takes = {
        name.removeprefix("comp-")
        for name, comp in spec["components"].items()
        if "mlflow_tracking_uri" in comp.get("inputDefinitions", {}).get("parameters", {})
    }
    assert {"resolve-base", "preflight-finetune", "finetune-asr", "evaluate-wer", "register-model"} <= takes
    for name, task in _tasks(spec).items():
        if name in takes:
            got = task["inputs"]["parameters"].get("mlflow_tracking_uri", {})
            assert got.get("componentInputParameter", "").endswith("mlflow_tracking_uri"), (name, got)
