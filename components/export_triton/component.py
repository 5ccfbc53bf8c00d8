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
    candidate_sha256: str = "",
) -> NamedTuple("Outputs", [("version", int), ("sha256", str)]):
    """`candidate_sha256` (the pipeline's registered candidate, now champion): when the newest Triton version
    already serves it at these lookaheads, nothing is exported and MLflow is not even opened (an unchanged re-run)."""
    from components.common.logs import configure

    configure()  # this project's log lines as `[step] message` (components.common.logs)
    import os
    import tempfile

    from components.export_triton.core import export_model, parse_att_context_size, serving_version

    atts = (
        parse_att_context_size(att_context_size or None),
        parse_att_context_size(offline_att_context_size or None),
    )
    if candidate_sha256 and (same := serving_version(triton_repo, candidate_sha256, *atts)) is not None:
        print(
            f"{model_name}: the candidate {candidate_sha256[:12]} is already Triton version {same}: nothing exported"
        )
        return (same, candidate_sha256)
    from registry.mlflow_adapter import Registry, get_client, resolve_alias

    os.makedirs(triton_repo, exist_ok=True)
    info = Registry(get_client(mlflow_tracking_uri or None)).by_alias(model_name, alias)
    if info is not None:  # idempotent re-run: the newest version already serves it (no download)
        same = serving_version(triton_repo, info.tags.get("checkpoint_sha256", ""), *atts)
        if same is not None:
            print(
                f"{model_name}@{alias} (v{info.version}) is already Triton version {same}: nothing exported"
            )
            return (same, info.tags["checkpoint_sha256"])
    with tempfile.TemporaryDirectory(dir=triton_repo, prefix=".download-") as dst:  # same fs: hardlink
        nemo, sha256, info = resolve_alias(
            model_name, alias, dst, client=get_client(mlflow_tracking_uri or None)
        )
        r = export_model(
            nemo,
            triton_repo,
            sha256,
            {**info, "alias": alias},
            att_context_size or None,
            offline_att_context_size=offline_att_context_size or None,
        )
    print(
        f"exported {model_name}@{alias} as version {r.version}{' (already there)' if r.reused else ''}: {r.paths}"
    )
    return (r.version, r.sha256)
