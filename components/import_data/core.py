"""Bring existing data: NeMo JSONL manifests, a Hugging Face `audiofolder` or `datasets.save_to_disk` folder,
or a Lhotse CutSet become the dataset root's `metadata.jsonl`, which every data step then reads with the same
validation and the same named errors as a hand-written one (docs/DATA.md, "Bring existing data").

The audio stays where it is: rows point at the files in place (relative to the root). Only a `datasets`
folder, whose audio is stored inside Arrow files, has its clips written out once, as the bytes they were
given (decoded later by build_manifest, locally, like any other file). A path outside the root is kept as
given, so validation rejects that row by name (`audio_in_root`) instead of the import hiding it.

`import.json` beside the generated metadata.jsonl records the format and the source files: a re-import
replaces a metadata.jsonl the import wrote, and refuses to overwrite one a person wrote.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from components.common.dataset import METADATA_NAMES, DatasetError
from components.common.io import atomic_write_text, sha256_file

FORMATS = ("nemo", "hf_audiofolder", "hf_disk", "lhotse")
IMPORT_RECORD = "import.json"
HF_AUDIO_DIR = "hf_audio"  # where a datasets folder's embedded clips are written, inside the root
# Source column -> our column, first match wins (the usual names in NeMo, HF and Common Voice exports).
ALIASES = {
    "audio": ("audio", "audio_filepath", "file_name", "path"),
    "text": ("text", "transcription", "transcript", "sentence", "normalized_text"),
    "lang": ("lang", "target_lang", "language", "locale", "source_lang"),
    "speaker": ("speaker", "speaker_id", "client_id", "spk"),
    "id": ("id", "utt_id", "utterance_id"),
}
_SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                "dev": "val", "test": "test"}  # fmt: skip


class ImportDataError(DatasetError):
    """The source cannot be imported as declared; the message names the file, line/record and field."""


@dataclass
class ImportResult:
    root: Path
    format: str
    rows: int
    sources: list[str]
    metadata: Path
    dropped: list[dict] = field(default_factory=list)  # {source, reason}: records that cannot become a row


def detect(root: str | os.PathLike) -> str | None:
    """The format of a dataset root that has no metadata file of its own, or None when none is recognised."""
    r = Path(root)
    if (r / "dataset_dict.json").is_file() or (r / "state.json").is_file():
        return "hf_disk"
    if any(r.glob("*/metadata.csv")) or any(r.glob("*/metadata.jsonl")):
        return "hf_audiofolder"
    if _lhotse_files(r):
        return "lhotse"
    if _nemo_files(r):
        return "nemo"
    return None


def _lhotse_files(r: Path) -> dict[str, Path]:
    out = {}
    for kind in ("cuts", "recordings", "supervisions"):
        found = sorted(r.glob(f"*{kind}*.jsonl*"))
        if found:
            out[kind] = found[0]
    return out if "cuts" in out or {"recordings", "supervisions"} <= set(out) else {}


def _nemo_files(r: Path) -> list[Path]:
    out = []
    for p in sorted(r.glob("*.json")) + sorted(r.glob("*.jsonl")):
        if p.name in METADATA_NAMES or p.name == IMPORT_RECORD:
            continue
        try:
            with p.open(encoding="utf-8") as f:
                first = f.readline()
            if "audio_filepath" in json.loads(first):
                out.append(p)
        except (OSError, ValueError, TypeError):
            continue
    return out


def _pick(rec: dict, column: str) -> str:
    for name in ALIASES[column]:
        v = rec.get(name)
        if v not in (None, ""):
            return v if isinstance(v, str) else str(v)
    return ""


def _split_of(name: str) -> str | None:
    words = re.split(r"[^a-z]+", name.lower())
    found = {_SPLIT_WORDS[w] for w in words if w in _SPLIT_WORDS}
    return found.pop() if len(found) == 1 else None


def _rel(root: Path, path: str, base: Path) -> str:
    """`path` (absolute, or relative to `base`) relative to the root when it lies inside it, else as given
    (absolute), so validation names the row (`audio_in_root`)."""
    p = Path(path) if os.path.isabs(path) else base / path
    absolute = os.path.normpath(os.path.abspath(p))
    root_abs = os.path.normpath(os.path.abspath(root))
    if absolute == root_abs or absolute.startswith(root_abs + os.sep):
        return os.path.relpath(absolute, root_abs)
    return absolute


def _row(rec: dict, audio: str, source: str, split: str | None) -> dict:
    row = {
        "audio": audio,
        "text": _pick(rec, "text"),
        "lang": _pick(rec, "lang"),
        "speaker": _pick(rec, "speaker"),
    }
    rid = _pick(rec, "id")
    if rid:
        row["id"] = rid
    if split:
        row["split"] = split
    row["source"] = source
    return row


# -------------------------------------------------------------------------------------------------- readers
def read_nemo(root: Path, manifests: list[Path]) -> tuple[list[dict], list[dict]]:
    """NeMo JSONL manifests: audio_filepath relative to the manifest's folder (NeMo's rule) or absolute; the
    split from each file name (train/dev/val/test) when every file names one. A line with an `offset` or a
    duration shorter than its file is a segment: not importable as a row (dropped, named)."""
    splits = [_split_of(p.stem) for p in manifests]
    use_split = all(splits) and len(manifests) > 1
    rows, dropped = [], []
    for p, split in zip(manifests, splits, strict=True):
        for n, line in enumerate(p.read_text(encoding="utf-8").split("\n"), 1):
            if not line.strip():
                continue
            where = f"{p.name}:{n}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ImportDataError(f"{p}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict) or not rec.get("audio_filepath"):
                raise ImportDataError(f"{p}:{n}: no 'audio_filepath' (a NeMo manifest line needs one)")
            if float(rec.get("offset") or 0) > 0:
                dropped.append({"source": where, "reason": "segment: offset > 0 (a part of a longer file)"})
                continue
            rows.append(_row(rec, _rel(root, rec["audio_filepath"], p.parent), where,
                             split if use_split else None))  # fmt: skip
    return rows, dropped


def read_audiofolder(root: Path) -> tuple[list[dict], list[dict]]:
    """HF `audiofolder`: <split>/metadata.csv|jsonl with a `file_name` column relative to that folder; the
    folder name is the split when it is train/validation/dev/test."""
    rows = []
    metas = sorted(list(root.glob("*/metadata.csv")) + list(root.glob("*/metadata.jsonl")))
    splits = [_split_of(m.parent.name) for m in metas]
    use_split = all(splits)
    for m, split in zip(metas, splits, strict=True):
        if m.suffix == ".csv":
            with m.open(encoding="utf-8-sig", newline="") as f:
                records = [(n, rec) for n, rec in enumerate(csv.DictReader(f), 2)]
        else:
            records = []
            for n, line in enumerate(m.read_text(encoding="utf-8").split("\n"), 1):
                if line.strip():
                    try:
                        records.append((n, json.loads(line)))
                    except json.JSONDecodeError as e:
                        raise ImportDataError(f"{m}:{n}: not valid JSON ({e.msg})") from None
        for n, rec in records:
            if not rec.get("file_name"):
                raise ImportDataError(f"{m}:{n}: no 'file_name' (an audiofolder metadata row names its file)")
            where = f"{m.relative_to(root)}:{n}"
            rows.append(
                _row(rec, _rel(root, rec["file_name"], m.parent), where, split if use_split else None)
            )
    return rows, []


def read_hf_disk(root: Path) -> tuple[list[dict], list[dict]]:
    """`datasets.save_to_disk` (a Dataset or DatasetDict): the audio column is read undecoded (its stored
    bytes, or its path) and each clip's bytes are written once to hf_audio/<split>/<index>.<ext>; split =
    the DatasetDict key. Nothing is fetched from the Hub."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(root))
    except (FileNotFoundError, ValueError) as e:
        raise ImportDataError(f"{root}: not a datasets.save_to_disk folder ({e})") from None
    parts = dict(ds) if isinstance(ds, datasets.DatasetDict) else {"": ds}
    rows, dropped = [], []
    for name, part in parts.items():
        split = _split_of(name) if name else None
        column = next((c for c in ("audio", "file", "path") if c in part.column_names), None)
        if column is None:
            raise ImportDataError(f"{root}: split {name or '(single)'} has no audio column "
                                  f"(columns: {', '.join(part.column_names)})")  # fmt: skip
        if isinstance(part.features[column], datasets.Audio):
            part = part.cast_column(column, datasets.Audio(decode=False))
        out_dir = root / HF_AUDIO_DIR / (name or "all")
        out_dir.mkdir(parents=True, exist_ok=True)
        for i, rec in enumerate(part):
            where = f"{name or 'dataset'}[{i}]"
            a = rec[column]
            if isinstance(a, dict) and a.get("bytes"):
                ext = Path(a.get("path") or "").suffix.lower() or ".wav"
                dst = out_dir / f"{i:08d}{ext}"
                if not dst.is_file() or dst.read_bytes() != a["bytes"]:
                    atomic_write_bytes_once(dst, a["bytes"])
                audio = os.path.relpath(dst, root)
            elif isinstance(a, dict) and a.get("path"):
                audio = _rel(root, a["path"], root)
            elif isinstance(a, str):
                audio = _rel(root, a, root)
            else:
                dropped.append(
                    {"source": where, "reason": "no_audio: the audio column holds no bytes and no path"}
                )
                continue
            rec = {k: v for k, v in rec.items() if k != column}
            rows.append(_row(rec, audio, where, split if split and len(parts) > 1 else None))
    return rows, dropped


