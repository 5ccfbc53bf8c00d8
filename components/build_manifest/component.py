"""kfp wrapper: raw dataset -> manifest directory (audio/ + train/val/test.jsonl + summary.json)."""

from kfp.dsl import Dataset, Output

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
) -> str:
    """`data_version` (the dataset's content fingerprint) is unused here: it makes KFP's cache key follow content."""
    import json
    import os

    from components.build_manifest.core import build_manifests

    os.makedirs(manifests.path, exist_ok=True)  # kfp does not pre-create output directories
    r = build_manifests(
        data_root,
        manifests.path,
        seed=seed,
        val_ratio=val_ratio,
        test_ratio=test_ratio,
        tar_shards=tar_shards,
    )
    manifests.metadata.update(r.metadata())
    return json.dumps(r.brief(), ensure_ascii=False)
