"""The raw dataset as every data step reads it: the metadata file, its rows, their ids and audio paths.

validate_data and build_manifest use this one reader and one path resolver, so the two agree on what a row,
an id and an inside-the-root path are.

Hostile or careless metadata never raises past a row: a record that is not valid JSON, holds bytes that are
not UTF-8, a NUL byte or a control character (U+2028 LINE SEPARATOR, U+0085 NEXT LINE, ...) keeps its line
number and gets `MetadataRow.error` ("code: detail"); validate_data reports it as the `metadata_row` check
and build_manifest skips it. Only an unreadable file (no metadata, no header, a required column missing
from every row) is a `DatasetError` for the whole dataset.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from components.common.audio import RawFormat

METADATA_NAMES = ("metadata.csv", "metadata.jsonl")
REQUIRED_COLUMNS = ("audio", "text", "lang", "speaker")
# Optional columns declaring the layout of headerless PCM files (rows with an empty raw_format are not raw).
RAW_COLUMNS = ("raw_format", "raw_sample_rate", "raw_channels")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")  # ids become file names: audio/<id>.wav
# Inside a transcript, CSV's quoted line breaks and tabs are layout, not words: folded to one space.
_FOLDED_WHITESPACE = re.compile(r"[\t\r\n]+")


class DatasetError(ValueError):
    """The dataset cannot be read at all (no metadata, unreadable file, missing column)."""


@dataclass(frozen=True)
class MetadataRow:
    line: int  # physical line of the record in the metadata file (what an editor shows)
    audio: str
    text: str
    lang: str
    speaker: str
    id: str  # declared, or derived from the audio path when the column is absent/empty
    split: str | None = None
    raw: RawFormat | None = None  # declared headerless PCM layout (raw_format/raw_sample_rate/raw_channels)
    raw_error: str | None = None  # why the raw declaration of this row is unusable
    error: str | None = None  # why the record itself is unusable ("code: detail"), e.g. a NUL byte
    id_derived: bool = False


@dataclass(frozen=True)
class Metadata:
    path: Path
    rows: list[MetadataRow]
    has_split: bool
    has_id: bool


def find_metadata(data_root: str | os.PathLike) -> Path:
    root = Path(data_root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a directory")
    found = [root / n for n in METADATA_NAMES if (root / n).is_file()]
    if not found:
        from components.import_data.core import detect

        fmt = detect(root)
        hint = f"; it holds {fmt} data: run `python -m components.import_data {root}`" if fmt else ""
        raise DatasetError(
            f"{root}: no metadata.csv or metadata.jsonl (columns: audio,text,lang,speaker){hint}"
        )
    if len(found) > 1:
        raise DatasetError(f"{root}: both metadata.csv and metadata.jsonl exist; keep exactly one")
    return found[0]


def derive_id(audio: str, keep_extension: bool = False) -> str:
    """An id for rows without one: the audio path without extension (with it, when `keep_extension`),
    '/' -> '__', unsafe chars -> '_'."""
    clean = audio.replace("\\", "/")
    stem = clean if keep_extension else os.path.splitext(clean)[0]
    parts = [re.sub(r"[^A-Za-z0-9._-]", "_", p) for p in stem.split("/") if p not in ("", ".", "..")]
    return "__".join(parts).lstrip("._-") or "row"


def _decode(path: Path) -> str:
    """The file's text: UTF-8 (a BOM is dropped) or, with a UTF-16 BOM, UTF-16. Bytes that are not UTF-8
    survive as lone surrogates (surrogateescape), so the row holding them is named instead of the file."""
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise DatasetError(f"{path}: UTF-16 BOM but not UTF-16 text ({e.reason})") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", "surrogateescape")


def _cell_problem(column: str, value: str) -> str | None:
    """A named reason when a cell holds what no column may: non-UTF-8 bytes, NUL, control characters."""
    for ch in value:
        cp = ord(ch)
        if 0xDC80 <= cp <= 0xDCFF:
            return f"metadata_encoding: column {column!r} is not UTF-8 (byte 0x{cp - 0xDC00:02X})"
        if cp == 0:
            return f"nul_byte: column {column!r} holds a NUL byte"
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Zl", "Zp", "Cs"):
            name = unicodedata.name(ch, "control character")
            return f"control_char: column {column!r} holds U+{cp:04X} {name}"
    return None


def _records_csv(path: Path, text: str) -> tuple[set[str], list[tuple[int, dict, str | None]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise DatasetError(f"{path}: empty file (expected a header: audio,text,lang,speaker)")
    reader.fieldnames = [c.strip() for c in reader.fieldnames]
    records: list[tuple[int, dict, str | None]] = []
    start = 2
    for rec in reader:
        error = None
        if None in rec:
            error = (
                f"metadata_fields: {len(reader.fieldnames) + len(rec.pop(None))} fields but the header has "
                f"{len(reader.fieldnames)} (quote text that contains commas)"
            )
        records.append((start, rec, error))
        start = reader.line_num + 1
    return set(reader.fieldnames), records


def _records_jsonl(text: str) -> tuple[set[str], list[tuple[int, dict, str | None]]]:
    """One JSON object per '\\n'-terminated line. Only '\\n' (and '\\r\\n') end a record: U+2028, U+0085 and
    friends inside a JSON string are characters of that string (str.splitlines would cut the record)."""
    columns: set[str] = set()
    records: list[tuple[int, dict, str | None]] = []
    for n, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            records.append((n, {}, f"metadata_json: not valid JSON ({e.msg} at column {e.colno})"))
            continue
        if not isinstance(rec, dict):
            records.append((n, {}, f"metadata_json: expected a JSON object, got {type(rec).__name__}"))
            continue
        columns |= set(rec)
        records.append((n, rec, None))
    return columns, records


def _cell(rec: dict, column: str) -> tuple[str, str | None]:
    value = rec.get(column)
    if value is None:
        return "", None
    if isinstance(value, (dict, list)):
        return "", f"metadata_type: column {column!r} is a JSON {type(value).__name__}, expected a string"
    s = str(value).strip()
    if column == "text":
        s = _FOLDED_WHITESPACE.sub(" ", s)
    problem = _cell_problem(column, s)
    if problem and problem.startswith("metadata_encoding"):  # reports must stay valid UTF-8
        s = "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in s)
    return s, problem


def _row(line: int, rec: dict, error: str | None, has_split: bool, has_id: bool) -> MetadataRow:
    cells: dict[str, str] = {}
    for column in ("audio", "text", "lang", "speaker", "id", "split", *RAW_COLUMNS):
        cells[column], problem = _cell(rec, column)
        error = error or problem
    raw, raw_error = None, None
    if cells["raw_format"]:
        try:
            raw = RawFormat.parse(cells["raw_format"], cells["raw_sample_rate"], cells["raw_channels"])
        except ValueError as e:
            raw_error = f"bad_raw_format: {e}"
    rid = cells["id"] if has_id else ""
    return MetadataRow(
        line=line,
        audio=cells["audio"],
        text=cells["text"],
        lang=cells["lang"],
        speaker=cells["speaker"],
        id=rid or derive_id(cells["audio"]),
        split=cells["split"] if has_split else None,
        raw=raw,
        raw_error=raw_error,
        error=error,
        id_derived=not rid,
    )


def _unique_derived_ids(rows: list[MetadataRow]) -> list[MetadataRow]:
    """Two files of one stem (clip.flac, clip.mp3) are two rows: a derived id that would collide with
    another row's id (declared or derived from another path) keeps the file's extension."""
    from dataclasses import replace

    paths_of: dict[str, set[str]] = {}
    for r in rows:
        paths_of.setdefault(r.id, set()).add(r.audio if r.id_derived else f"\0declared:{r.line}")
    return [
        replace(r, id=derive_id(r.audio, keep_extension=True))
        if r.id_derived and len(paths_of[r.id]) > 1
        else r
        for r in rows
    ]


def read_metadata(data_root: str | os.PathLike) -> Metadata:
    """Read the dataset's metadata file. Raises DatasetError only when the file as a whole is unusable;
    a bad record becomes a row with `error` set (see the module docstring)."""
    path = find_metadata(data_root)
    text = _decode(path)
    columns, records = _records_csv(path, text) if path.suffix == ".csv" else _records_jsonl(text)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DatasetError(
            f"{path}: missing required column(s) {', '.join(missing)} (found: {', '.join(sorted(columns))})"
        )
    if not records:
        raise DatasetError(f"{path}: no rows")
    has_split, has_id = "split" in columns, "id" in columns
    rows = [_row(line, rec, error, has_split, has_id) for line, rec, error in records]
    return Metadata(path=path, rows=_unique_derived_ids(rows), has_split=has_split, has_id=has_id)


def duplicate_ids(rows: list[MetadataRow]) -> dict[str, list[int]]:
    """id -> lines, for every id held by more than one row."""
    count = Counter(r.id for r in rows)
    out: dict[str, list[int]] = {}
    for r in rows:
        if count[r.id] > 1:
            out.setdefault(r.id, []).append(r.line)
    return out


def resolve_audio(data_root: str | os.PathLike, audio: str) -> tuple[Path | None, str | None]:
    """(real path, None) when `audio` stays inside the dataset root, else (None, reason).

    Three ways out of the root are refused: an absolute path elsewhere, a '..' escape, and a symlink (of the
    file or of a folder on the way) whose target lies outside. Reading such files would let a metadata file
    pull arbitrary host files into training data and artifacts. A NUL byte (no file system accepts one) is
    refused by name instead of raising.
    """
    if not audio:
        return None, "audio path is empty"
    if "\0" in audio:
        return None, f"path {audio!r} contains a NUL byte"
    # os.path on strings, roots resolved once per dataset: this runs per row, 100,000s of times on big corpora
    lexical_root, root = _roots(os.fspath(data_root))
    absolute = os.path.isabs(audio)
    lexical = os.path.normpath(audio if absolute else os.path.join(lexical_root, audio))
    if absolute and not (inside(lexical, lexical_root) or inside(lexical, root)):
        return None, f"absolute path {audio!r} is outside the dataset root"
    if not absolute and not inside(lexical, lexical_root):
        return None, f"path {audio!r} escapes the dataset root via '..'"
    try:
        real = os.path.realpath(lexical)
    except (OSError, ValueError) as e:  # a symlink loop, a name too long
        return None, f"path {audio!r} cannot be resolved ({e})"
    if not inside(real, root):
        return None, f"path {audio!r} resolves through a symlink to {real}, outside the dataset root"
    return Path(real), None


@functools.lru_cache(maxsize=64)
def _roots(data_root: str) -> tuple[str, str]:
    """(normalised absolute root, real root). Cached: a root's symlinks do not change during a run."""
    return os.path.normpath(os.path.abspath(data_root)), os.path.realpath(data_root)


def inside(path: str, root: str) -> bool:
    """`path` is `root` or below it (plain string paths, already normalised)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
