"""kfp wrapper: export the registry's `alias` version of `model_name` into the Triton model repository."""

from typing import NamedTuple

from components.common.kfp_base import component


@component
def export_triton(
    model_name: str,
    triton_repo: str,
    alias: str = "champion",
    att_context_size: str = "",
    mlflow_tracking_uri: str = "",
    offline_att_context_size: str = "",
) -> NamedTuple("Outputs", [("version", int), ("sha256", str)]):
    import os
    import tempfile

    from components.common.logs import configure
    from components.export_triton.core import export_model
    from registry.mlflow_adapter import get_client, resolve_alias

    configure()  # this project's log lines as `[step] message` (components.common.logs)

    os.makedirs(triton_repo, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=triton_repo, prefix=".download-") as dst:  # same fs: hardlink
        nemo, sha256, info = resolve_alias(
            model_name, alias, dst, client=get_client(mlflow_tracking_uri or None)
        )
        r = export_model(nemo, triton_repo, sha256, {**info, "alias": alias}, att_context_size or None,
                         offline_att_context_size=offline_att_context_size or None)
    print(f"exported {model_name}@{alias} as version {r.version}: {r.paths}")
    return (r.version, r.sha256)
