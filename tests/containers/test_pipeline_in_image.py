"""The tiny pipeline end to end with every step in the component image (kfp.local.DockerRunner), against the same
compiled pipeline run with SubprocessRunner: manifests byte-identical, WER identical.

How the containers reach what the cluster path reaches:
- MLflow: a real `mlflow server` (REST store, proxied artifacts) on the host's loopback, reached over the host
  network, as pods reach the cluster's tracking server by URL. No file path of the registry crosses into a step.
- Data, work dir and Triton repository: one host folder bind-mounted read-write at the same path (on the cluster:
  the data PVC mounted by `cluster.data_pvc`). The pipeline root is mounted by kfp.local itself.
- DVC: not reached from any step, here or on the cluster; the data version enters as the `data_md5` argument.
Each runner registers under its own model name so both runs see the same registry state (no champion yet).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from pipelines.local import pipeline_arguments, run_local, task_outputs
from tests.containers.conftest import docker
from tests.containers.test_components_in_image import _docker_runner, _tree_digest, run_bounded
from tests.e2e.world import (
    FLOOR_OVERRIDE,
    LANGS,
    PERMISSIVE,
    emitting,
    tiny_base_model,
    tiny_corpus,
    tiny_params,
)
from tests.mlflow_server import mlflow_server as start_mlflow_server

PIPELINE_TIMEOUT_S = 1500  # every step in a container on 2 shared cores; a hang is killed and fails the test


@pytest.fixture(scope="module")
def mlflow_server(shared_tmp):
    with start_mlflow_server(shared_tmp / "mlflow") as uri:
        yield uri


@pytest.fixture(scope="module")
def world(images, shared_tmp, mlflow_server):
    """A tiny corpus and an emitting base model in one shared folder (read-write for the image's uid 1000)."""
    root = shared_tmp / "pipe"
    tiny_corpus(root / "data")
    base = emitting(tiny_base_model(root), root / "base_emitting")
    subprocess.run(["chmod", "-R", "a+rwX", str(root)], check=True)
    return {"root": root, "base": base, "uri": mlflow_server}


def _run(world, runner_name: str, pipeline_root: Path, runner=None) -> Path:
    root = world["root"]
    params = tiny_params(f"container-e2e-{runner_name}")
    args = pipeline_arguments(params, world["base"])  # data md5 and code version: outputs of the first steps
    args.update(
        data_root=str(root / "data"),
        triton_repo=str(root / f"triton_repo-{runner_name}"),
        work_root=str(root / f"work-{runner_name}"),
        # the clips' build folder and the dataset-version cache on the mounted host folder (the repo's .cache,
        # run_local's default, is not mounted into the containers)
        build_root=str(root / f"build-{runner_name}"),
        data_cache=str(root / f"data-versions-{runner_name}"),
        mlflow_tracking_uri=world["uri"],
        gate_policy=PERMISSIVE,
        gate_floor_override_reason=FLOOR_OVERRIDE,
    )
    pipeline_root.mkdir(mode=0o777)
    pipeline_root.chmod(0o777)
    return run_local(args, pipeline_root, runner=runner)


def _wer(run_dir: Path) -> dict:
    ev = json.loads((run_dir / "evaluate-wer" / "evaluation" / "evaluation.json").read_text())
    return ev["metrics"]


def test_pipeline_in_image_equals_subprocess(images, world, shared_tmp, monkeypatch):
    from registry.mlflow_adapter import Registry, get_client
    from registry.policy import CHAMPION

    monkeypatch.setenv("MLFLOW_TRACKING_URI", world["uri"])
    ref = _run(world, "subprocess", shared_tmp / "kfp-pipe-subprocess")
    label = uuid.uuid4().hex[:12]
    runner = _docker_runner(world["root"], label, read_only=False)
    t0 = time.monotonic()
    got = run_bounded(
        lambda: _run(world, "docker", shared_tmp / "kfp-pipe-docker", runner),
        label,
        timeout_s=PIPELINE_TIMEOUT_S,
    )
    print(f"\npipeline in containers: {time.monotonic() - t0:.0f} s")

    # every step ran, in the image, and wrote its outputs under the docker run's pipeline root
    steps = sorted(p.name for p in got.iterdir() if p.is_dir())
    assert steps == sorted(p.name for p in ref.iterdir() if p.is_dir())
    assert {
        "validate-data",
        "build-manifest",
        "finetune-asr",
        "evaluate-wer",
        "register-model",
        "export-triton",
    } <= set(steps)
    # manifests and every re-encoded clip byte-identical (the manifests name each run's own build folder);
    # summary.json equal but for the validation report it read, which lies in each run's own pipeline root
    builds = {r: world["root"] / f"build-{name}" for r, name in ((got, "docker"), (ref, "subprocess"))}

    def manifests(run_dir: Path) -> dict[str, str]:
        d = run_dir / "build-manifest" / "manifests"
        assert {"train.jsonl", "val.jsonl", "test.jsonl", "summary.json"} <= {p.name for p in d.iterdir()}
        return {
            p.name: p.read_text().replace(str(builds[run_dir]), "<build>") for p in sorted(d.glob("*.jsonl"))
        }

    def clips(run_dir: Path) -> dict[str, str]:
        return {k: v for k, v in _tree_digest(builds[run_dir]).items() if k.endswith(".wav")}

    assert manifests(got) == manifests(ref) and clips(got) == clips(ref) and clips(got)
    summaries = []
    for run_dir in (got, ref):
        summary = json.loads((run_dir / "build-manifest" / "manifests" / "summary.json").read_text())
        assert Path(summary.pop("validation")).is_relative_to(run_dir / "validate-data"), summary
        summaries.append(json.dumps(summary, sort_keys=True).replace(str(builds[run_dir]), "<build>"))
    assert summaries[0] == summaries[1]
    # WER identical: base and candidate, streaming and offline, every language
    wer = _wer(got)
    assert set(wer) >= {"base", "candidate"} and all(set(LANGS) <= set(wer[m]["streaming"]) for m in wer)
    assert wer == _wer(ref)
    assert task_outputs(got, "finetune-asr")["final_loss"] == task_outputs(ref, "finetune-asr")["final_loss"]

    # registry (through the server) and the Triton repository the image's export step wrote
    reg = Registry(get_client(world["uri"]))
    v = reg.by_alias("container-e2e-docker", CHAMPION)
    assert v is not None and v.source.startswith("mlflow-artifacts:")
    label_commit = docker(
        "image",
        "inspect",
        "-f",
        '{{index .Config.Labels "org.opencontainers.image.revision"}}',
        images["component"],
    ).stdout.strip()
    assert (
        v.tags["git_commit"] == label_commit
    )  # no .git in the image: code_version() read /opt/asr/GIT_COMMIT
    repo = world["root"] / "triton_repo-docker"
    sha = hashlib.sha256((repo / "asr_offline" / "1" / "model.nemo").read_bytes()).hexdigest()
    assert sha == v.tags["checkpoint_sha256"]
    shutil.rmtree(world["root"] / "work-docker", ignore_errors=True)
