"""MLflow tracking for the steps: a client on an explicit tracking URI and the experiment runs are logged in.

The steps log their runs through this module only; the model registry (registry/mlflow_adapter.py) uses the
same client and experiment rules. A step's `mlflow_tracking_uri` parameter is the explicit URI; "off", "none",
"false" or "0" turns logging off.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = "nemotron-asr"
OFF = ("off", "none", "false", "0")
# A run that logged a checkpoint under `model/` carries its sha256 in this tag (the fine-tune run): the registry
# creates the model version from that artifact instead of uploading the checkpoint a second time.
MODEL_RUN_TAG = "checkpoint_sha256"


def is_off(uri: str | None) -> bool:
    """True where the URI says "do not log" ("off", "none", "false", "0")."""
    return (uri or "").strip().lower() in OFF


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the repository's sqlite file (.mlflow/mlflow.db)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{REPO_ROOT / '.mlflow' / 'mlflow.db'}"


def experiment_name() -> str:
    """$MLFLOW_EXPERIMENT_NAME, else nemotron-asr."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT


def get_client(tracking_uri: str | None = None):
    """A client on `tracking_uri` (None or "": $MLFLOW_TRACKING_URI, else the repo's sqlite file)."""
    import mlflow
    from mlflow import MlflowClient

    uri = (tracking_uri or "").strip() or default_tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(client, name: str | None = None) -> str:
    """The id of experiment `name` (default `experiment_name()`), created if missing. On a sqlite store its
    artifacts are kept next to the db (not in the cwd)."""
    name = name or experiment_name()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    uri = client.tracking_uri if hasattr(client, "tracking_uri") else default_tracking_uri()
    if str(uri).startswith("sqlite:///"):
        location = (Path(str(uri).removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another process
        return client.get_experiment_by_name(name).experiment_id
