"""Run the compiled-for-the-cluster pipeline on this machine with kfp.local (same components, same DAG)."""

from __future__ import annotations

import builtins
import collections
import io
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO_ROOT / "pipelines" / "params.yaml"


def load_params(path: str | os.PathLike = PARAMS_FILE, overrides: list[str] | None = None) -> dict:
    """params.yaml + `section.key=value` overrides (values parsed as YAML scalars; an empty value is empty)."""
    params = yaml.safe_load(Path(path).read_text())
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"override '{item}': expected section.key=value")
        section, name = key.split(".", 1)
        # `--set finetune_asr.replay_langs=` means empty (YAML would read it as null)
        params.setdefault(section, {})[name] = yaml.safe_load(value) if value.strip() else ""
    return params


def pipeline_arguments(params: dict, base_model_uri: str) -> dict:
    """params.yaml's record sections as the pipeline's arguments, with this machine's absolute paths: the
    dataset folder (corpus.out), this repository as the DVC data repository, versions under .cache/."""
    from pipelines.settings import pipeline_arguments_from_params

    given = params.get("run") or {}
    local = {
        "data_root": str(REPO_ROOT / params["corpus"]["out"]),
        "data_repo": str(given.get("data_repo") or REPO_ROOT),
        "data_cache": str(REPO_ROOT / ".cache" / "data_versions"),
        "base_model_uri": base_model_uri,
        "work_root": str(REPO_ROOT / ".cache" / "finetune_work"),
        "build_root": str(REPO_ROOT / ".cache" / "manifest_build"),  # the local "data volume" (issue 16)
        "triton_repo": str(REPO_ROOT / params["export_triton"]["triton_repo"]),
        "mlflow_tracking_uri": os.environ.get("MLFLOW_TRACKING_URI", ""),
    }
    return pipeline_arguments_from_params(params, local)


class PipelineFailed(RuntimeError):
    """A step failed; `step` and `reason` are what a person needs (the tasks' logs were printed above)."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"step {step} failed: {reason}")
        self.step, self.reason = step, reason


class _Tail(io.TextIOBase):
    """stdout, passed through, with the last lines kept: kfp.local prints the tasks' logs there."""

    def __init__(self, stream, keep: int = 400) -> None:
        self.stream, self.lines, self._part = stream, collections.deque(maxlen=keep), ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        self._part += text
        *done, self._part = self._part.split("\n")
        self.lines.extend(done)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failure_reason(error: BaseException, log_lines) -> PipelineFailed:
    """The failed task (from kfp.local's message) and its reason: the step's own one-line `... failed: ...`
    (components.common.errors), else the last exception line of its traceback."""
    message = _ANSI.sub("", str(error))
    tasks = re.findall(r"'([\w-]+)'", message.split("Inner task failed:")[-1])
    step = tasks[-1] if tasks else "?"
    lines = [_ANSI.sub("", line).strip() for line in log_lines]
    own = [line for line in lines if re.match(r"^[\w-]+ failed: ", line)]
    exc = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Exit)\b[\w.]*: ", line)]
    reason = own[-1].split(" failed: ", 1)[1] if own else exc[-1] if exc else message
    return PipelineFailed(step, reason)


def docker_exit_status_fix() -> None:
    """Make kfp.local's DockerRunner report a failed container as failed.

    kfp 2.17's `docker_task_handler.run_docker_container` starts the container with `auto_remove=True` and, when
    the container is already gone at `wait()` (a step that fails within a second: an image missing a library),
    "assumes success" and returns 0: the step is reported SUCCESS with an ImportError in its log (seen in CI's
    container test). This replacement keeps the container until its exit code is read, then removes it.
    Idempotent; a no-op for the SubprocessRunner."""
    from kfp.local import docker_task_handler as handler

    if getattr(handler.run_docker_container, "_asr_fixed", False):
        return

    def run_docker_container(client, image, command, volumes, **container_run_args) -> int:
        image = handler.add_latest_tag_if_not_present(image=image)
        if not any(image in (i.tags + i.attrs["RepoDigests"]) for i in client.images.list()):
            log.info("pulling image %r", image)
            client.images.pull(image)
        container_run_args.pop("auto_remove", None)
        container = client.containers.run(
            image=image,
            command=command,
            detach=True,
            stdout=True,
            stderr=True,
            volumes=volumes,
            auto_remove=False,
            **container_run_args,
        )
        try:
            for line in container.logs(stream=True):
                sys.stdout.write(line.decode())  # the task log stream, as kfp.local prints it
            return int(container.wait()["StatusCode"])
        finally:
            container.remove(force=True)

    run_docker_container._asr_fixed = True
    handler.run_docker_container = run_docker_container


def run_local(
    arguments: dict, pipeline_root: str | os.PathLike, runner=None, enable_caching: bool = True
) -> Path:
    """Run the pipeline through kfp.local (SubprocessRunner unless `runner` is given, e.g. the DockerRunner of
    tests/containers); returns this run's artifact folder. A failed step raises PipelineFailed naming the step
    and its reason.

    With `enable_caching` (the default) kfp.local caches the tasks the pipeline lets it cache, as KFP does on a
    cluster, in `<pipeline_root>/.kfp_cache`: an unchanged re-run trains and evaluates nothing."""
    from kfp import local

    from pipelines.asr_pipeline import PIPELINE_NAME, asr_finetune_pipeline

    pipeline_root = Path(pipeline_root).resolve()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    before = set(pipeline_root.glob(f"{PIPELINE_NAME}-*"))
    if isinstance(runner, local.DockerRunner):
        docker_exit_status_fix()
    local.init(
        runner=runner or local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        raise_on_error=True,
        enable_caching=enable_caching,
    )
    t0 = time.time()
    tail, stdout, print_ = _Tail(sys.stdout), sys.stdout, builtins.print
    sys.stdout = tail
    try:
        asr_finetune_pipeline(**arguments)
    except RuntimeError as e:
        raise failure_reason(e, tail.lines) from e
    finally:
        sys.stdout = stdout
        # kfp.local indents task logs by patching builtins.print per task; the ParallelFor's iterations run in
        # threads, so their save/restore pairs interleave and can leave the patch in place for good (numba,
        # imported later by NeMo in this process, then fails on it)
        builtins.print = print_
    new = sorted(set(pipeline_root.glob(f"{PIPELINE_NAME}-*")) - before)
    if not new:
        raise RuntimeError(f"kfp.local wrote no run folder under {pipeline_root}")
    log.info("finished in %.0f s: %s", time.time() - t0, new[-1])
    return new[-1]


def task_outputs(run_dir: str | os.PathLike, task: str) -> dict:
    """Parameter outputs of one task of a finished local run (from its executor_output.json)."""
    f = Path(run_dir) / task / "executor_output.json"
    if not f.exists():
        return {}
    doc = json.loads(f.read_text())
    return doc.get("parameterValues", {}) or {}
