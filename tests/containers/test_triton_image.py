"""The Triton image serves: a container loads an exported triton_repo/ (mounted read-only at /models, as the
cluster's sync sidecar fills it), becomes READY, and answers offline (HTTP) and streaming (gRPC) clients on the
host with the in-process AsrModel's text. Uses the tiny untrained prompt model of tests/e2e/test_triton_serving.
"""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
import uuid

import pytest

from tests.containers.conftest import docker
from tests.e2e.test_triton_serving import ATT, CHUNK_S, build_tiny_model, test_clips

HTTP_PORT, GRPC_PORT, METRICS_PORT = 18310, 18311, 18312  # this project's container-test port range
READY_TIMEOUT_S = 600  # two python-backend stubs importing NeMo on 2 shared cores
FATAL = re.compile(r"error while loading shared libraries: [^\n]+|ModuleNotFoundError: [^\n]+")


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _index(url: str) -> list[dict]:
    from serving.server import repository_index

    try:
        return repository_index(url)
    except OSError:  # not listening yet
        return []


@pytest.fixture(scope="module")
def served(images, shared_tmp):
    from components.common.asr_infer import AsrModel
    from components.export_triton.core import ServingConfig, export_model

    work = shared_tmp / "triton"
    nemo = build_tiny_model(work / "model")
    repo = work / "triton_repo"
    assert (
        export_model(nemo, repo, None, {"name": "tiny-container"}, ATT, serving=ServingConfig()).version == 1
    )
    subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
    name = f"asr-triton-test-{uuid.uuid4().hex[:8]}"
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--network=host",
        "-v",
        f"{repo}:/models:ro",
        images["triton"],
        "tritonserver",
        "--model-repository=/models",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
    )
    url = f"http://127.0.0.1:{HTTP_PORT}"
    try:
        t0 = time.monotonic()
        while not _ready(url):
            state = docker("inspect", "-f", "{{.State.Status}}", name, check=False).stdout.strip()
            # a load error need not be waited out: Triton's reason, or the stub's own (it may never report)
            failed = [
                f"{m['name']}: {m.get('reason', '')}" for m in _index(url) if m.get("state") == "UNAVAILABLE"
            ]
            logs = docker("logs", "--tail", "40", name, check=False)
            failed += sorted({m.group(0) for m in FATAL.finditer(logs.stdout + logs.stderr)})
            if failed or state != "running" or time.monotonic() - t0 > READY_TIMEOUT_S:
                why = "; ".join(failed)
                pytest.fail(
                    f"Triton container {state} and not READY after {time.monotonic() - t0:.0f} s {why}:\n"
                    f"{logs.stdout[-3000:]}{logs.stderr[-3000:]}"
                )
            time.sleep(2)
        print(f"\nTriton image READY in {time.monotonic() - t0:.0f} s")
        yield url, f"grpc://127.0.0.1:{GRPC_PORT}", AsrModel.load(str(nemo)), test_clips()
    finally:
        docker("rm", "-f", name, check=False)


def test_triton_image_serves_offline_and_streaming_with_in_process_text(served):
    from serving.client import transcribe_offline, transcribe_streaming

    http_url, grpc_url, asr, clips = served
    for name, audio, lang in clips:
        expected = asr.transcribe([audio], [lang], att_context_size=ATT)[0]
        assert expected, f"{name}: the tiny model emitted nothing; parity would be vacuous"
        assert transcribe_offline(http_url, audio, lang) == expected, name
        state = asr.new_stream(lang, ATT)
        step = int(CHUNK_S * 16000)
        pieces = [audio[i : i + step] for i in range(0, audio.size, step)]
        streamed = [asr.stream_step(state, p, last=i == len(pieces) - 1) for i, p in enumerate(pieces)][-1]
        assert transcribe_streaming(grpc_url, audio, lang, CHUNK_S) == streamed, name
