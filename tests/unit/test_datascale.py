"""Issue 16 at scale: the audio stays on the data volume (only manifests travel as artifacts), the conversion
fans out over pods with the one-pod output, large corpora are sharded by size."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from components.build_manifest.core import build_manifests, shards_for
from components.build_manifest.fanout import (
    BUILD_RECORD,
    absorb_parts,
    build_dir_for,
    build_step,
    convert_shard,
    shard_of,
)
from components.common.manifest import SPLITS, read_manifest
from tests.unit.test_build_manifest import make_corpus

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".tar", ".opus", ".m4a"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scale") / "data"
    make_corpus(root, speakers=4, utts=3)  # 36 clips
    return root


def _comparable(build: Path) -> dict:
    """A build's output with the build folder's own path taken out: manifests (audio paths relative to the
    build), clip bytes, and summary.json without the per-run counters."""
    out = {}
    for s in SPLITS:
        rows = read_manifest(build / f"{s}.jsonl", absolute=True)
        out[s] = [{**r, "audio_filepath": os.path.relpath(r["audio_filepath"], build)} for r in rows]
    out["clips"] = {p.name: p.read_bytes() for p in sorted((build / "audio").iterdir())}
    summary = json.loads((build / "summary.json").read_text())
    for key in ("n_converted", "n_reused", "tarred", "validation"):  # per-run counters, input paths
        summary.pop(key)
    out["summary"] = summary
    return out


def test_at_scale_the_artifact_holds_no_audio(corpus, tmp_path):
    art = tmp_path / "artifact"
    res = build_step(
        str(corpus), art, str(tmp_path / "pvc"), val_ratio=0.25, test_ratio=0.25, workers=1, tar_shards=2
    )
    files = sorted(p.relative_to(art).as_posix() for p in art.rglob("*") if p.is_file())
    assert files == ["build.json", "summary.json", "test.jsonl", "train.jsonl", "val.jsonl"]
    assert not any(Path(f).suffix in AUDIO_SUFFIXES for f in files)
    build = build_dir_for(tmp_path / "pvc", corpus)
    assert json.loads((art / BUILD_RECORD).read_text())["build_dir"] == str(build)
    for s in SPLITS:  # every manifest line points at a clip on the volume, by an absolute path
        for r in read_manifest(art / f"{s}.jsonl", absolute=False):
            assert os.path.isabs(r["audio_filepath"]) and r["audio_filepath"].startswith(str(build))
            assert os.path.isfile(r["audio_filepath"])
    summary = json.loads((art / "summary.json").read_text())
    for info in summary["tarred"].values():
        assert all(t.startswith(str(build)) and os.path.isfile(t) for t in info["tars"])
    assert sum(res.totals().values()) == 36
    # without build_root (the local demo's old layout) the artifact is the whole build folder
    local = tmp_path / "local_artifact"
    build_step(str(corpus), local, "", val_ratio=0.25, test_ratio=0.25, workers=1)
    assert len(list((local / "audio").glob("*.wav"))) == 36


def test_build_dir_is_one_per_dataset_root(tmp_path):
    a, b = build_dir_for(tmp_path, "/mnt/data/asr"), build_dir_for(tmp_path, "/mnt/data/asr2")
    assert a != b and a == build_dir_for(tmp_path, "/mnt/data/asr/") and a.name.startswith("asr-")


def test_fan_out_equals_one_pod(corpus, tmp_path):
    one = build_manifests(corpus, tmp_path / "one", val_ratio=0.25, test_ratio=0.25, workers=1)
    fan = tmp_path / "fan"
    done = [convert_shard(corpus, fan, i, 2, workers=1) for i in range(2)]
    assert [d["rows"] for d in done] == [sum(shard_of(r, 2) == i for r in one_ids(one)) for i in range(2)]
    assert all(d["rows"] > 0 for d in done) and sum(d["converted"] for d in done) == 36
    merged = build_manifests(corpus, fan, val_ratio=0.25, test_ratio=0.25, workers=1)
    assert merged.n_converted == 0 and merged.n_reused == 36  # the merge only splits and publishes
    assert not list((fan / "parts").iterdir())  # parts absorbed
    assert _comparable(fan) == _comparable(tmp_path / "one")
    assert merged.counts == one.counts and merged.hours == one.hours


def one_ids(res) -> list[str]:
    return [r["id"] for s in SPLITS for r in read_manifest(res.manifests[s], absolute=False)]


def test_a_racy_part_entry_is_rehashed_not_trusted(tmp_path):
    import time

    from components.build_manifest.cache import BuildCache

    data = tmp_path / "data"
    make_corpus(data, speakers=4, utts=3)
    now = time.time()
    for f in (data / "clips").iterdir():
        os.utime(f, (now - 100, now - 100))
    os.utime(data / "clips" / "el-GR-0-0.wav", (now - 0.5, now - 0.5))  # modified just before the pod looked
    fan = tmp_path / "fan"
    convert_shard(data, fan, 0, 1, workers=1)
    cache = BuildCache(fan)
    cache.load_index()
    assert absorb_parts(cache) == 36
    assert "clips__el-GR-0-0" not in cache.trusted and len(cache.trusted) == 35


def test_shard_arguments_are_checked(corpus, tmp_path):
    with pytest.raises(ValueError, match="shard must be in"):
        convert_shard(corpus, tmp_path, 2, 2)


def test_shards_by_size():
    rows = [{"duration": 3600.0}] * 9  # 9 h in the split
    assert shards_for(0, 0.0, 10_000.0, rows) == 0  # off
    assert shards_for(0, 1000.0, 999.0, rows) == 0  # below the threshold
    assert shards_for(0, 1000.0, 1000.0, rows) == 3  # one per 4 h
    assert shards_for(5, 1000.0, 1.0, rows) == 5  # tar_shards wins


def test_shard_above_hours_writes_shards_for_a_large_corpus(corpus, tmp_path):
    res = build_manifests(
        corpus, tmp_path / "m", val_ratio=0.25, test_ratio=0.25, workers=1, shard_above_hours=0.001
    )  # 36 clips of ~0.5 s are > 3.6 s
    assert set(res.tarred) == {"train", "val", "test"} and res.tarred["train"]["shards"] == 1
    small = build_manifests(
        corpus, tmp_path / "n", val_ratio=0.25, test_ratio=0.25, workers=1, shard_above_hours=1000.0
    )
    assert small.tarred == {}


def test_docs_state_the_code_s_defaults():
    from components.build_manifest.core import HOURS_PER_SHARD
    from components.common.settings import knobs
    from pipelines.settings import ManifestSettings

    root = Path(__file__).resolve().parents[2]
    data = (root / "docs" / "DATA.md").read_text(encoding="utf-8")
    cluster = (root / "docs" / "CLUSTER.md").read_text(encoding="utf-8")
    k = {x.name: x for x in knobs(ManifestSettings)}
    assert f"`HOURS_PER_SHARD` = {HOURS_PER_SHARD:g} hours" in data
    assert f"one per {HOURS_PER_SHARD:g} h of a split" in k["shard_above_hours"].help
    assert f"at least `shard_above_hours` hours (pipeline default {k['shard_above_hours'].default:g}" in data
    assert f"pipeline default `{k['build_root'].default}`" in data and k["build_root"].default in cluster
    assert f"(`build_pods`, default {k['build_pods'].default})" in data


def test_training_finds_the_shards_of_a_cli_build_into_a_relative_folder(corpus, tmp_path, monkeypatch):
    from components.finetune_asr.shards import tarred_train

    monkeypatch.chdir(tmp_path)
    res = build_manifests(corpus, "rel/m", val_ratio=0.25, test_ratio=0.25, workers=1, tar_shards=2)
    assert not os.path.isabs(res.tarred["train"]["tars"][0])  # recorded relative to the working directory
    monkeypatch.chdir(corpus)  # the fine-tune runs elsewhere
    found = tarred_train(tmp_path / "rel" / "m" / "train.jsonl")
    assert found and [t.name for t in found["tars"]] == ["audio_0.tar", "audio_1.tar"]
    assert all(t.is_file() for t in found["tars"])
