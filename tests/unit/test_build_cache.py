"""BuildCache: what build_manifest remembers between runs (sources.json, build_state.json), on its own."""

from __future__ import annotations

import json
import os
from pathlib import Path

from components.build_manifest.cache import INDEX_NAME, STATE_NAME, BuildCache
from components.build_manifest.convert import CONVERTER
from components.common.dataset import MetadataRow
from components.common.io import sha256_file


def _row(rid: str = "a", audio: str = "a.wav") -> MetadataRow:
    return MetadataRow(line=2, audio=audio, text="x", lang="es-ES", speaker="s", id=rid)


def _setup(tmp_path: Path) -> tuple[BuildCache, Path, os.stat_result]:
    src = tmp_path / "a.wav"
    src.write_bytes(b"source bytes" * 10)
    out = tmp_path / "out"
    (out / "audio").mkdir(parents=True)
    (out / "audio" / "a.wav").write_bytes(b"\0" * 100)  # a converted clip (> a bare header)
    st = src.stat()
    entry = {"source": "a.wav", "sha256": sha256_file(src), "duration": 1.5, "size": st.st_size,
             "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "converter": CONVERTER}  # fmt: skip
    (out / INDEX_NAME).write_text(json.dumps({"a": entry}), encoding="utf-8")
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns - 5_000_000_000))  # not racy: older than the index
    return BuildCache(out), src, src.stat()


def test_reuse_needs_same_content_raw_declaration_and_converter(tmp_path):
    cache, src, st = _setup(tmp_path)
    cache.open_for_build()
    entry = json.loads(cache.index_path.read_text())["a"]
    # the mtime differs from the record: the source is hashed, and its content is unchanged
    assert cache.reusable(_row(), str(src), st, verify=False) == entry["sha256"]
    entry["mtime_ns"] = st.st_mtime_ns
    cache.index_path.write_text(json.dumps({"a": entry}))
    cache.open_for_build()
    assert cache.reusable(_row(), str(src), st, verify=False) == entry["sha256"]
    assert cache.duration("a") == 1.5
    src.write_bytes(b"other bytes!" * 10)  # same size, other content
    assert cache.reusable(_row(), str(src), st, verify=False) == entry["sha256"]  # the stat cache trusts it
    assert cache.reusable(_row(), str(src), st, verify=True) is None  # verify_sources hashes it
    # the record is of another file: another declared path, or another inode at that path (hashed, differs)
    assert cache.reusable(_row(audio="b.wav"), str(src), st, verify=False) is None
    entry["ino"] = st.st_ino + 1
    cache.index_path.write_text(json.dumps({"a": entry}))
    cache.open_for_build()
    assert cache.reusable(_row(), str(src), st, verify=False) is None
    entry["ino"] = st.st_ino
    assert cache.reusable(_row("b"), str(src), st, verify=False) is None  # no record for this id
    entry["converter"] = "old-code/1"
    cache.index_path.write_text(json.dumps({"a": entry}))
    cache.open_for_build()
    assert cache.previous_sha(_row()) is None


def test_damaged_index_and_state_cost_only_a_rebuild(tmp_path):
    cache, _, _ = _setup(tmp_path)
    cache.index_path.write_text("{not json")
    cache.open_for_build()
    assert cache.old_index == {}
    cache.state_path.write_text("[1, 2]")
    assert cache.unchanged("k") is None


def test_state_round_trip_and_invalidation(tmp_path):
    cache, src, st = _setup(tmp_path)
    for s in ("train", "val", "test"):
        (cache.out / f"{s}.jsonl").write_text("")
    sources = [[str(src), st.st_size, st.st_mtime_ns, st.st_ino]]
    fields = {"tarred": {}, "counts": {}}
    cache.write_state("k1", fields, sources, {}, {"a": {}}, fast=True)
    assert cache.unchanged("k1") == fields
    assert cache.unchanged("k2") is None  # other metadata bytes / parameters
    (cache.out / "audio" / "a.wav").write_bytes(b"\0" * 101)  # an output changed
    assert cache.unchanged("k1") is None
    cache.write_state("k1", fields, sources, {}, {"a": {}}, fast=True)
    src.write_bytes(b"changed")  # a source changed
    assert cache.unchanged("k1") is None
    cache.open_for_build()  # a build starting forgets the completed-run state
    assert not (cache.out / STATE_NAME).exists()