def atomic_write_bytes_once(dst: Path, data: bytes) -> None:
    from components.common.io import atomic_write_bytes

    atomic_write_bytes(dst, data, durable=False)


def read_lhotse(root: Path) -> tuple[list[dict], list[dict]]:
    """A Lhotse CutSet (cuts*.jsonl[.gz]) or RecordingSet + SupervisionSet: one row per cut whose single
    supervision covers a whole single-file recording; text, language and speaker come from the supervision.
    A cut of part of a recording, with several supervisions, or audio that is not a file is dropped, named."""
    from lhotse import CutSet, load_manifest

    files = _lhotse_files(root)
    if "cuts" in files:
        cuts = load_manifest(files["cuts"])
    else:
        cuts = CutSet.from_manifests(recordings=load_manifest(files["recordings"]),
                                     supervisions=load_manifest(files["supervisions"]))  # fmt: skip
    rows, dropped = [], []
    for cut in cuts:
        where = f"cut {cut.id}"
        rec = getattr(cut, "recording", None)
        sups = list(cut.supervisions)
        if rec is None or len(rec.sources) != 1 or rec.sources[0].type != "file":
            dropped.append({"source": where, "reason": "not_a_file: the cut's audio is not one file"})
            continue
        if len(sups) != 1:
            dropped.append({"source": where, "reason": f"supervisions: {len(sups)} (one transcript per row)"})
            continue
        if cut.start > 0.01 or cut.duration < rec.duration - 0.01:
            dropped.append({"source": where, "reason": "segment: the cut is part of a longer recording"})
            continue
        s = sups[0]
        fields = {"text": s.text or "", "lang": s.language or "", "speaker": s.speaker or "", "id": cut.id}
        rows.append(_row(fields, _rel(root, rec.sources[0].source, root), where, None))
    return rows, dropped


