"""Submit the pipeline to a Kubeflow Pipelines server: compile, upload (or add a version), start a run.

`python -m pipelines submit --host https://kfp.example.com --set target_langs=ro-RO --set max_steps=2000`

What happens, in order:
1. the pipeline is compiled to a YAML file (the same one `make compile` writes);
2. if no pipeline called `--pipeline-name` exists, it is uploaded; otherwise the YAML becomes a new *version*
   of it, named `<git short sha>-<UTC time>` (the UI lists versions per pipeline);
3. the experiment `--experiment` is looked up or created, and a run of that version is started with the
   `--set NAME=VALUE` parameters (values parsed as YAML: numbers, lists and dicts work; unknown names and
   names given twice are refused before anything is sent);
4. the run's id and its URL in the UI are printed.

`--dry-run` stops after step 1 and prints what would be sent. Authentication is kfp.Client's: in-cluster
service-account tokens, `--existing-token`, or the `KF_PIPELINES_*` environment variables it reads.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Submission:
    pipeline_id: str
    version_id: str
    version_name: str
    experiment_id: str
    run_id: str
    run_url: str
    params: dict


def pipeline_parameter_names() -> dict[str, Any]:
    """The pipeline's parameters and their defaults (what the UI shows)."""
    from pipelines.asr_pipeline import asr_finetune_pipeline

    sig = inspect.signature(asr_finetune_pipeline.pipeline_func)
    return {name: p.default for name, p in sig.parameters.items()}


def _check_against_record(name: str, value: Any) -> None:
    """The value as its settings record reads it (pipelines/settings.py): a bad one is refused by name."""
    from components.common.settings import coerce
    from pipelines.settings import PIPELINE_RECORDS, all_knobs

    for section, k in all_knobs():
        if k.name == name:
            checked = coerce(k, value, "")
            cls = PIPELINE_RECORDS[section]
            if k.name == "recipe" or k.choices:
                cls(**{k.name: checked})  # the record's own checks (a recipe that exists, choices)
            return


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['max_steps=2000', 'gpu_tolerations=[]'] -> {'max_steps': 2000, 'gpu_tolerations': []}, checked."""
    known = pipeline_parameter_names()
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--set {item!r}: expected NAME=VALUE")
        if name not in known:
            raise ValueError(f"--set {name}: not a pipeline parameter (known: {', '.join(sorted(known))})")
        if name in out:
            raise ValueError(f"--set {name}: given twice")
        value = yaml.safe_load(raw) if raw.strip() else ""
        default = known[name]
        if isinstance(default, str) and not isinstance(value, str):
            value = raw  # keep '[56,1]', '0.1.0', 'bg-BG' as typed for string parameters
        elif isinstance(default, bool) != isinstance(value, bool) or (
            isinstance(default, (int, float)) and not isinstance(value, (int, float))
        ):
            raise ValueError(
                f"--set {name}={raw}: expected a {type(default).__name__} like the default {default!r}"
            )
        elif isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
            raise ValueError(f"--set {name}={raw}: expected an integer")
        elif isinstance(default, (dict, list)) and not isinstance(value, type(default)):
            raise ValueError(f"--set {name}={raw}: expected a {type(default).__name__} (YAML/JSON)")
        if isinstance(default, float) and isinstance(value, int):
            value = float(value)
        _check_against_record(name, value)
        out[name] = value
    return out


def version_name() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sha = "nogit"
    return f"{sha}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def compile_pipeline(out: str | os.PathLike) -> str:
    from kfp import compiler

    from pipelines.asr_pipeline import asr_finetune_pipeline

    compiler.Compiler().compile(asr_finetune_pipeline, str(out))
    return str(out)


def submit(
    host: str,
    params: dict[str, Any],
    pipeline_name: str = "nemotron-asr-finetune",
    experiment: str = "nemotron-asr",
    run_name: str | None = None,
    namespace: str | None = None,
    existing_token: str | None = None,
    client_factory: Callable[..., Any] | None = None,
    package_path: str | None = None,
) -> Submission:
    """Upload (or version) the compiled pipeline on `host` and start a run with `params`.

    `client_factory` builds the client (default `kfp.Client`); tests pass one that records the calls.
    """
    if client_factory is None:
        import kfp

        client_factory = kfp.Client
    kwargs: dict[str, Any] = {"host": host}
    if namespace:
        kwargs["namespace"] = namespace
    if existing_token:
        kwargs["existing_token"] = existing_token
    client = client_factory(**kwargs)

    with tempfile.TemporaryDirectory() as tmp:
        path = package_path or compile_pipeline(Path(tmp) / "pipeline.yaml")
        vname = version_name()
        pipeline_id = client.get_pipeline_id(pipeline_name)
        if pipeline_id is None:
            pipeline = client.upload_pipeline(
                path,
                pipeline_name=pipeline_name,
                description="Fine-tune Nemotron 3.5 ASR and ship it through a gate",
            )
            pipeline_id = pipeline.pipeline_id
        version = client.upload_pipeline_version(path, pipeline_version_name=vname, pipeline_id=pipeline_id)
        version_id = version.pipeline_version_id

    try:
        exp = client.get_experiment(experiment_name=experiment, namespace=namespace)
    except Exception:  # kfp raises ValueError (or an ApiException) when it does not exist
        exp = client.create_experiment(experiment, namespace=namespace)
    run = client.run_pipeline(
        experiment_id=exp.experiment_id,
        job_name=run_name or f"{pipeline_name}-{vname}",
        params=params,
        pipeline_id=pipeline_id,
        version_id=version_id,
    )
    run_url = f"{host.rstrip('/')}/#/runs/details/{run.run_id}"
    return Submission(pipeline_id, version_id, vname, exp.experiment_id, run.run_id, run_url, params)
