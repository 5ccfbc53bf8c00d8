"""Run the compiled-for-the-cluster pipeline on this machine with kfp.local (same components, same DAG)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO_ROOT / "pipelines" / "params.yaml"


def load_params(path: str | os.PathLike = PARAMS_FILE, overrides: list[str] | None = None) -> dict:
    """params.yaml + `section.key=value` overrides (values parsed as YAML scalars)."""
    params = yaml.safe_load(Path(path).read_text())
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"override '{item}': expected section.key=value")
        section, name = key.split(".", 1)
        params.setdefault(section, {})[name] = yaml.safe_load(value)
    return params


# finetune_asr knobs params.yaml may set; absent ones keep the pipeline's defaults.
_OPTIONAL_FINETUNE = ("replay_ratio", "replay_distill", "scheduler", "warmup_steps", "batch_duration", "precision", "freeze",
                      "train_att_context_size")


def pipeline_arguments(params: dict, base_model_uri: str, data_md5: str = "", git_commit: str = "") -> dict:
    """Map params.yaml sections onto the pipeline's parameters (absolute local paths)."""
    p = params
    return {
        "data_root": str(REPO_ROOT / p["corpus"]["out"]),
        "data_md5": data_md5,
        "base_model_uri": base_model_uri,
        "target_langs": p["finetune_asr"]["target_langs"],
        "replay_langs": p["finetune_asr"]["replay_langs"],
        "replay_per_lang": int(p["finetune_asr"]["replay_per_lang"]),
        "max_steps": int(p["finetune_asr"]["max_steps"]),
        "lr": float(p["finetune_asr"]["lr"]),
        "batch_size": int(p["finetune_asr"]["batch_size"]),
        "seed": int(p["finetune_asr"]["seed"]),
        **{k: v for k, v in p["finetune_asr"].items() if k in _OPTIONAL_FINETUNE},
        "work_root": str(REPO_ROOT / ".cache" / "finetune_work"),
        "min_duration": float(p["validate_data"]["min_duration"]),
        "max_duration": float(p["validate_data"]["max_duration"]),
        "val_ratio": float(p["build_manifest"]["val_ratio"]),
        "test_ratio": float(p["build_manifest"]["test_ratio"]),
        "att_context_size": str(p["evaluate_wer"]["att_context_size"]),
        "gate_policy": str(p["evaluate_wer"].get("gate_policy") or ""),
        "gate_floor_override_reason": str(p["evaluate_wer"].get("gate_floor_override_reason") or ""),
        "offline_att_context_size": str(p["evaluate_wer"].get("offline_att_context_size") or ""),
        "model_name": p["register_model"]["model_name"],
        "triton_repo": str(REPO_ROOT / p["export_triton"]["triton_repo"]),
        "mlflow_tracking_uri": os.environ.get("MLFLOW_TRACKING_URI", ""),
        "git_commit": git_commit,
    }


def run_local(arguments: dict, pipeline_root: str | os.PathLike) -> Path:
    """Run the pipeline through kfp.local's SubprocessRunner; returns this run's artifact folder."""
    from kfp import local

    from pipelines.asr_pipeline import PIPELINE_NAME, asr_finetune_pipeline

    pipeline_root = Path(pipeline_root).resolve()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    before = set(pipeline_root.glob(f"{PIPELINE_NAME}-*"))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root),
               raise_on_error=True)
    t0 = time.time()
    asr_finetune_pipeline(**arguments)
    new = sorted(set(pipeline_root.glob(f"{PIPELINE_NAME}-*")) - before)
    if not new:
        raise RuntimeError(f"kfp.local wrote no run folder under {pipeline_root}")
    print(f"[pipeline] finished in {time.time() - t0:.0f} s: {new[-1]}", file=sys.stderr)
    return new[-1]


def task_outputs(run_dir: str | os.PathLike, task: str) -> dict:
    """Parameter outputs of one task of a finished local run (from its executor_output.json)."""
    f = Path(run_dir) / task / "executor_output.json"
    if not f.exists():
        return {}
    doc = json.loads(f.read_text())
    return doc.get("parameterValues", {}) or {}
