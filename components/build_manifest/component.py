"""kfp wrapper: raw dataset -> manifest directory (audio/ + train/val/test.jsonl + summary.json)."""

from kfp.dsl import Dataset, Input, Metrics, Output

from components.common.kfp_base import component


@component
def build_manifest(
    data_root: str,
    seed: int,
    val_ratio: float,
    test_ratio: float,
    manifests: Output[Dataset],
    tar_shards: int = 0,
    data_version: str = "",
    validation: Input[Metrics] = None,
    duplicate_audio: str = "reject",
) -> str:
    """`validation`: validate_data's `report` output (validation.json); the rows it rejected never reach a
    manifest. `data_version` (the dataset's content fingerprint) is unused here: it makes KFP's cache key
    follow content."""
    import json
    import os

    from components.build_manifest.core import build_manifests
    from components.common.logs import configure

    configure()  # this project's log lines as `[step] message` (components.common.logs)

    os.makedirs(manifests.path, exist_ok=True)  # kfp does not pre-create output directories
    r = build_manifests(
        data_root,
        manifests.path,
        seed=seed,
        val_ratio=val_ratio,
        test_ratio=test_ratio,
        tar_shards=tar_shards,
        validation=validation.path if validation is not None else None,
        duplicate_audio=duplicate_audio,
    )
    manifests.metadata.update(r.metadata())
    return json.dumps(r.brief(), ensure_ascii=False)
