"""kfp wrappers: raw dataset -> manifests (a fan-out of conversion pods, then the merge that splits/publishes).

At scale (`build_root` on the data volume) the audio is written there and the `manifests` artifact holds only
train/val/test.jsonl (absolute audio paths), summary.json and build.json; without `build_root` (a local demo)
the artifact is the whole build folder, audio/ included (components/build_manifest/fanout.py).
"""

from kfp.dsl import Dataset, Input, Metrics, Output

from components.common.kfp_base import component


@component
def fanout_shards(n_shards: int, data_root: str, data_version: str = "") -> list:
    """The ParallelFor's items, one per pod: {shard, data_root, data_version}.

    Upstream task outputs travel inside the items rather than as task inputs of the loop body: kfp.local
    (kfp 2.17) replaces a loop body's task-output parameters with the loop item, so `data_root` arrived as
    the shard index."""
    if n_shards < 1:
        raise ValueError(f"build_pods must be >= 1, got {n_shards}")
    return [{"shard": i, "data_root": data_root, "data_version": data_version} for i in range(n_shards)]


@component
def build_manifest_shard(
    data_root: str,
    build_root: str,
    shard: int,
    n_shards: int,
    data_version: str = "",
    validation: Input[Metrics] = None,
) -> str:
    """One pod of the fan-out: converts its share of the clips into the build folder on the data volume."""
    import json

    from components.build_manifest.fanout import shard_step
    from components.common.logs import configure

    configure()  # this project's log lines as `[step] message` (components.common.logs)
    r = shard_step(data_root, build_root, shard, n_shards,
                   validation=validation.path if validation is not None else None)  # fmt: skip
    print(f"build_manifest shard {shard}/{n_shards}: {r}")
    return json.dumps(r)


@component
def build_manifest(
    data_root: str,
    manifests: Output[Dataset],
    settings: str = "",
    seed: int = 0,
    duplicate_audio: str = "reject",
    data_version: str = "",
    validation: Input[Metrics] = None,
) -> str:
    """`settings`: the step's record (components/build_manifest/settings.py) as `name=value` lines ('' = its
    defaults, build_root included: give `build_root=` for the audio inside the artifact); its fields reach
    fanout.build_step by name, except `build_pods`, the width of the pipeline's fan-out (the shard pods).
    `seed` (finetune_asr's) and `duplicate_audio` (validate_data's) are other steps' settings this step shares.
    `validation`: validate_data's `report` output (validation.json); the rows it rejected never reach a
    manifest. `data_version` (the dataset's content fingerprint) is unused here: it makes KFP's cache key
    follow content."""
    import json
    import os

    from components.build_manifest.fanout import build_step
    from components.build_manifest.settings import ManifestSettings
    from components.common.logs import configure
    from components.common.settings import step_kwargs

    configure()  # this project's log lines as `[step] message` (components.common.logs)

    kwargs = step_kwargs(ManifestSettings, settings, "build_manifest")
    kwargs.pop("build_pods")  # the DAG's: how many shard pods converted the audio before this merge
    os.makedirs(manifests.path, exist_ok=True)  # kfp does not pre-create output directories
    r = build_step(
        data_root,
        manifests.path,
        seed=seed,
        duplicate_audio=duplicate_audio,
        validation=validation.path if validation is not None else None,
        **kwargs,
    )
    manifests.metadata.update(r.metadata())
    return json.dumps(r.brief(), ensure_ascii=False)