READERS = {"hf_audiofolder": read_audiofolder, "hf_disk": read_hf_disk, "lhotse": read_lhotse}


def import_dataset(
    root: str | os.PathLike, fmt: str = "auto", manifests: list[str] | None = None
) -> ImportResult:
    """Write `root`/metadata.jsonl (+ import.json) from the existing data in `root` (module docstring).
    `fmt`: one of FORMATS or "auto" (detect); `manifests`: the NeMo manifests to import (default: every
    *.json/*.jsonl in the root whose first line has audio_filepath)."""
    r = Path(root)
    if not r.is_dir():
        raise ImportDataError(f"{r}: dataset root is not a directory")
    own = r / IMPORT_RECORD
    for name in METADATA_NAMES:
        if (r / name).exists() and not (own.is_file() and name == "metadata.jsonl"):
            raise ImportDataError(f"{r / name}: a metadata file the import did not write exists; "
                                  "move it away or use it as the dataset's metadata")  # fmt: skip
    if fmt == "auto":
        fmt = detect(r) or ""
        if not fmt:
            raise ImportDataError(f"{r}: no importable data found (looked for: NeMo manifests *.json/*.jsonl with "
                                  "audio_filepath, <split>/metadata.csv with file_name (audiofolder), "
                                  "dataset_dict.json/state.json (datasets), cuts*.jsonl.gz or "
                                  "recordings+supervisions (lhotse))")  # fmt: skip
    if fmt not in FORMATS:
        raise ImportDataError(f"format {fmt!r} is not one of auto, {', '.join(FORMATS)}")
    if fmt == "nemo":
        paths = [Path(m) if os.path.isabs(m) else r / m for m in manifests] if manifests else _nemo_files(r)
        missing = [str(p) for p in paths if not p.is_file()]
        if not paths or missing:
            raise ImportDataError(f"{r}: NeMo manifest(s) not found: {missing or 'none in the root'}")
        rows, dropped = read_nemo(r, paths)
        sources = paths
    else:
        rows, dropped = READERS[fmt](r)
        sources = [
            p for p in sorted(r.iterdir()) if p.is_file() and p.name not in (*METADATA_NAMES, IMPORT_RECORD)
        ]
    if not rows:
        first = "; ".join(f"{d['source']}: {d['reason']}" for d in dropped[:3])
        raise ImportDataError(f"{r}: nothing to import as {fmt}" + (f" ({first})" if first else ""))
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    atomic_write_text(r / "metadata.jsonl", text)
    record = {
        "format": fmt,
        "rows": len(rows),
        "dropped": dropped,
        "sources": {str(p.relative_to(r) if p.is_relative_to(r) else p): sha256_file(p) for p in sources},
    }
    atomic_write_text(own, json.dumps(record, ensure_ascii=False, indent=2))
    return ImportResult(r, fmt, len(rows), sorted(record["sources"]), r / "metadata.jsonl", dropped)
