"""The fine-tune's MLflow run: opened before training, so a multi-hour run can be watched while it trains.

Loss, learning rate and the replay-distillation term are sent every `every` steps. The run id is kept in the
work dir: a retried or re-run fine-tune (pod eviction, SIGKILL) continues the same run instead of leaving a
dangling one. The tracking URI is a step parameter like every other step's (else $MLFLOW_TRACKING_URI; none:
nothing is logged).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import yaml

from components.common.io import atomic_write_text
from components.common.tracking import MODEL_RUN_TAG, experiment_id, is_off

log = logging.getLogger(__name__)
EVERY_STEPS = 10  # send buffered metrics every this many steps ...
EVERY_SECONDS = 30.0  # ... or this many seconds, whichever comes first (a Nemotron step can take seconds)


def tracking_uri(explicit: str = "") -> str | None:
    """The explicit URI, else $MLFLOW_TRACKING_URI, else None (no MLflow run)."""
    uri = (explicit or "").strip() or os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return None if not uri or is_off(uri) else uri


class FinetuneTracker:
    def __init__(
        self,
        uri: str,
        params: dict,
        pipeline_run_id: str = "",
        state_file: str | os.PathLike | None = None,
        every: int | None = None,
    ) -> None:
        import mlflow

        self.client = mlflow.MlflowClient(uri)
        self.uri = uri
        self.params = params
        self.pipeline_run_id = pipeline_run_id
        self.state_file = Path(state_file) if state_file else None
        self.every = max(1, every or EVERY_STEPS)
        self._last_flush = time.monotonic()
        self.run_id = ""
        self._pending: list = []

    def start(self) -> str:
        """Open (or, after an interruption, re-open) the run and log the params."""
        previous = self._previous_run()
        if previous:
            self.run_id = previous
            self.client.update_run(previous, status="RUNNING")
            log.info("MLflow: continuing run %s", previous)
            return previous
        experiment = experiment_id(self.client)
        tags = {"step": "finetune_asr", "mlflow.runName": "finetune_asr"}
        if self.pipeline_run_id:
            tags["pipeline_run_id"] = self.pipeline_run_id
        run = self.client.create_run(experiment, tags=tags, run_name="finetune_asr")
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        items = [Param(k, str(v)[:500]) for k, v in self.params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        if self.state_file:
            atomic_write_text(
                self.state_file, json.dumps({"mlflow_run_id": self.run_id, "uri": self.uri}) + "\n"
            )
        return self.run_id

    def _previous_run(self) -> str:
        if not (self.state_file and self.state_file.is_file()):
            return ""
        state = json.loads(self.state_file.read_text(encoding="utf-8"))
        if state.get("uri") != self.uri:
            return ""
        try:
            run = self.client.get_run(state["mlflow_run_id"])
        except Exception:  # deleted or another store: start a new run
            return ""
        return run.info.run_id if run.info.status != "FINISHED" else ""

    def log_step(self, step: int, **values: float) -> None:
        """Buffer this step's values; send them every `every` steps (one request, not one per metric)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [
            Metric(k, float(v), now, step) for k, v in values.items() if math.isfinite(float(v))
        ]
        if step % self.every == 0 or time.monotonic() - self._last_flush > EVERY_SECONDS:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        while self._pending:
            batch, self._pending = self._pending[:1000], self._pending[1000:]
            self.client.log_batch(self.run_id, metrics=batch)

    def finish(self, result, log_model: bool = True) -> str:
        """Final metrics, the resolved config, the model's sidecar (and .nemo), then mark the run FINISHED."""
        self.flush()
        final = {
            "final_train_loss": result.final_loss,
            "steps": result.steps_done,
            "train_seconds": result.seconds,
            "resumed_from_step": result.resumed_from_step,
            "replay_rows_distilled": result.replay_rows_distilled,
            **{f"val_wer_{lang}": wer for lang, wer in result.val_wer.items()},
        }
        for name, value in final.items():
            if math.isfinite(float(value)):
                self.client.log_metric(self.run_id, name, float(value))
        if result.resolved_config:
            self.client.log_text(
                self.run_id,
                yaml.safe_dump(result.resolved_config, sort_keys=False, allow_unicode=True),
                "resolved_config.yaml",
            )
        self.client.log_artifact(self.run_id, result.sidecar_path, "model")
        if log_model:
            self.client.log_artifact(self.run_id, result.model_path, "model")
            # the registry creates the model version from this artifact (one upload): found by this tag
            sha = json.loads(Path(result.sidecar_path).read_text(encoding="utf-8")).get("sha256", "")
            if sha:
                self.client.set_tag(self.run_id, MODEL_RUN_TAG, sha)
        self.client.set_terminated(self.run_id, "FINISHED")
        return self.run_id

    def fail(self, reason: str) -> None:
        self.flush()
        self.client.set_tag(self.run_id, "error", reason[:4000])
        self.client.set_terminated(self.run_id, "FAILED")
