"""`python -m serving.tritonserver ARGS...`: exec the wheel's tritonserver with the environment it needs.

The production image (infra/docker/Dockerfile.triton) installs this as `/usr/local/bin/tritonserver`, so the
Kubernetes Deployment calls `tritonserver --model-repository=/models ...` exactly like NVIDIA's container, while
the binary, python backend, stub and LD_LIBRARY_PATH fix are the ones `make serve` uses locally.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from serving.server import prepare_backends, pytriton_dir, server_env


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    src = pytriton_dir()
    state = Path(os.environ.get("TRITON_BACKEND_STATE", Path.home() / ".cache" / "asr-triton"))
    if not any(a.startswith("--backend-directory") for a in args):
        args.append(f"--backend-directory={prepare_backends(state)}")
    if not any(a.startswith("--cache-directory") for a in args):
        args.append(f"--cache-directory={src / 'caches'}")
    binary = str(src / "bin" / "tritonserver")
    os.execve(binary, [binary, *args], server_env())


if __name__ == "__main__":
    main()
