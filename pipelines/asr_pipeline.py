"""The DAG: wiring only. Each step's logic lives in components/<step>/core.py.

data ─► validate_data ─► build_manifest ─► finetune_asr ─► evaluate_wer ─► register_model ─► release_gate
                                                                         └─[dsl.If gate passed]─► promote_model ─► export_triton
"""


# No `from __future__ import annotations` here: kfp reads the pipeline signature's real types.
from kfp import dsl, kubernetes

from components.build_manifest.component import build_manifest
from components.evaluate_wer.component import evaluate_wer, release_gate
from components.export_triton.component import export_triton
from components.finetune_asr.component import finetune_asr
from components.register_model.component import promote_model, register_model
from components.validate_data.component import validate_data

PIPELINE_NAME = "nemotron-asr-finetune"


def _gpu_step(task: dsl.PipelineTask, gpus: int = 1) -> dsl.PipelineTask:
    """Cluster-only settings (kfp.local ignores them): one NVIDIA GPU, its taint tolerated, a RAM-backed /dev/shm."""
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
    task.set_cpu_request("4").set_memory_request("32G").set_memory_limit("64G")
    kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit="16Gi")
    return task


def _storage(task: dsl.PipelineTask, pvc: str) -> dsl.PipelineTask:
    """Cluster-only: the data/model PVC at /mnt (data_root and triton_repo defaults live under it)."""
    kubernetes.mount_pvc(task, pvc_name=pvc, mount_path="/mnt")
    return task


@dsl.pipeline(name=PIPELINE_NAME,
              description="Validate data, fine-tune Nemotron 3.5 ASR (NeMo), evaluate base vs candidate at the "
                          "deployed streaming latency, gate, register in MLflow, export to Triton.")
def asr_finetune_pipeline(
    data_root: str = "/mnt/data/asr",
    data_md5: str = "",
    base_model_uri: str = "models:/nemotron-asr-finetuned-base@base",
    target_langs: str = "bg-BG",
    replay_langs: str = "el-GR,es-ES",
    replay_per_lang: int = 150,
    max_steps: int = 300,
    lr: float = 2e-3,
    batch_size: int = 16,
    seed: int = 0,
    min_duration: float = 0.3,
    max_duration: float = 30.0,
    val_ratio: float = 0.1,
    test_ratio: float = 0.1,
    att_context_size: str = "[56,1]",
    gate_policy: str = "",
    model_name: str = "nemotron-asr-finetuned",
    triton_repo: str = "/mnt/models/triton_repo",
    mlflow_tracking_uri: str = "",
    git_commit: str = "",
    data_pvc: str = "asr-data",
):
    validated = validate_data(data_root=data_root, min_duration=min_duration, max_duration=max_duration)
    validated.set_display_name("Validate data (great-expectations)")

    manifests = build_manifest(data_root=data_root, seed=seed, val_ratio=val_ratio, test_ratio=test_ratio)
    manifests.set_display_name("Build NeMo manifests").after(validated)

    tuned = finetune_asr(manifests=manifests.outputs["manifests"], base_model_uri=base_model_uri,
                         target_langs=target_langs, replay_langs=replay_langs, replay_per_lang=replay_per_lang,
                         max_steps=max_steps, lr=lr, batch_size=batch_size, seed=seed)
    _gpu_step(tuned.set_display_name("Fine-tune (NeMo)").set_caching_options(False))

    evaluated = evaluate_wer(manifests=manifests.outputs["manifests"], base_model_uri=base_model_uri,
                             candidate=tuned.outputs["model"], target_langs=target_langs,
                             replay_langs=replay_langs, att_context_size=att_context_size,
                             gate_policy=gate_policy)
    _gpu_step(evaluated.set_display_name("Evaluate WER: base vs candidate"))

    registered = register_model(candidate=tuned.outputs["model"], evaluation=evaluated.outputs["evaluation"],
                                model_name=model_name, data_md5=data_md5, base_model_uri=base_model_uri,
                                git_commit=git_commit, mlflow_tracking_uri=mlflow_tracking_uri,
                                pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
    registered.set_display_name("Register candidate (MLflow)").set_caching_options(False)

    gate = release_gate(evaluation=evaluated.outputs["evaluation"])
    gate.set_display_name("Release gate").set_caching_options(False).after(registered)

    for task in (validated, manifests, tuned, evaluated):
        _storage(task, data_pvc)

    with dsl.If(gate.output == True, name="gate-passed"):  # noqa: E712 (kfp condition)
        promoted = promote_model(model_name=model_name, version=registered.outputs["version"],
                                 mlflow_tracking_uri=mlflow_tracking_uri)
        promoted.set_display_name("Promote to champion").set_caching_options(False)
        exported = export_triton(model_name=model_name, triton_repo=triton_repo, alias="champion",
                                 att_context_size=att_context_size, mlflow_tracking_uri=mlflow_tracking_uri)
        _storage(exported.set_display_name("Export to Triton").set_caching_options(False).after(promoted), data_pvc)
