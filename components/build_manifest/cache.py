"""The build's memory of earlier runs in one output folder: `sources.json` and `build_state.json`.

`sources.json` (the index) records, per clip id, the source's declared path, sha256, size, mtime, inode, duration,
raw layout and the converter that wrote the clip: a re-run reuses a clip whose source is unchanged. `build_state.json`
records what a *completed* run's outputs depend on: a re-run whose inputs and outputs all still match only
stats them (`unchanged`). Both are caches: a damaged or missing file only costs a re-conversion.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from components.build_manifest.convert import CONVERTER
from components.build_manifest.tarred import TARRED_DIR
from components.common.dataset import MetadataRow
from components.common.io import atomic_write_text, sha256_file
from components.common.manifest import SPLITS

AUDIO_DIR = "audio"
INDEX_NAME = "sources.json"
STATE_NAME = "build_state.json"
_STATE_VERSION = 3  # bump when the outputs for the same inputs change
RACY_NS = 2_000_000_000  # git's racy rule: a file modified within 2 s of a recorded stat proves nothing


def stat_sig(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def not_racy(sources: list[list], started_ns: int) -> bool:
    """False when a source was modified within 2 s before this run looked at it: it may change again within
    the same timestamp tick, so its stat cannot prove it unchanged next time (git's racy rule)."""
    limit = started_ns - RACY_NS
    return all(m is None or m < limit for _, _, m, _ in sources)


class BuildCache:
    """Owns `out/sources.json` and `out/build_state.json` (module docstring)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.index_path = self.out / INDEX_NAME
        self.state_path = self.out / STATE_NAME
        self.audio_dir = os.path.join(str(self.out), AUDIO_DIR)
        self.old_index: dict = {}
        self.racy_after = 0
        self.trusted: set[str] = set()  # ids whose recorded stat a fan-out pod proved (fanout.absorb_parts)

    @staticmethod
    def key(meta_path: Path, data_root: Path, out: Path, params: list) -> str:
        """What decides the outputs besides the audio: the metadata bytes, the parameters, this code's version."""
        h = hashlib.sha256(meta_path.read_bytes())
        h.update(json.dumps([_STATE_VERSION, str(data_root), str(meta_path), str(out), params]).encode())
        return h.hexdigest()

    # ------------------------------------------------------------------ the unchanged-input fast path

    def unchanged(self, key: str) -> dict | None:
        """The previous run's summary fields when nothing it depended on changed, else None.

        Nothing changed when: the metadata bytes and parameters hash to the recorded key; every folder holding
        audio resolves (realpath) to the same place inside the root as before; every source file is still a
        regular file (not a symlink) with the recorded size, mtime and inode, and was not modified within 2 s
        before the previous run finished (git's racy rule); every missing source is still missing; and every
        output (manifests, sources.json, audio/ and its clips, tarred shards) has the recorded stat. That is
        one lstat per source and one stat per clip, no metadata parsing, no hashing, no manifest writing."""
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(state, dict) or state.get("key") != key or not state.get("fast"):
            return None
        try:
            if not (self._dirs_same(state) and self._sources_same(state) and self._clips_same(state)):
                return None
        except (OSError, KeyError, TypeError, ValueError):
            return None
        return state["fields"]

    @staticmethod
    def _dirs_same(state: dict) -> bool:
        if any(os.path.realpath(d) != real for d, real in state["dirs"].items()):
            return False
        return all(stat_sig(path) == sig for path, sig in state["outputs"].items())

    @staticmethod
    def _sources_same(state: dict) -> bool:
        for path, size, mtime_ns, ino in state["sources"]:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if size is None:
                    continue
                return False
            if size is None or not stat.S_ISREG(st.st_mode):
                return False
            if st.st_size != size or st.st_mtime_ns != mtime_ns or st.st_ino != ino:
                return False
        return True

    def _clips_same(self, state: dict) -> bool:
        for name, size, ino in state["clips"]:
            st = os.stat(os.path.join(self.audio_dir, name))
            if st.st_size != size or st.st_ino != ino:
                return False
        return True

    # ------------------------------------------------------------------------ per-clip reuse (index)

    def open_for_build(self) -> None:
        """Forget the completed-run state (outputs are about to change) and load the clip index."""
        self.state_path.unlink(missing_ok=True)
        self.load_index()
        from components.build_manifest.fanout import absorb_parts

        absorb_parts(self)

    def load_index(self) -> None:
        """The clip index of earlier runs (a fan-out pod reads it without touching the completed-run state)."""
        try:
            self.old_index = (
                json.loads(self.index_path.read_text(encoding="utf-8")) if self.index_path.exists() else {}
            )
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.old_index = {}  # a damaged cache only costs a re-conversion
        if not isinstance(self.old_index, dict):
            self.old_index = {}
        self.racy_after = self.index_path.stat().st_mtime_ns - RACY_NS if self.old_index else 0

    def previous_sha(self, r: MetadataRow) -> str | None:
        """The source hash a previous run converted for this id, if it used the same raw declaration and
        the same converter."""
        entry = self.old_index.get(r.id)
        if not (isinstance(entry, dict) and entry.get("duration")) or entry.get("raw") != raw_of(r):
            return None
        if entry.get("converter") != CONVERTER:  # converted by other code: the same source, other samples
            return None
        return entry.get("sha256")

    def reusable(self, r: MetadataRow, src: str, st: os.stat_result, verify: bool) -> str | None:
        """The source sha256 when this row's clip from a previous run can be reused, else None.

        A source at the recorded path whose inode, size and mtime (ns) match the record keeps its recorded
        sha256 (the stat cache git and DVC use) unless it is "racy" (modified within 2 s before the index was written) or `verify` is set;
        any other source is hashed and reused only if its content is unchanged."""
        prev = self.previous_sha(r)
        if prev is None:
            return None
        entry = self.old_index[r.id]
        # the same file: the declared path and the inode, not only size and mtime. Files extracted from one
        # archive (tar, zip, `rsync -a`) share mtimes, and clips of one length share sizes: without the path, a
        # dataset version that points an id at another file reused the older version's clip; without the inode,
        # one that replaced a file at the same path did (tests/unit/test_build_manifest.py, issue 16)
        same_file = entry.get("source") == r.audio and entry.get("ino") == st.st_ino
        same_stat = same_file and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns
        same_stat = same_stat and (st.st_mtime_ns < self.racy_after or r.id in self.trusted)
        sha = prev if same_stat and not verify else sha256_file(src)
        if sha != prev:
            return None
        try:
            ok = os.stat(os.path.join(self.audio_dir, f"{r.id}.wav")).st_size > 44  # > a bare WAV header
        except OSError:
            ok = False
        return sha if ok else None

    def duration(self, rid: str) -> float:
        return float(self.old_index[rid]["duration"])

    def write_index(self, index: dict, write_if_changed) -> None:
        write_if_changed(self.index_path, json.dumps(index, ensure_ascii=False, indent=0, sort_keys=True))

    # ------------------------------------------------------------------------------- completed run

    def output_paths(self, tarred: dict) -> list[str]:
        """Outputs whose stat the unchanged-input path checks (audio/ by its folder mtime and per clip)."""
        out = self.out
        paths = [str(out / f"{s}.jsonl") for s in SPLITS] + [str(self.index_path), self.audio_dir]
        for s in SPLITS:
            d = out / TARRED_DIR / s
            paths.append(str(d))
            if s in tarred:
                paths += [str(d / "sharded_manifests"), tarred[s]["manifest"], *tarred[s]["tars"]]
                paths += [
                    str(d / "sharded_manifests" / f"manifest_{i}.json") for i in range(tarred[s]["shards"])
                ]
        return paths

    def write_state(
        self, key: str, fields: dict, sources: list[list], dirs: dict, index: dict, fast: bool
    ) -> None:
        """Record what this run's outputs depend on, for `unchanged`. Written last, after every output."""
        clips = []
        if fast:
            for rid in index:
                sig = stat_sig(os.path.join(self.audio_dir, f"{rid}.wav"))
                if sig is None:
                    fast = False
                    break
                clips.append([f"{rid}.wav", sig[0], sig[2]])
        state = {
            "key": key,
            "fast": fast,
            "dirs": dirs,
            "outputs": {p: stat_sig(p) for p in self.output_paths(fields["tarred"])} if fast else {},
            "sources": sources if fast else [],
            "clips": clips,
            "fields": fields,
        }
        atomic_write_text(self.state_path, json.dumps(state, ensure_ascii=False, separators=(",", ":")))


def raw_of(r: MetadataRow) -> dict | None:
    return r.raw.to_dict() if r.raw else None
