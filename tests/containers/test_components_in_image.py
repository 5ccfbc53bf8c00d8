"""Pipeline components in the component image through kfp.local.DockerRunner, as Kubeflow runs them.

The same compiled component spec (image + command) runs once with SubprocessRunner (this interpreter) and once in
the image; the outputs must be equal: manifests and re-encoded audio byte-identical, validation report equal.
The data root is bind-mounted read-only at the same path (on the cluster it is the data PVC); the pipeline root
is mounted by kfp.local itself. Containers use the host network (MLflow/DVC reachable as from the host).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from kfp import local

from components.build_manifest.component import build_manifest
from components.validate_data.component import validate_data
from pipelines.local import docker_exit_status_fix
from tests.components.test_data_components import make_dataset
from tests.containers.conftest import docker
from tests.containers.images import ImageBroken, preflight

TASK_TIMEOUT_S = 600  # one component in a container; a hung container is killed, and the task fails


def _docker_runner(data_root: Path, label: str, read_only: bool = True) -> local.DockerRunner:
    from docker.types import Mount

    docker_exit_status_fix()  # kfp 2.17 reports a container that failed fast as SUCCESS
    return local.DockerRunner(
        network_mode="host",
        mounts=[Mount(target=str(data_root), source=str(data_root), type="bind", read_only=read_only)],
        labels={"asr-test": label},
    )


def run_bounded(fn, label: str, timeout_s: float = TASK_TIMEOUT_S):
    """Run a kfp.local call; kill its containers (by label) after `timeout_s`, so a hang becomes a failure."""
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        ids = docker("ps", "-q", "--filter", f"label=asr-test={label}", check=False).stdout.split()
        if ids:
            docker("kill", *ids, check=False)

    timer = threading.Timer(timeout_s, kill)
    timer.start()
    try:
        return fn()
    except Exception as e:
        if fired.is_set():
            raise AssertionError(
                f"container task killed after {timeout_s:.0f} s (label asr-test={label})"
            ) from e
        raise
    finally:
        timer.cancel()


def _tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every output file except build_state.json (the re-run cache: source mtimes and inodes)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "build_state.json"
    }


@pytest.fixture(scope="module")
def dataset(shared_tmp) -> Path:
    root = make_dataset(shared_tmp / "ds" / "data")
    subprocess.run(["chmod", "-R", "a+rX", str(shared_tmp / "ds")], check=True)
    return root


@pytest.fixture(scope="module")
def roots(shared_tmp) -> dict[str, Path]:
    out = {}
    for name in ("subprocess", "docker"):
        out[name] = shared_tmp / f"kfp-{name}"
        out[name].mkdir()
        out[name].chmod(0o777)  # the image runs as uid 1000; kfp.local mounts the pipeline root as is
    return out


def _run_steps(runner, root: Path, dataset: Path, label: str):
    local.init(runner=runner, pipeline_root=str(root), enable_caching=False)  # each run really runs its steps
    v = run_bounded(
        lambda: validate_data(data_root=str(dataset), settings="min_duration=0.3\nmax_duration=30.0"), label
    )
    m = run_bounded(
        lambda: build_manifest(
            data_root=str(dataset), settings="val_ratio=0.1\ntest_ratio=0.1\nbuild_root=", seed=0
        ),
        label,
    )
    return v, m


def test_image_preflight(images):
    preflight(images["component"])


def test_components_in_image_equal_subprocess(images, dataset, roots):
    ref_v, ref_m = _run_steps(
        local.SubprocessRunner(use_venv=False), roots["subprocess"], dataset, "subprocess"
    )
    label = uuid.uuid4().hex[:12]
    v, m = _run_steps(_docker_runner(dataset, label), roots["docker"], dataset, label)

    def unpath(text: str, root: Path) -> str:  # the summary names the step's own output and temp folders
        text = re.sub(r"<root>/[^/\s]+/", "<root>/<run>/", text.replace(str(root), "<root>"))
        return re.sub(r"/tmp/tmp\w+", "<tmp>", text)

    assert v.outputs["passed"] is True
    assert unpath(v.outputs["summary"], roots["docker"]) == unpath(
        ref_v.outputs["summary"], roots["subprocess"]
    )
    assert v.outputs["report"].metadata == ref_v.outputs["report"].metadata
    ref_dir, out_dir = Path(ref_m.outputs["manifests"].path), Path(m.outputs["manifests"].path)
    assert out_dir.is_relative_to(roots["docker"]) and ref_dir.is_relative_to(roots["subprocess"])
    digest = _tree_digest(out_dir)
    assert {"train.jsonl", "val.jsonl", "test.jsonl", "summary.json"} <= set(digest)
    assert len([k for k in digest if k.endswith(".wav")]) == 6
    assert digest == _tree_digest(ref_dir)  # manifests, summary and every re-encoded clip byte-identical
    assert json.loads(m.outputs["Output"]) == json.loads(ref_m.outputs["Output"])
    assert m.outputs["manifests"].metadata == ref_m.outputs["manifests"].metadata


# ------------------------------------------------------------------------------------- a deliberately broken image
BROKEN_IMAGE = "asr-test/broken-component:missing-libstdcxx"


@pytest.fixture(scope="module")
def broken_image(images, shared_tmp) -> str:
    """The component image without libstdc++ (a system library torch needs): what a too-slim base would ship."""
    ctx = shared_tmp / "broken"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {images['component']}\nUSER root\n"
        "RUN rm -f /usr/lib/x86_64-linux-gnu/libstdc++.so.6*\nUSER 1000\n"
    )
    docker("build", "--network=host", "-q", "-t", BROKEN_IMAGE, str(ctx), timeout=300)
    yield BROKEN_IMAGE
    docker("rmi", "-f", BROKEN_IMAGE, check=False)


def test_broken_image_fails_preflight_with_the_missing_library(broken_image):
    with pytest.raises(
        ImageBroken, match=r"torch: ImportError: libstdc\+\+\.so\.6: cannot open shared object"
    ):
        preflight(broken_image)


def test_broken_image_fails_the_component_not_hangs(broken_image, dataset, shared_tmp):
    root = shared_tmp / "kfp-broken"
    root.mkdir()
    root.chmod(0o777)
    step = copy.deepcopy(validate_data)
    step.component_spec.implementation.container.image = broken_image
    label = uuid.uuid4().hex[:12]
    # no cache: the same validate_data inputs ran earlier in this session, and a cache hit runs no container
    local.init(runner=_docker_runner(dataset, label), pipeline_root=str(root), enable_caching=False)
    with pytest.raises(RuntimeError, match="validate-data"):
        run_bounded(
            lambda: step(data_root=str(dataset), settings="min_duration=0.3\nmax_duration=30.0"),
            label,
            timeout_s=300,
        )


def test_image_carries_its_commit_as_label_and_file(images):
    """The commit `make images` built from: the OCI label, and the file code_version() reads where there is no .git."""
    for image in images.values():
        label = docker(
            "image", "inspect", "-f", '{{index .Config.Labels "org.opencontainers.image.revision"}}', image
        ).stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", label), f"{image}: revision label {label!r}"
        seen = docker(
            "run",
            "--rm",
            image,
            "python",
            "-c",
            "from components.common.version import code_version; print(code_version('/opt/asr'))",
        )
        assert seen.stdout.strip() == label, f"{image}: code_version() in the image says {seen.stdout!r}"


def test_component_image_has_git_and_the_dvc_s3_remote(images):
    """materialize_data runs `git` (a `data_rev` that is a git revision) and DVC pulls from S3 on a cluster:
    both must be in the image, not only on the developer's machine (issue 16)."""
    got = docker(
        "run",
        "--rm",
        images["component"],
        "sh",
        "-c",
        "git --version && python -c 'import dvc_s3, s3fs; print(\"dvc-s3 ok\")'",
    )
    assert got.stdout.startswith("git version") and "dvc-s3 ok" in got.stdout, got.stdout + got.stderr
