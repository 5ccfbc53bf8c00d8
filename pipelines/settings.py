"""Every setting of a run, one record per step: the pipeline's parameters are derived from these records.

Each step's record lives with its step (components/<step>/settings.py); the run's and the cluster's are here.
`PIPELINE_RECORDS` names them all, one params.yaml section each. The Kubeflow UI's parameters, their
descriptions, params.yaml's sections and `--set section.name=value` all come from them.
`@pipeline_from_records` gives the DAG function the signature kfp reads; the function receives the parameters
as `S.<section>.<name>`, and `settings_text(S, section)` is what a step's component receives as `settings`.

A knob whose default is None is a text parameter in the UI whose empty value means "the recipe's".
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from components.build_manifest.settings import ManifestSettings
from components.common.settings import Knob, SettingsError, coerce, knob, knobs
from components.evaluate_wer.settings import EvaluateSettings
from components.export_triton.settings import ExportSettings
from components.finetune_asr.settings import FinetuneSettings
from components.register_model.settings import RegisterSettings
from components.validate_data.settings import ValidateSettings


@dataclass
class RunSettings:
    """Inputs and lineage of the run (the lineage's data md5, base sha256 and code version are outputs of the
    first steps, never settings: nobody types them)."""

    data_rev: str = knob(
        "",
        "Dataset version: a git revision of data_repo's data.dvc, or a DVC md5; empty = data_root as it is "
        "(its DVC md5 is computed and recorded)",
    )
    data_repo: str = knob(
        "", "Git repository (URL or path) holding data.dvc and the DVC remote; needed with data_rev"
    )
    data_root: str = knob(
        "/mnt/data/asr", "Raw dataset folder (metadata.csv + audio) read when data_rev is empty"
    )
    data_cache: str = knob(
        "/mnt/data/versions", "Where dataset versions are materialised (<data_cache>/<md5>/, on the data PVC)"
    )
    base_model_uri: str = knob(
        "models:/nemotron-asr-finetuned-base@base",
        "Model to start from: models:/<name>@<alias> in MLflow, or a .nemo path on the PVC",
    )
    base_model_sha256: str = knob(
        "", "Required sha256 of the base checkpoint; empty = whatever base_model_uri resolves to"
    )
    mlflow_tracking_uri: str = knob("", "MLflow server, e.g. http://mlflow.asr-prod.svc.cluster.local:5000")


@dataclass
class ClusterSettings:
    """Where the steps run on Kubernetes (kfp.local ignores these)."""

    data_pvc: str = knob(
        "asr-data", "PersistentVolumeClaim mounted at /mnt (data, checkpoints, Triton repository)"
    )
    work_root: str = knob(
        "/mnt/work", "Fine-tune checkpoints folder (on the PVC): a retried or re-run fine-tune resumes"
    )
    credentials_secret: str = knob(
        "asr-pipeline-credentials",
        "Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/MLFLOW_TRACKING_* keys",
    )
    gpus: int = knob(1, "GPUs per training pod (Lightning devices = this)")
    gpu_resource: str = knob("nvidia.com/gpu", "Extended resource name of the GPU")
    gpu_node_selector: dict = knob({"nvidia.com/gpu.present": "true"}, "Node labels the GPU pods must match")
    gpu_tolerations: list = knob(
        [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "Tolerations of the GPU pods (the GPU nodes' taints)",
    )
    train_memory: str = knob("64G", "Memory request and limit of the GPU pods")
    strategy: str = knob("ddp", "Lightning strategy for gpus > 1 (ddp); ignored on one device")


# params.yaml section -> record. A name may appear in one record only.
PIPELINE_RECORDS: dict[str, type] = {
    "run": RunSettings,
    "validate_data": ValidateSettings,
    "build_manifest": ManifestSettings,
    "finetune_asr": FinetuneSettings,
    "evaluate_wer": EvaluateSettings,
    "register_model": RegisterSettings,
    "export_triton": ExportSettings,
    "cluster": ClusterSettings,
}


def all_knobs() -> list[tuple[str, Knob]]:
    out, seen = [], {}
    for section, cls in PIPELINE_RECORDS.items():
        for k in knobs(cls):
            if k.name in seen:
                raise TypeError(f"setting {k.name!r} is in both {seen[k.name]} and {section}")
            seen[k.name] = section
            out.append((section, k))
    return out


def _kfp_type(k: Knob) -> type:
    """Optional knobs are text in the UI (empty = the recipe's): kfp.local cannot run a None default."""
    return str if k.optional else k.type


def kfp_value(k: Knob, value: Any) -> Any:
    """The value as its pipeline parameter takes it: an optional knob is text ('' = the recipe's)."""
    if not k.optional:
        return value
    return "" if value is None else str(value)


def pipeline_from_records(name: str, description: str):
    """Decorator: the DAG function `body(S)` becomes a kfp pipeline whose parameters are every knob."""
    from kfp import dsl

    params = [
        inspect.Parameter(
            k.name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=kfp_value(k, k.default),
            annotation=_kfp_type(k),
        )
        for _, k in all_knobs()
    ]
    signature = inspect.Signature(params)
    doc_args = "\n".join(f"    {k.name}: {k.help}." for _, k in all_knobs())

    def wrap(body):
        @functools.wraps(body)
        def dag(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            S = SimpleNamespace(
                **{
                    section: SimpleNamespace(**{k.name: bound.arguments[k.name] for k in knobs(cls)})
                    for section, cls in PIPELINE_RECORDS.items()
                }
            )
            return body(S)

        dag.__signature__ = signature
        dag.__doc__ = f"{(body.__doc__ or '').strip()}\n\nArgs:\n{doc_args}\n"
        return dsl.pipeline(name=name, description=description)(dag)

    return wrap


def record_text(section: SimpleNamespace, cls: type, skip_types: tuple = ()) -> str:
    """The f-string of a record's pipeline channels that its component decodes (components.common.settings)."""
    return "\n".join(f"{k.name}={getattr(section, k.name)}" for k in knobs(cls) if k.type not in skip_types)


def settings_text(S: SimpleNamespace, section: str) -> str:
    """What the DAG passes as a step's `settings` input: its record's pipeline channels as `name=value` lines
    (an f-string that Kubeflow resolves at run time, so the task's cache key changes with every setting)."""
    return record_text(getattr(S, section), PIPELINE_RECORDS[section])


def pipeline_arguments_from_params(params: dict, local: dict) -> dict:
    """Flat pipeline arguments: each record's defaults, params.yaml's sections on top, then `local` (paths
    and values only a local run knows). Every value is checked against its knob (a named SettingsError)."""
    out: dict[str, Any] = {}
    for section, cls in PIPELINE_RECORDS.items():
        given = dict(params.get(section) or {})
        by_name = {k.name: k for k in knobs(cls)}
        unknown = sorted(set(given) - set(by_name))
        if unknown:
            raise SettingsError(
                f"params.yaml [{section}]: unknown setting(s) {unknown}; known: {sorted(by_name)}"
            )
        for k in knobs(cls):
            value = local.get(k.name, given.get(k.name, k.default))
            out[k.name] = kfp_value(k, coerce(k, value, f"{section}."))
    cls_of = {k.name: cls for section, cls in PIPELINE_RECORDS.items() for k in knobs(cls)}
    from components.common.settings import from_mapping

    for cls in set(cls_of.values()):  # the records' own checks (ranges, recipe exists, ...)
        from_mapping(cls, {k.name: out[k.name] for k in knobs(cls)})
    return out
