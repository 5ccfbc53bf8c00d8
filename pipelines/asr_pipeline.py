"""The DAG: wiring only. Each step's logic lives in components/<step>/core.py.

fingerprint_data ─► validate_data ─► build_manifest ─► finetune_asr ─► evaluate_wer ─► register_model ─► release_gate
                                                                    └─[dsl.If gate passed]─► promote_model ─► export_triton

Caching on a cluster: the data steps are cached by the dataset's *content* (fingerprint_data, never cached
itself, feeds its hash to them), so an unchanged dataset is not re-validated or re-converted. Everything from
the fine-tune on is never cached: a fine-tune costs GPU hours and its base alias may point elsewhere, and
registry/serving steps have side effects.
"""


# No `from __future__ import annotations` here: kfp reads the pipeline signature's real types.
from kfp import dsl, kubernetes

from components.build_manifest.component import build_manifest
from components.evaluate_wer.component import evaluate_wer, release_gate
from components.export_triton.component import export_triton
from components.finetune_asr.component import finetune_asr
from components.fingerprint_data.component import fingerprint_data
from components.register_model.component import promote_model, register_model
from components.validate_data.component import validate_data

PIPELINE_NAME = "nemotron-asr-finetune"
# Env var <- key of the credentials Secret (infra/k8s/secrets): S3 for DVC/MLflow artifacts, MLflow basic auth.
CREDENTIAL_KEYS = {
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
}


def _gpu_step(task, gpus, gpu_resource, node_selector, tolerations, memory) -> dsl.PipelineTask:
    """Cluster-only settings (kfp.local ignores them), all from pipeline parameters: GPUs, where they are,
    the GPU taint tolerated, memory, and a RAM-backed /dev/shm (dataloader workers share tensors through it)."""
    task.set_accelerator_type(gpu_resource).set_accelerator_limit(gpus)
    task.set_cpu_request("4").set_memory_request(memory).set_memory_limit(memory)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration_json(task, tolerations)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit="16Gi")
    return task


def _storage(task, pvc) -> dsl.PipelineTask:
    """Cluster-only: the data/checkpoint PVC at /mnt (data_root, triton_repo and ASR_WORK_DIR live under it)."""
    kubernetes.mount_pvc(task, pvc_name=pvc, mount_path="/mnt")
    return task


