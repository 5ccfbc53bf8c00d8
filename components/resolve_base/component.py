"""kfp wrapper: pin the base model and state the code version (logic in core.py). Never cached: an alias moves."""

from typing import NamedTuple

from components.common.kfp_base import component


@component
def resolve_base(base_model_uri: str, base_model_sha256: str, mlflow_tracking_uri: str) -> NamedTuple(
    "Outputs", [("uri", str), ("sha256", str), ("code_version", str)]
):
    from components.common.logs import configure

    configure()  # this project's log lines as `[step] message` (components.common.logs)
    from components.common.errors import exit_on_deterministic
    from components.resolve_base.core import resolve_base as resolve

    try:
        r = resolve(base_model_uri, base_model_sha256, mlflow_tracking_uri or None)
    except BaseException as e:  # noqa: BLE001
        exit_on_deterministic("resolve_base", e)
    print(f"base model {base_model_uri} -> {r.uri} (sha256 {r.sha256}); code {r.code_version}")
    return (r.uri, r.sha256, r.code_version)
