"""The DAG: wiring only. Each step's logic lives in components/<step>/core.py.

materialize_data ─► validate_data ─► [ParallelFor build_pods: build_manifest_shard] ─► build_manifest (merge) ─►
    preflight_finetune ─► finetune_asr ─► evaluate_wer ─► register_model ─► release_gate ─[dsl.If gate passed]─►
    promote_model ─► export_triton
resolve_base (base pinned + sha256, code version) ─► preflight_finetune, finetune_asr, evaluate_wer, register_model

Caching (KFP on a cluster; kfp.local with `run_local(enable_caching=True)`): materialize_data and resolve_base
never are: they decide the keys. materialize_data pins the dataset version (data_rev) and outputs DVC's md5;
resolve_base pins the base model and outputs its sha256 and the code version. The data steps are cached on the
md5; preflight, fine-tune and evaluation on (data md5, base sha256, every setting, code version) through their
inputs (none of them takes the pipeline run id), so an unchanged re-run trains and evaluates nothing.
register/gate/promote/export have side effects and are never cached; they are idempotent instead (a re-run on the
same candidate registers no second version and exports no second Triton version), and promote/export open no
registry when register_model found the candidate already champion and already served (docs/REPRODUCE.md).
"""

# No `from __future__ import annotations` here: kfp reads the pipeline signature's real types.
from kfp import dsl, kubernetes

from components.build_manifest.component import build_manifest, build_manifest_shard, fanout_shards
from components.evaluate_wer.component import evaluate_wer, release_gate
from components.export_triton.component import export_triton
from components.finetune_asr.component import finetune_asr, preflight_finetune
from components.materialize_data.component import materialize_data
from components.register_model.component import promote_model, register_model
from components.resolve_base.component import resolve_base
from components.validate_data.component import validate_data
from pipelines.settings import PIPELINE_RECORDS, pipeline_from_records, record_text, settings_text

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
    kubernetes.empty_dir_mount(
        task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit="16Gi"
    )
    return task


def _storage(task, pvc) -> dsl.PipelineTask:
    """Cluster-only: the data/checkpoint PVC at /mnt (data_root, triton_repo and ASR_WORK_DIR live under it)."""
    kubernetes.mount_pvc(task, pvc_name=pvc, mount_path="/mnt")
    return task


def _credentials(task, secret) -> dsl.PipelineTask:
    """Cluster-only: S3/MLflow credentials as env from a Secret (optional: absent keys are simply unset)."""
    kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=CREDENTIAL_KEYS, optional=True)
    return task


def _parameters_text(S) -> str:
    """Every pipeline parameter as `name=value` lines (the registered version's lineage; `reproduce` reads it).
    The cluster's dict/list knobs (node selector, tolerations) say where pods run, not what they compute."""
    return "\n".join(
        record_text(getattr(S, section), cls, skip_types=(dict, list))
        for section, cls in PIPELINE_RECORDS.items()
    )