def _credentials(task, secret) -> dsl.PipelineTask:
    """Cluster-only: S3/MLflow credentials as env from a Secret (optional: absent keys are simply unset)."""
    kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=CREDENTIAL_KEYS, optional=True)
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
    replay_ratio: float = -1.0,
    replay_distill: float = 1.0,
    max_steps: int = 300,
    lr: float = 2e-3,
    scheduler: str = "",
    warmup_steps: int = -1,
    batch_size: int = 16,
    batch_duration: float = 0.0,
    precision: str = "",
    freeze: str = "none",
    train_att_context_size: str = "",
    finetune_config: str = "",
    max_unk_rate: float = 0.001,
    text_maps: str = "",
    tar_shards: int = 0,
    seed: int = 0,
    min_duration: float = 0.3,
    max_duration: float = 30.0,
    min_chars_per_second: float = 1.0,
    max_chars_per_second: float = 40.0,
    max_failed_fraction: float = 0.0,
    val_ratio: float = 0.1,
    test_ratio: float = 0.1,
    att_context_size: str = "[56,1]",
    gate_policy: str = "",
    gate_floor_override_reason: str = "",
    offline_att_context_size: str = "",
    model_name: str = "nemotron-asr-finetuned",
    triton_repo: str = "/mnt/models/triton_repo",
    mlflow_tracking_uri: str = "",
    git_commit: str = "",
    data_pvc: str = "asr-data",
    work_root: str = "/mnt/work",
    credentials_secret: str = "asr-pipeline-credentials",
    gpus: int = 1,
    gpu_resource: str = "nvidia.com/gpu",
    gpu_node_selector: dict = {"nvidia.com/gpu.present": "true"},  # noqa: B006 (kfp reads the default)
    gpu_tolerations: list = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],  # noqa: B006
    train_memory: str = "64G",
    strategy: str = "ddp",
):
    """Fine-tune Nemotron 3.5 ASR on your data and ship it only if it is better.

    Args:
        data_root: Raw dataset folder inside the pods (metadata.csv + audio), on the data PVC.
        data_md5: Dataset version from data.dvc (`md5:`), recorded on the registered model.
        base_model_uri: Model to start from: models:/<name>@<alias> in MLflow, or a .nemo path on the PVC.
        target_langs: Languages to adapt to, comma-separated prompt keys (e.g. bg-BG,ro-RO).
        replay_langs: Languages to keep (mixed into training against forgetting; also gated).
        replay_per_lang: Replay utterances per replay language (when replay_ratio < 0).
        replay_ratio: Replay share of the training mix, 0-0.9; -1 uses replay_per_lang.
        replay_distill: Weight of the KL to the base model's RNNT lattice on replay rows (0 = labels only).
        max_steps: Training budget in optimizer steps.
        lr: Peak learning rate (Noam: multiplier); 0 keeps the config's optimizer (Nemotron recipe).
        scheduler: noam | cosine; empty keeps the config's (Nemotron: Noam).
        warmup_steps: Warm-up steps; -1 = 20 when lr > 0, else the config's.
        batch_size: Utterances per batch per GPU; 0 uses the config's batching (Nemotron: batch_duration).
        batch_duration: Seconds of audio per batch (lhotse dynamic batching) when batch_size is 0.
        precision: Lightning precision, e.g. bf16-mixed or 32; empty keeps the config's.
        freeze: none | encoder | all_but_prompt_decoder (train only the prompt projection + prediction net).
        train_att_context_size: Train at one lookahead, e.g. [56,1]; empty trains all of them (the recipe).
        max_unk_rate: Stop before training if a language's share of <unk> tokens under the base tokenizer is above this.
        text_maps: Spelling maps for characters the base tokenizer lacks, e.g. el_final_sigma (undone on output).
        tar_shards: Write NeMo tarred audio shards (this many per split) for large corpora; 0 = plain manifests.
        finetune_config: NeMo YAML (train_ds/optim/trainer) inside the image; empty = Nemotron config on GPU.
        seed: Seed of the data split, replay sampling and training.
        min_duration: Shortest clip accepted by validation (s).
        max_duration: Longest clip accepted by validation (s).
        min_chars_per_second: Fewer transcript characters per second of audio flags a misaligned transcript.
        max_chars_per_second: More transcript characters per second of audio flags a misaligned transcript.
        max_failed_fraction: Share of rows allowed to fail row-level checks (they are dropped) before the run stops.
        val_ratio: Validation share of speakers when metadata declares no split.
        test_ratio: Test share of speakers when metadata declares no split.
        att_context_size: Deployed streaming latency [left,right] evaluated and served; [56,3] = 320 ms on Nemotron.
        gate_policy: Gate policy YAML path; empty = the shipped default_gate.yaml.
        gate_floor_override_reason: Audited reason to run a gate policy below policy/floor.yaml; empty = refuse it.
        offline_att_context_size: Lookahead of offline evaluation and asr_offline; empty = the model's largest.
        model_name: Registered model name in MLflow (Triton serves its champion).
        triton_repo: Triton model repository folder written by the export step.
        mlflow_tracking_uri: MLflow server, e.g. http://mlflow.asr-prod.svc.cluster.local:5000.
        git_commit: Commit the pipeline was compiled from (lineage tag).
        data_pvc: PersistentVolumeClaim mounted at /mnt (data, checkpoints, Triton repository).
        work_root: Fine-tune checkpoints folder (on the PVC): a retried or re-run fine-tune resumes from it.
        credentials_secret: Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/MLFLOW_TRACKING_* keys.
        gpus: GPUs per training/evaluation pod (Lightning devices = this).
        gpu_resource: Extended resource name of the GPU.
        gpu_node_selector: Node labels the GPU pods must match.
        gpu_tolerations: Tolerations of the GPU pods (the GPU nodes' taints).
        train_memory: Memory request and limit of the GPU pods.
        strategy: Lightning strategy for gpus > 1 (ddp); ignored on one device.
    """
    fingerprint = fingerprint_data(data_root=data_root)
    fingerprint.set_display_name("Fingerprint data").set_caching_options(False)

    validated = validate_data(data_root=data_root, min_duration=min_duration, max_duration=max_duration,
                              min_chars_per_second=min_chars_per_second, max_chars_per_second=max_chars_per_second,
                              max_failed_fraction=max_failed_fraction, data_version=fingerprint.output)
    validated.set_display_name("Validate data (great-expectations)").after(fingerprint)

    manifests = build_manifest(data_root=data_root, seed=seed, val_ratio=val_ratio, test_ratio=test_ratio,
                               tar_shards=tar_shards, data_version=fingerprint.output)
    manifests.set_display_name("Build NeMo manifests").after(validated)

    tuned = finetune_asr(manifests=manifests.outputs["manifests"], base_model_uri=base_model_uri,
                         target_langs=target_langs, replay_langs=replay_langs, replay_per_lang=replay_per_lang,
                         replay_ratio=replay_ratio, replay_distill=replay_distill, max_steps=max_steps, lr=lr,
                         scheduler=scheduler, warmup_steps=warmup_steps, batch_size=batch_size, batch_duration=batch_duration,
                         precision=precision, freeze=freeze, train_att_context_size=train_att_context_size,
                         config=finetune_config, seed=seed, devices=gpus, strategy=strategy,
                         max_unk_rate=max_unk_rate, text_maps=text_maps, work_root=work_root,
                         pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
    tuned.set_display_name("Fine-tune (NeMo)").set_caching_options(False)
    tuned.set_retry(num_retries=2, backoff_duration="60s")  # preemption/eviction: resume from the checkpoint
    _gpu_step(tuned, gpus, gpu_resource, gpu_node_selector, gpu_tolerations, train_memory)

    evaluated = evaluate_wer(manifests=manifests.outputs["manifests"], base_model_uri=base_model_uri,
                             candidate=tuned.outputs["model"], target_langs=target_langs,
                             replay_langs=replay_langs, att_context_size=att_context_size,
                             gate_policy=gate_policy, mlflow_tracking_uri=mlflow_tracking_uri,
                             pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, model_name=model_name,
                             offline_att_context_size=offline_att_context_size,
                             floor_override_reason=gate_floor_override_reason)
    evaluated.set_display_name("Evaluate WER: base vs candidate").set_caching_options(False)
    _gpu_step(evaluated, 1, gpu_resource, gpu_node_selector, gpu_tolerations, "32G")

    registered = register_model(candidate=tuned.outputs["model"], evaluation=evaluated.outputs["evaluation"],
                                model_name=model_name, data_md5=data_md5, base_model_uri=base_model_uri,
                                git_commit=git_commit, mlflow_tracking_uri=mlflow_tracking_uri,
                                pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
    registered.set_display_name("Register candidate (MLflow)").set_caching_options(False)

    gate = release_gate(evaluation=evaluated.outputs["evaluation"])
    gate.set_display_name("Release gate").set_caching_options(False).after(registered)

    for task in (fingerprint, validated, manifests, tuned, evaluated):
        _storage(task, data_pvc)
    for task in (tuned, evaluated, registered):
        _credentials(task, credentials_secret)

    with dsl.If(gate.output == True, name="gate-passed"):  # noqa: E712 (kfp condition)
        promoted = promote_model(model_name=model_name, version=registered.outputs["version"],
                                 mlflow_tracking_uri=mlflow_tracking_uri,
                                 pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        promoted.set_display_name("Promote to champion").set_caching_options(False)
        exported = export_triton(model_name=model_name, triton_repo=triton_repo, alias="champion",
                                 att_context_size=att_context_size, mlflow_tracking_uri=mlflow_tracking_uri,
                                 offline_att_context_size=offline_att_context_size)
        _storage(exported.set_display_name("Export to Triton").set_caching_options(False).after(promoted), data_pvc)
        for task in (promoted, exported):
            _credentials(task, credentials_secret)
