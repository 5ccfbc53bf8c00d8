"""build_manifest's settings: one typed record (splits, shards, and where the audio is converted).

From it come its pipeline parameters with their UI help, params.yaml's `build_manifest` section, `--set
build_manifest.<name>=value` and `python -m components.build_manifest`'s flags (except `build_root` and
`build_pods`: the CLI writes to --out in one process). The merge component receives it as one `settings` text
and passes its fields to `fanout.build_step` (and on to `build_manifests`) by name, so a new setting takes two
edits: a field here and the code that uses it. `build_pods` (the fan-out's width) and `build_root` also drive
the DAG's conversion pods, which take only those two.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.common.settings import SettingsError, knob


@dataclass
class ManifestSettings:
    """build_manifest: splits and shards (the split seed is finetune_asr's `seed`)."""

    val_ratio: float = knob(0.1, "Validation share of speakers when metadata declares no split")
    test_ratio: float = knob(0.1, "Test share of speakers when metadata declares no split")
    tar_shards: int = knob(
        0, "Write NeMo tarred audio shards (this many per split); 0 = by size (shard_above_hours)"
    )
    # --- issue 16 (datascale): audio on the data volume, sharded training, fan-out
    shard_above_hours: float = knob(
        1000.0,
        "A corpus of at least this many hours is written as tarred shards (one per 4 h of a split) and trained "
        "from them through lhotse; 0 = only when tar_shards is set",
    )
    build_root: str = knob(
        "/mnt/work/manifest_build",
        "Folder on the data PVC for converted audio and shards (only manifests travel as artifacts); "
        "empty = audio inside the manifests artifact",
    )
    build_pods: int = knob(
        1, "Pods the audio conversion fans out over (dsl.ParallelFor), then one merge step"
    )

    def __post_init__(self) -> None:
        if self.build_pods < 1:
            raise SettingsError(f"build_manifest.build_pods must be >= 1, got {self.build_pods}")
        if self.shard_above_hours < 0:
            raise SettingsError(
                f"build_manifest.shard_above_hours must be >= 0, got {self.shard_above_hours}"
            )

    # --- end issue 16 (datascale)