@pipeline_from_records(
    PIPELINE_NAME,
    "Validate data, preflight against the base checkpoint, fine-tune Nemotron 3.5 ASR (NeMo), evaluate base vs "
    "candidate at the deployed streaming latency, gate, register in MLflow, export to Triton.",
)
def asr_finetune_pipeline(S):
    """Fine-tune Nemotron 3.5 ASR on your data and ship it only if it is better.

    Every parameter is a field of a settings record (pipelines/settings.py, components/finetune_asr/settings.py);
    `S.<section>.<name>` is its pipeline channel here.
    """
    run, cl = S.run, S.cluster
    data = materialize_data(
        data_repo=run.data_repo, data_rev=run.data_rev, data_root=run.data_root, data_cache=run.data_cache
    )
    data.set_display_name("Materialize dataset version (DVC)").set_caching_options(False)
    data_root, data_md5 = data.outputs["data_root"], data.outputs["data_md5"]
    base = resolve_base(
        base_model_uri=run.base_model_uri,
        base_model_sha256=run.base_model_sha256,
        mlflow_tracking_uri=run.mlflow_tracking_uri,
    )
    base.set_display_name("Resolve base model (sha256) + code version").set_caching_options(False)
    base_uri, base_sha, code = base.outputs["uri"], base.outputs["sha256"], base.outputs["code_version"]

    # Each step gets its own record as one `settings` text (pipelines/settings.py settings_text); what it takes
    # besides is an upstream output, an artifact or another record's setting it shares.
    validated = validate_data(
        data_root=data_root, settings=settings_text(S, "validate_data"), data_version=data_md5
    )
    validated.set_display_name("Validate data (great-expectations)")

    m = S.build_manifest
    # --- issue 16 (datascale): conversion fans out over build_pods pods into build_root on the PVC, then one
    # merge step splits and publishes (the one-pod code); only manifests/summaries travel as artifacts.
    # the upstream outputs ride in the loop's items (fanout_shards explains why)
    shards = fanout_shards(n_shards=m.build_pods, data_root=data_root, data_version=data_md5)
    shards.set_display_name("Plan the conversion fan-out")
    with dsl.ParallelFor(shards.output, name="convert-audio") as job:
        converted = build_manifest_shard(
            data_root=job.data_root,
            build_root=m.build_root,
            shard=job.shard,
            n_shards=m.build_pods,
            data_version=job.data_version,
            validation=validated.outputs["report"],
        )
        _storage(converted.set_display_name("Convert audio (one shard)"), cl.data_pvc)
    # the rows validation rejected (validation.json) never reach a manifest, whatever max_failed_fraction allows
    manifests = build_manifest(
        data_root=data_root,
        settings=settings_text(S, "build_manifest"),
        seed=S.finetune_asr.seed,
        duplicate_audio=S.validate_data.duplicate_audio,
        data_version=data_md5,
        validation=validated.outputs["report"],
    )
    manifests.set_display_name("Build NeMo manifests (merge)").after(converted)
    # --- end issue 16 (datascale)

    finetune_settings = settings_text(S, "finetune_asr")
    # Deterministic checks first, in seconds and without retry: settings, languages, lookahead, tokenizer,
    # coverage and "can this data be evaluated" against the base checkpoint's config (no weights loaded).
    checked = preflight_finetune(
        manifests=manifests.outputs["manifests"],
        base_model_uri=base_uri,
        settings=finetune_settings,
        att_context_size=S.evaluate_wer.att_context_size,
        work_root=cl.work_root,
        base_model_sha256=base_sha,
        mlflow_tracking_uri=run.mlflow_tracking_uri,
    )
    checked.set_display_name("Preflight (settings + data vs base checkpoint)")
    att_context_size = checked.outputs["att_context_size"]  # the recipe's unless the run sets one

    # Cached: the key is (manifests <- data md5, base sha256, every training setting, code version).
    tuned = finetune_asr(
        manifests=manifests.outputs["manifests"],
        base_model_uri=base_uri,
        settings=finetune_settings,
        mlflow_tracking_uri=run.mlflow_tracking_uri,
        devices=cl.gpus,
        strategy=cl.strategy,
        work_root=cl.work_root,
        data_md5=data_md5,
        base_model_sha256=base_sha,
        code_version=code,
    )
    tuned.set_display_name("Fine-tune (NeMo)").after(checked)
    # Retries are for preemption/eviction (resume from the checkpoint). A deterministic failure was caught by
    # the preflight, or is remembered in the work dir and fails the retry at once (components.common.errors).
    tuned.set_retry(num_retries=2, backoff_duration="60s")
    _gpu_step(tuned, cl.gpus, cl.gpu_resource, cl.gpu_node_selector, cl.gpu_tolerations, cl.train_memory)

    # Cached with the candidate: a candidate is judged once (against the champion of that time); the registry
    # keeps that evaluation with the version. Change any input (or run without the cache) to judge it again.
    evaluated = evaluate_wer(
        manifests=manifests.outputs["manifests"],
        base_model_uri=base_uri,
        candidate=tuned.outputs["model"],
        target_langs=S.finetune_asr.target_langs,
        replay_langs=S.finetune_asr.replay_langs,
        settings=settings_text(S, "evaluate_wer"),
        att_context_size=att_context_size,
        model_name=S.register_model.model_name,
        mlflow_tracking_uri=run.mlflow_tracking_uri,
    )
    evaluated.set_display_name("Evaluate WER: base vs candidate")
    _gpu_step(evaluated, 1, cl.gpu_resource, cl.gpu_node_selector, cl.gpu_tolerations, "32G")

    model_name = S.register_model.model_name
    registered = register_model(
        candidate=tuned.outputs["model"],
        evaluation=evaluated.outputs["evaluation"],
        settings=settings_text(S, "register_model"),
        data_md5=data_md5,
        base_model_uri=run.base_model_uri,
        git_commit=code,
        mlflow_tracking_uri=run.mlflow_tracking_uri,
        pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        data_rev=run.data_rev,
        data_commit=data.outputs["data_commit"],
        base_model_resolved=base_uri,
        base_model_sha256=base_sha,
        parameters=_parameters_text(S),
        evaluation_run_id=evaluated.outputs["mlflow_run_id"],
    )
    registered.set_display_name("Register candidate (MLflow)").set_caching_options(False)

    gate = release_gate(evaluation=evaluated.outputs["evaluation"])
    gate.set_display_name("Release gate").set_caching_options(False).after(registered)

    for task in (data, validated, manifests, checked, tuned, evaluated):
        _storage(task, cl.data_pvc)
    for task in (data, base, checked, tuned, evaluated, registered):
        _credentials(task, cl.credentials_secret)

    with dsl.If(gate.output == True, name="gate-passed"):  # noqa: E712 (kfp condition)
        promoted = promote_model(
            model_name=model_name,
            version=registered.outputs["version"],
            mlflow_tracking_uri=run.mlflow_tracking_uri,
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            already_champion=registered.outputs["champion"],  # an unchanged re-run: no registry opened
        )
        promoted.set_display_name("Promote to champion").set_caching_options(False)
        exported = export_triton(
            model_name=model_name,
            settings=settings_text(S, "export_triton"),
            alias="champion",
            att_context_size=att_context_size,
            mlflow_tracking_uri=run.mlflow_tracking_uri,
            offline_att_context_size=S.evaluate_wer.offline_att_context_size,
            candidate_sha256=registered.outputs["sha256"],
        )
        _storage(
            exported.set_display_name("Export to Triton").set_caching_options(False).after(promoted),
            cl.data_pvc,
        )
        for task in (promoted, exported):
            _credentials(task, cl.credentials_secret)
