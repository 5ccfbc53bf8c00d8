"""Training from tarred shards (issue 16): a large corpus is read from build_manifest's NeMo tar shards through
lhotse (sequential reads of a few large files, not millions of small ones), bucketed by duration.

build_manifest writes the shards when the corpus is at least `shard_above_hours` (or `tar_shards` is set) and
lists them in the manifests' summary.json (`tarred.train`). The fine-tune still selects its rows (target
languages, seeded replay, text maps) from train.jsonl; those rows are written here as per-shard manifests
(sharded/manifest_<N>.json, only the selected lines of shard N) and lhotse's LazyNeMoTarredIterator reads the
tars with `skip_missing_manifest_entries`, so clips the run did not select are read past, never trained on.

The prompt model (EncDecRNNTBPEModelWithPrompt) reads through lhotse either way: its dataset
(LhotseSpeechToTextBpeDatasetWithPromptIndex) takes the prompt from the cut's supervision language, which the
tarred iterator sets from each line's `lang`, exactly as the plain-manifest iterator does. One NeMo 3.0 limit:
that model's setup_training_data fails on `is_tarred: true` with lhotse (it takes len() of lhotse's iterable
dataset), so the flag stays false; lhotse reads the shards because `tarred_audio_filepaths` is set.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from pathlib import Path

from components.common.manifest import TARRED_DIR, write_manifest

log = logging.getLogger(__name__)
SHARDED_DIR = "sharded"
DEFAULT_NUM_BUCKETS = 30  # NeMo's lhotse default; fewer when the run has fewer rows


def tarred_train(train_manifest: str | os.PathLike) -> dict | None:
    """build_manifest's tarred train split beside `train_manifest` ({manifest, tars, shards}), or None when
    the build wrote none (a plain corpus) or its files are gone."""
    here = Path(train_manifest).parent
    try:
        info = json.loads((here / "summary.json").read_text(encoding="utf-8"))["tarred"]["train"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    manifest = _resolve(here, info.get("manifest", ""))
    tars = [_resolve(here, t) for t in info.get("tars", [])]
    if not tars or not manifest.is_file() or not all(t.is_file() for t in tars):
        log.warning(
            "%s lists tarred shards that are not readable here: training from the plain manifest", here
        )
        return None
    return {"manifest": manifest, "tars": tars}


def _resolve(here: Path, p: str) -> Path:
    """An absolute path as is; a relative one (a CLI build into a relative --out records paths relative to
    its working directory) is looked up in the manifest folder's own tarred/train/."""
    return Path(p) if os.path.isabs(p) else here / TARRED_DIR / "train" / Path(p).name


def shard_rows(rows: list[dict], tarred_manifest: str | os.PathLike) -> dict[int, list[dict]] | None:
    """The selected rows by shard: each row as its tarred line (member name, shard_id) with the row's own
    text/lang (text maps applied). None when a row is not in the shards (e.g. a replay manifest's)."""
    from components.common.manifest import read_manifest

    where = {r["id"]: r for r in read_manifest(tarred_manifest, absolute=False) if "id" in r}
    out: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        t = where.get(r.get("id"))
        if t is None:
            return None
        out[int(t["shard_id"])].append(
            {**r, "audio_filepath": t["audio_filepath"], "shard_id": t["shard_id"]}
        )
    return out


def use_shards(
    train_ds: dict,
    rows: list[dict],
    train_manifest: str | os.PathLike,
    work_dir: str | os.PathLike,
    seed: int,
) -> dict:
    """finetune's hook: `train_ds` switched to the tarred shards when build_manifest wrote them and every
    selected row is in them (else unchanged). Bucketing by duration is on (num_buckets: the recipe's, at most
    one per 4 rows); shard order and shuffling are seeded with the run's seed."""
    info = tarred_train(train_manifest)
    if info is None:
        return train_ds
    by_shard = shard_rows(rows, info["manifest"])
    if by_shard is None:
        log.warning(
            "finetune: some selected rows are not in the tarred shards: training from the plain manifest"
        )
        return train_ds
    n = len(info["tars"])
    d = Path(work_dir) / SHARDED_DIR
    d.mkdir(parents=True, exist_ok=True)
    for sid in range(n):
        write_manifest(d / f"manifest_{sid}.json", by_shard.get(sid, []))
    tar_dir = {t.parent for t in info["tars"]}
    names = sorted(t.name for t in info["tars"])
    if len(tar_dir) != 1 or names != sorted(f"audio_{i}.tar" for i in range(n)):
        raise ValueError(
            f"{train_manifest}: tarred shards must be audio_0..{n - 1}.tar in one folder, got {names}"
        )
    ds = dict(train_ds)
    ds.update(
        # lhotse reads tars because tarred_audio_filepaths is set (NeMo's read_nemo_manifest). `is_tarred` stays
        # False: with it, EncDecRNNTBPEModelWithPrompt.setup_training_data (NeMo 3.0) sizes an epoch from
        # len(dataset), which lhotse's iterable dataset does not have (TypeError); max_steps bounds training.
        is_tarred=False,
        manifest_filepath=str(d / f"manifest__OP_0..{n - 1}_CL_.json"),
        tarred_audio_filepaths=str(next(iter(tar_dir)) / f"audio__OP_0..{n - 1}_CL_.tar"),
        skip_missing_manifest_entries=True,
        shard_seed=seed,
        use_bucketing=True,
        # NeMo's default fills the buckets from a non-daemon thread that never ends on (repeating) tarred data:
        # the process would hang at exit after training. Fill them in the loader's own thread instead.
        concurrent_bucketing=False,
        num_buckets=max(1, min(int(train_ds.get("num_buckets") or DEFAULT_NUM_BUCKETS), len(rows) // 4)),
    )
    log.info(
        "finetune: training from %d tarred shards (%d rows selected), bucketed by duration", n, len(rows)
    )
    return ds
