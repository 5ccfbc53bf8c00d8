"""Checks on a built image that tests and `make test-containers` share: does it start, import and run as its user.

`preflight` imports what every component imports, in a container, with a timeout, and turns a broken image (a
missing system library, a wrong entrypoint, a path that exists only in the dev tree) into one clear error.
"""

from __future__ import annotations

import subprocess

PREFLIGHT_TIMEOUT_S = 180
PREFLIGHT_IMPORTS = (
    "torch",
    "soundfile",
    "kfp",
    "mlflow",
    "dvc",
    "great_expectations",
    "nemo.collections.asr",
    "components.common.asr_infer",
    "components.validate_data.core",
    "components.build_manifest.core",
    "components.finetune_asr.core",
    "components.evaluate_wer.core",
    "components.export_triton.core",
    "registry.mlflow_adapter",
    "serving.server",
)
_SCRIPT = """
import importlib, sys, traceback
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as e:
        print(f"PREFLIGHT-FAIL {name}: {type(e).__name__}: {e}", flush=True)
        raise SystemExit(3)
import tarfile
if not hasattr(tarfile, "data_filter"):  # PEP 706, Python >= 3.11.4: NeMo restores .nemo with filter="data"
    print(f"PREFLIGHT-FAIL tarfile: Python {sys.version.split()[0]} has no PEP 706 extraction filters "
          "(NeMo's .nemo restore calls TarFile.extract(..., filter='data'))", flush=True)
    raise SystemExit(3)
print("PREFLIGHT-OK", flush=True)
"""


class ImageBroken(RuntimeError):
    """The image cannot run the pipeline's code; the message says which import failed and why."""


def preflight(image: str, timeout_s: float = PREFLIGHT_TIMEOUT_S, network: str = "host") -> None:
    cmd = [
        "docker",
        "run",
        "--rm",
        f"--network={network}",
        image,
        "python3",
        "-c",
        _SCRIPT,
        *PREFLIGHT_IMPORTS,
    ]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise ImageBroken(
            f"{image}: importing the pipeline's modules did not finish within {timeout_s:.0f} s"
        ) from e
    fail = [line for line in p.stdout.splitlines() if line.startswith("PREFLIGHT-FAIL")]
    if fail:
        raise ImageBroken(f"{image}: {fail[0].removeprefix('PREFLIGHT-FAIL ')}")
    if p.returncode != 0 or "PREFLIGHT-OK" not in p.stdout:
        raise ImageBroken(
            f"{image}: `python3` in the image exited {p.returncode}: {p.stderr.strip()[-1000:]}"
        )
