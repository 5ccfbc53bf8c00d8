"""Validate a raw dataset (metadata + audio) before anything trains on it.

Every row of `metadata.csv`/`metadata.jsonl` is joined with the properties of its *decoded* audio into one
pandas DataFrame; a great-expectations suite (ephemeral context, nothing written outside `out_dir`) decides
which rows fail which check, and this module explains each failure in words. Outputs in `out_dir`:
`validation.json` (counts + failures; written last, so its presence means the run finished),
`failures.csv` (line, file, check, severity, reason) and the GX Data Docs site `data_docs/index.html`.
Thresholds (duration, characters per second, clipping, loudness, the share of rows allowed to fail) are
parameters of `validate_dataset`; docs/DATA.md lists every check, its default severity and threshold.

The metadata reader and the audio-path resolver live here too; build_manifest uses the same ones, so both
stages agree on what a row, an id and an inside-the-root path are.
"""

from __future__ import annotations

import csv
import difflib
import functools
import html
import io
import json
import os
import re
import shutil
import sys
import tempfile
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Collection
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.common.audio import AudioError, RawFormat, probe_audio, wav_bytes_for_fast_path
from components.common.io import atomic_write_text, sha256_file
from components.common.languages import language_of, script_of
from components.common.manifest import SPLITS

METADATA_NAMES = ("metadata.csv", "metadata.jsonl")
REQUIRED_COLUMNS = ("audio", "text", "lang", "speaker")
# Optional columns declaring the layout of headerless PCM files (rows with an empty raw_format are not raw).
RAW_COLUMNS = ("raw_format", "raw_sample_rate", "raw_channels")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")  # ids become file names: audio/<id>.wav
MIN_SAMPLE_RATE = 16000
SILENCE_PEAK = 1e-4  # -80 dBFS: below this a clip is digital silence, not a quiet recording
# Defaults of the thresholds validate_dataset exposes (docs/DATA.md explains each choice).
MIN_DURATION, MAX_DURATION = 0.3, 30.0  # seconds; Nemotron's training recipe caps utterances near 30 s
# Letters+digits per second of decoded audio. Read speech runs ~10-20; a value far outside the range means the
# transcript belongs to another clip, was cut, or the audio is mostly silence.
MIN_CHARS_PER_SECOND, MAX_CHARS_PER_SECOND = 1.0, 40.0
MAX_CLIPPED = 0.001  # share of samples at full scale above which a clip is flagged as clipped
MIN_RMS_DBFS = -60.0  # clips quieter than this overall are flagged as near-silent
DEFAULT_MODEL_CONFIG = Path(__file__).resolve().parents[1] / "finetune_asr" / "conf" / "tiny_prompt_rnnt.yaml"
_PROGRESS_MIN = 200  # report probing progress on stderr from this many files on
_POOL_MIN = 64  # below this many files a process pool costs more than it saves


class DatasetError(ValueError):
    """The dataset cannot be read at all (no metadata, unreadable file, missing column)."""


class ValidationFailed(RuntimeError):
    """Raised by the pipeline step when hard checks fail; the message is the one-screen summary."""


# ---------------------------------------------------------------------------------------------- metadata


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
        raise DatasetError(f"{root}: no metadata.csv or metadata.jsonl (columns: audio,text,lang,speaker)")
    if len(found) > 1:
        raise DatasetError(f"{root}: both metadata.csv and metadata.jsonl exist; keep exactly one")
    return found[0]


def derive_id(audio: str) -> str:
    """An id for rows without one: the audio path without extension, '/' -> '__', unsafe chars -> '_'."""
    stem = str(Path(audio.replace("\\", "/")).with_suffix(""))
    parts = [re.sub(r"[^A-Za-z0-9._-]", "_", p) for p in stem.split("/") if p not in ("", ".", "..")]
    return "__".join(parts).lstrip("._-") or "row"


def _cell(value: object) -> str:
    return "" if value is None else str(value).strip()


def read_metadata(data_root: str | os.PathLike) -> Metadata:
    """Read the dataset's metadata file; raises DatasetError naming the file/line/column on bad input."""
    path = find_metadata(data_root)
    records: list[tuple[int, dict]] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if path.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames:
            raise DatasetError(f"{path}: empty file (expected a header: audio,text,lang,speaker)")
        reader.fieldnames = [c.strip() for c in reader.fieldnames]
        columns = set(reader.fieldnames)
        start = 2
        for rec in reader:
            if None in rec:
                raise DatasetError(
                    f"{path}:{start}: {len(reader.fieldnames) + len(rec[None])} fields but the header has "
                    f"{len(reader.fieldnames)} (quote text that contains commas)"
                )
            records.append((start, rec))
            start = reader.line_num + 1
    else:
        columns = set()
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise DatasetError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
            columns |= set(rec)
            records.append((n, rec))
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DatasetError(
            f"{path}: missing required column(s) {', '.join(missing)} (found: {', '.join(sorted(columns))})"
        )
    if not records:
        raise DatasetError(f"{path}: no rows")
    has_split, has_id = "split" in columns, "id" in columns
    rows = []
    for line, rec in records:
        audio = _cell(rec.get("audio"))
        rid = _cell(rec.get("id")) if has_id else ""
        raw, raw_error = None, None
        if _cell(rec.get("raw_format")):
            try:
                raw = RawFormat.parse(
                    _cell(rec.get("raw_format")),
                    _cell(rec.get("raw_sample_rate")),
                    _cell(rec.get("raw_channels")),
                )
            except ValueError as e:
                raw_error = f"bad_raw_format: {e}"
        rows.append(
            MetadataRow(
                line=line,
                audio=audio,
                text=_cell(rec.get("text")),
                lang=_cell(rec.get("lang")),
                speaker=_cell(rec.get("speaker")),
                id=rid or derive_id(audio),
                split=_cell(rec.get("split")) if has_split else None,
                raw=raw,
                raw_error=raw_error,
            )
        )
    return Metadata(path=path, rows=rows, has_split=has_split, has_id=has_id)


def resolve_audio(data_root: str | os.PathLike, audio: str) -> tuple[Path | None, str | None]:
    """(real path, None) when `audio` stays inside the dataset root, else (None, reason).

    Three ways out of the root are refused: an absolute path elsewhere, a '..' escape, and a symlink (of the
    file or of a folder on the way) whose target lies outside. Reading such files would let a metadata file
    pull arbitrary host files into training data and artifacts.
    """
    if not audio:
        return None, "audio path is empty"
    # os.path on strings, roots resolved once per dataset: this runs per row, 100,000s of times on big corpora
    lexical_root, root = _roots(os.fspath(data_root))
    absolute = os.path.isabs(audio)
    lexical = os.path.normpath(audio if absolute else os.path.join(lexical_root, audio))
    if absolute and not (_inside(lexical, lexical_root) or _inside(lexical, root)):
        return None, f"absolute path {audio!r} is outside the dataset root"
    if not absolute and not _inside(lexical, lexical_root):
        return None, f"path {audio!r} escapes the dataset root via '..'"
    real = os.path.realpath(lexical)
    if not _inside(real, root):
        return None, f"path {audio!r} resolves through a symlink to {real}, outside the dataset root"
    return Path(real), None


@functools.lru_cache(maxsize=64)
def _roots(data_root: str) -> tuple[str, str]:
    """(normalised absolute root, real root). Cached: a root's symlinks do not change during a run."""
    return os.path.normpath(os.path.abspath(data_root)), os.path.realpath(data_root)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


# ------------------------------------------------------------------------------------------ text script

# Letters must belong to the declared language's script (by Unicode character name); digits, punctuation,
# spaces, combining marks, currency/math/modifier symbols are script-neutral. Emoji, control characters and
# letters of another script fail: they are either noise or a sign that `lang` is wrong for the row.
_SCRIPT_LETTER_PREFIXES = {
    "Latin": ("LATIN",),
    "Greek": ("GREEK",),
    "Cyrillic": ("CYRILLIC",),
    "Arabic": ("ARABIC",),
    "Hebrew": ("HEBREW",),
    "Devanagari": ("DEVANAGARI",),
    "Thai": ("THAI",),
    "Hangul": ("HANGUL",),
    "Han": ("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH"),
    "Japanese": ("HIRAGANA", "KATAKANA", "HALFWIDTH KATAKANA", "CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY"),
}
_NEUTRAL_CATEGORIES = {
    "Nd",
    "Nl",
    "No",
    "Pc",
    "Pd",
    "Ps",
    "Pe",
    "Pi",
    "Pf",
    "Po",
    "Zs",
    "Mn",
    "Mc",
    "Me",
    "Sc",
    "Sm",
    "Sk",
    "Lm",
}
_NEUTRAL_CHARS = set("\u200c\u200d\u00aa\u00ba")  # ZWNJ/ZWJ (Indic, Arabic shaping), ª º


def invalid_characters(text: str, locale: str) -> str | None:
    """Characters of `text` not valid for the script of `locale` ('' if all valid, None if unknown script)."""
    script = script_of(locale)
    prefixes = _SCRIPT_LETTER_PREFIXES.get(script or "")
    if not prefixes:
        return None
    bad: list[str] = []
    for ch in unicodedata.normalize("NFC", text):
        if ch in bad or ch in _NEUTRAL_CHARS:
            continue
        cat = unicodedata.category(ch)
        if cat in _NEUTRAL_CATEGORIES:
            continue
        if cat[0] == "L" and unicodedata.name(ch, "").startswith(prefixes):
            continue
        bad.append(ch)
    return "".join(bad)


def _describe_chars(chars: str, limit: int = 5) -> str:
    shown = [f"{ch!r} U+{ord(ch):04X} {unicodedata.name(ch, '?')}" for ch in chars[:limit]]
    return ", ".join(shown) + (f" and {len(chars) - limit} more" if len(chars) > limit else "")


# ------------------------------------------------------------------------------------ prompt dictionary


def default_prompt_dictionary(config: str | os.PathLike = DEFAULT_MODEL_CONFIG) -> dict[str, int]:
    """model.model_defaults.prompt_dictionary of a NeMo config (the languages the model can be prompted with)."""
    import yaml

    cfg = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
    try:
        return dict(cfg["model"]["model_defaults"]["prompt_dictionary"])
    except (KeyError, TypeError):
        raise DatasetError(f"{config}: no model.model_defaults.prompt_dictionary") from None


# ---------------------------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class Check:
    name: str
    description: str
    severity: str  # "error" (fails validation) or "warning" (reported only)
    optional: bool = False  # only when the metadata has a `split` column


CHECKS: dict[str, Check] = {
    c.name: c
    for c in [
        Check(
            "audio_in_root",
            "audio path stays inside the dataset root (no '..', outside path or symlink)",
            "error",
        ),
        Check("audio_exists", "audio file exists", "error"),
        Check("audio_decodable", "audio decodes completely (not empty, truncated, corrupt or NaN)", "error"),
        Check("duration_in_range", "decoded duration within [min_duration, max_duration]", "error"),
        Check(
            "sample_rate_min",
            f"sample rate >= {MIN_SAMPLE_RATE} Hz (lower rates lack high frequencies)",
            "warning",
        ),
        Check("channels", "mono or stereo (stereo is averaged to mono)", "warning"),
        Check("not_silent", f"audio is not digital silence (peak > {SILENCE_PEAK})", "warning"),
        Check("not_near_silent", "overall level (RMS) is at least min_rms_dbfs", "warning"),
        Check("not_clipped", "at most max_clipped of the samples sit at full scale", "warning"),
        Check("audio_extension", "the file extension agrees with the decoded container", "warning"),
        Check("text_present", "text is not empty", "error"),
        Check(
            "chars_per_second",
            "letters+digits per second of audio within [min_chars_per_second, max_chars_per_second] "
            "(a transcript of another clip, or a cut one, falls outside)",
            "warning",
        ),
        Check(
            "text_script", "text uses only the declared language's script, digits and punctuation", "error"
        ),
        Check("lang_known", "lang is a key of the model's prompt dictionary", "error"),
        Check("speaker_present", "speaker is not empty", "error"),
        Check("id_unique", "ids are unique", "error"),
        Check("id_format", f"id is a safe file name ({ID_RE.pattern})", "error"),
        Check(
            "audio_unique", "no two rows use the same audio (file or identical content, by sha256)", "warning"
        ),
        Check("split_valid", f"split is one of {', '.join(SPLITS)}", "error", optional=True),
        Check("speaker_split_disjoint", "each speaker is in one declared split only", "error", optional=True),
        Check(
            "split_leak", "the same audio content is not in two declared splits (test leakage)", "error", True
        ),
    ]
}


@dataclass(frozen=True)
class Failure:
    line: int
    file: str
    check: str
    severity: str
    reason: str


@dataclass
class ValidationResult:
    passed: bool
    n_rows: int
    n_failed_rows: int  # rows failing at least one hard check
    n_warning_rows: int  # rows failing only warning-level checks
    check_counts: dict[str, int]  # failing rows per check (every check that ran)
    hard_checks: list[str]
    failures: list[Failure]
    summary: str
    metadata_path: Path
    report_path: Path
    failures_path: Path
    data_docs_path: Path | None  # data_docs/index.html
    data_docs_page: Path | None  # the validation-result page inside the site
    rows_per_lang: dict[str, int] = field(default_factory=dict)
    hours_decodable: float = 0.0
    status: str = (
        ""  # "passed" (nothing flagged), "warned" (warnings, or hard failures within tolerance), "failed"
    )
    thresholds: Thresholds = field(default_factory=lambda: Thresholds())


def _probe_one(job: str | tuple[str, RawFormat | None]) -> tuple[dict | None, str | None]:
    """Picklable wrapper for the pool: (info dict + sha256, None) or (None, 'reason: detail')."""
    path, raw = (job, None) if isinstance(job, str) else job
    try:
        # a WAV is read once: decoded and hashed from the same bytes
        blob = wav_bytes_for_fast_path(path, raw, os.path.getsize(path))
    except OSError:
        blob = None  # probe_audio names the reason
    try:
        info = probe_audio(path, raw, blob).to_dict()
    except AudioError as e:
        return None, f"{e.reason}: {e.detail}"
    # other files are in the page cache right after decoding: hashing them is cheap
    info["sha256"] = sha256_file(path, data=blob)
    return info, None


def probe_files(
    paths: list[str | tuple[str, RawFormat | None]], workers: int = 2, label: str = "probe"
) -> list[tuple[dict | None, str | None]]:
    """Probe many files (paths, or (path, raw layout) pairs) in a small process pool, progress on stderr."""
    n = len(paths)
    step = max(1, n // 10)
    show = n >= _PROGRESS_MIN
    results: list[tuple[dict | None, str | None]] = []
    if workers > 1 and n >= _POOL_MIN:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for i, r in enumerate(pool.map(_probe_one, paths, chunksize=16), 1):
                results.append(r)
                if show and (i % step == 0 or i == n):
                    print(f"{label}: {i}/{n} files", file=sys.stderr, flush=True)
    else:
        for i, p in enumerate(paths, 1):
            results.append(_probe_one(p))
            if show and (i % step == 0 or i == n):
                print(f"{label}: {i}/{n} files", file=sys.stderr, flush=True)
    return results


def chars_per_second(text: str, duration: float) -> float:
    """Letters and digits (any script) per second; spaces and punctuation are not spoken characters."""
    if not duration or duration != duration:  # 0 or NaN
        return float("nan")
    n = sum(1 for ch in unicodedata.normalize("NFC", text) if unicodedata.category(ch)[0] in "LN")
    return n / duration


def probe_dataset(
    data_root: str | os.PathLike, meta: Metadata, workers: int = 2
) -> list[tuple[Path | None, str | None, dict | None, str | None]]:
    """Per row: (resolved path, path error, probed info, decode error). Each distinct file is decoded once."""
    resolved = [resolve_audio(data_root, r.audio) for r in meta.rows]
    jobs: dict[tuple[str, RawFormat | None], None] = {}
    for r, (p, _) in zip(meta.rows, resolved, strict=True):
        if p is not None and r.raw_error is None and p.is_file():
            jobs.setdefault((str(p), r.raw))
    results = dict(zip(jobs, probe_files(list(jobs), workers=workers, label="validate_data"), strict=True))
    out = []
    for r, (p, path_error) in zip(meta.rows, resolved, strict=True):
        if p is None:
            out.append((None, path_error, None, None))
        elif r.raw_error is not None and p.is_file():
            out.append((p, None, None, r.raw_error))
        elif (str(p), r.raw) in results:
            info, err = results[(str(p), r.raw)]
            out.append((p, None, info, err))
        else:
            out.append((p, None, None, None))  # missing file: audio_exists reports it
    return out


def dataset_frame(meta: Metadata, probed: list[tuple[Path | None, str | None, dict | None, str | None]]):
    """Metadata joined with path checks, decoded audio properties and text checks (one row per record).

    `probed` is what probe_dataset returns (or, for tests and benchmarks, pre-probed rows of the same shape).
    """
    import pandas as pd

    info = [i for _, _, i, _ in probed]

    def num(key: str) -> list[float]:
        return [float(i[key]) if i else float("nan") for i in info]

    splits_of: dict[str, set[str]] = defaultdict(set)
    splits_of_audio: dict[str, set[str]] = defaultdict(set)
    for r, i in zip(meta.rows, info, strict=True):
        if r.split in SPLITS:
            splits_of[r.speaker].add(r.split)
            if i and i.get("sha256"):
                splits_of_audio[i["sha256"]].add(r.split)
    durations = num("duration")
    df = pd.DataFrame(
        {
            "line": [r.line for r in meta.rows],
            "id": [r.id for r in meta.rows],
            "audio": [r.audio for r in meta.rows],
            "text": [r.text for r in meta.rows],
            "lang": [r.lang for r in meta.rows],
            "speaker": [r.speaker for r in meta.rows],
            "path_error": [e for _, e, _, _ in probed],
            "audio_file": [str(p) if p else None for p, _, _, _ in probed],
            "audio_exists": [
                None if p is None else (i is not None or err is not None) for p, _, i, err in probed
            ],
            "decode_error": [err for _, _, _, err in probed],
            "duration": durations,
            "sample_rate": num("sample_rate"),
            "channels": num("channels"),
            "peak": num("peak"),
            "rms_dbfs": [max(float(i["rms_dbfs"]), -999.0) if i else float("nan") for i in info],
            "clipped": num("clipped"),
            "extension_ok": [bool(i.get("extension_ok", True)) if i else None for i in info],
            "format": [f"{i['format']}/{i['subtype']}" if i else None for i in info],
            "audio_sha256": [i.get("sha256") if i else None for i in info],
            "chars_per_second": [
                chars_per_second(r.text, d) if r.text else float("nan")
                for r, d in zip(meta.rows, durations, strict=True)
            ],
            "invalid_chars": [invalid_characters(r.text, r.lang) or None for r in meta.rows],
        }
    )
    if meta.has_split:
        df["split"] = [r.split for r in meta.rows]
        df["speaker_split_conflict"] = [
            ", ".join(sorted(splits_of[r.speaker])) if r.speaker and len(splits_of[r.speaker]) > 1 else None
            for r in meta.rows
        ]
        df["split_leak"] = [
            ", ".join(sorted(splits_of_audio[i["sha256"]]))
            if i and i.get("sha256") and len(splits_of_audio[i["sha256"]]) > 1
            else None
            for i in info
        ]
    return df


@dataclass(frozen=True)
class Thresholds:
    """The numbers behind the checks (defaults: module constants; docs/DATA.md)."""

    min_duration: float = MIN_DURATION
    max_duration: float = MAX_DURATION
    min_chars_per_second: float = MIN_CHARS_PER_SECOND
    max_chars_per_second: float = MAX_CHARS_PER_SECOND
    max_clipped: float = MAX_CLIPPED
    min_rms_dbfs: float = MIN_RMS_DBFS
    max_failed_fraction: float = 0.0  # share of rows that may fail hard checks and still only warn

    def check(self) -> None:
        if not 0 <= self.min_duration < self.max_duration:
            raise ValueError(
                f"need 0 <= min_duration < max_duration, got {self.min_duration}, {self.max_duration}"
            )
        if not 0 <= self.min_chars_per_second < self.max_chars_per_second:
            raise ValueError(
                "need 0 <= min_chars_per_second < max_chars_per_second, got "
                f"{self.min_chars_per_second}, {self.max_chars_per_second}"
            )
        if not 0 <= self.max_clipped <= 1:
            raise ValueError(f"max_clipped is a share of samples in [0, 1], got {self.max_clipped}")
        if not 0 <= self.max_failed_fraction <= 1:
            raise ValueError(
                f"max_failed_fraction is a share of rows in [0, 1], got {self.max_failed_fraction}"
            )


def _expectations(t: Thresholds, prompt_keys: list[str], has_split: bool) -> dict:
    """check name -> GX expectation over the joined frame (GX decides; _reason explains)."""
    import great_expectations.expectations as gxe

    e = {
        "audio_in_root": gxe.ExpectColumnValuesToBeNull(column="path_error"),
        "audio_exists": gxe.ExpectColumnValuesToBeInSet(column="audio_exists", value_set=[True]),
        "audio_decodable": gxe.ExpectColumnValuesToBeNull(column="decode_error"),
        "duration_in_range": gxe.ExpectColumnValuesToBeBetween(
            column="duration", min_value=t.min_duration, max_value=t.max_duration
        ),
        "sample_rate_min": gxe.ExpectColumnValuesToBeBetween(column="sample_rate", min_value=MIN_SAMPLE_RATE),
        "channels": gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[1, 2]),
        "not_silent": gxe.ExpectColumnValuesToBeBetween(column="peak", min_value=SILENCE_PEAK),
        "not_near_silent": gxe.ExpectColumnValuesToBeBetween(column="rms_dbfs", min_value=t.min_rms_dbfs),
        "not_clipped": gxe.ExpectColumnValuesToBeBetween(column="clipped", max_value=t.max_clipped),
        "audio_extension": gxe.ExpectColumnValuesToBeInSet(column="extension_ok", value_set=[True]),
        "text_present": gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
        "chars_per_second": gxe.ExpectColumnValuesToBeBetween(
            column="chars_per_second", min_value=t.min_chars_per_second, max_value=t.max_chars_per_second
        ),
        "text_script": gxe.ExpectColumnValuesToBeNull(column="invalid_chars"),
        "lang_known": gxe.ExpectColumnValuesToBeInSet(column="lang", value_set=prompt_keys),
        "speaker_present": gxe.ExpectColumnValueLengthsToBeBetween(column="speaker", min_value=1),
        "id_unique": gxe.ExpectColumnValuesToBeUnique(column="id"),
        "id_format": gxe.ExpectColumnValuesToMatchRegex(column="id", regex=ID_RE.pattern),
        "audio_unique": gxe.ExpectColumnValuesToBeUnique(column="audio_sha256"),
    }
    if has_split:
        e["split_valid"] = gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS))
        e["speaker_split_disjoint"] = gxe.ExpectColumnValuesToBeNull(column="speaker_split_conflict")
        e["split_leak"] = gxe.ExpectColumnValuesToBeNull(column="split_leak")
    return e


def _reasons(df, t: Thresholds, prompt_keys: list[str]) -> dict[str, Callable]:
    """check name -> row -> human reason. Only called for rows GX marked as failing that check."""
    lines_of_id: dict[str, list[int]] = defaultdict(list)
    lines_of_file: dict[str, list[int]] = defaultdict(list)
    for line, rid, f in zip(df["line"], df["id"], df["audio_sha256"], strict=True):
        lines_of_id[rid].append(int(line))
        if f:
            lines_of_file[f].append(int(line))

    def others(lines: list[int], me: int) -> str:
        return ", ".join(str(x) for x in lines if x != me)

    def lang_reason(r) -> str:
        if not r["lang"]:
            return "lang is empty"
        same = [k for k in prompt_keys if language_of(k) == language_of(r["lang"])]
        hint = same or difflib.get_close_matches(r["lang"], prompt_keys, n=1)
        return f"lang {r['lang']!r} is not in the model's prompt dictionary" + (
            f" (known for this language: {', '.join(hint)})"
            if same
            else f" (did you mean {hint[0]!r}?)"
            if hint
            else ""
        )

    return {
        "audio_in_root": lambda r: r["path_error"],
        "audio_exists": lambda r: f"file not found: {r['audio_file']}",
        "audio_decodable": lambda r: r["decode_error"],
        "duration_in_range": lambda r: (
            f"duration {r['duration']:.3f} s outside [{t.min_duration}, {t.max_duration}] s"
        ),
        "sample_rate_min": lambda r: f"sample rate {int(r['sample_rate'])} Hz < {MIN_SAMPLE_RATE} Hz",
        "channels": lambda r: f"{int(r['channels'])} channels (expected mono or stereo)",
        "not_silent": lambda r: f"digital silence (peak {r['peak']:.2g})",
        "not_near_silent": lambda r: f"level {r['rms_dbfs']:.1f} dBFS RMS < {t.min_rms_dbfs} dBFS",
        "not_clipped": lambda r: (
            f"{100 * r['clipped']:.2f}% of samples at full scale (> {100 * t.max_clipped:g}%)"
        ),
        "audio_extension": lambda r: (
            f"extension {Path(r['audio']).suffix or '(none)'!r} but the content is {r['format']} "
            "(decoded by content)"
        ),
        "text_present": lambda r: "text is empty",
        "chars_per_second": lambda r: (
            f"{r['chars_per_second']:.1f} letters/s ({len(r['text'])} chars over {r['duration']:.2f} s) outside "
            f"[{t.min_chars_per_second}, {t.max_chars_per_second}]: transcript of another clip, or cut?"
        ),
        "text_script": lambda r: (
            f"characters not valid for {r['lang']} ({script_of(r['lang'])} script): "
            + _describe_chars(r["invalid_chars"])
        ),
        "lang_known": lang_reason,
        "speaker_present": lambda r: "speaker is empty",
        "id_unique": lambda r: (
            f"id {r['id']!r} also on line(s) {others(lines_of_id[r['id']], int(r['line']))}"
        ),
        "id_format": lambda r: f"id {r['id']!r} is not a safe file name (allowed: letters, digits, . _ -)",
        "audio_unique": lambda r: (
            f"same audio content as line(s) {others(lines_of_file[r['audio_sha256']], int(r['line']))}"
        ),
        "split_valid": lambda r: f"split {r['split']!r} is not one of {', '.join(SPLITS)}",
        "speaker_split_disjoint": lambda r: (
            f"speaker {r['speaker']!r} appears in splits {r['speaker_split_conflict']}"
        ),
        "split_leak": lambda r: (
            f"the same audio is in splits {r['split_leak']} (lines "
            f"{', '.join(str(x) for x in lines_of_file[r['audio_sha256']])})"
        ),
    }


def _run_gx(
    df, expectations: dict, hard: set[str], docs_dir: Path
) -> tuple[dict[str, list[int]], Path | None]:
    """Run the suite in an ephemeral GX context; returns failing lines per check and the result page."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        ctx.add_data_docs_site(
            site_name="validation",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    batch = (
        ctx.data_sources.add_pandas("dataset")
        .add_dataframe_asset(name="metadata_with_audio")
        .add_batch_definition_whole_dataframe("all_rows")
    )
    suite = ctx.suites.add(gx.ExpectationSuite(name="raw_asr_dataset"))
    for name, exp in expectations.items():
        exp.meta = {"check": name}
        exp.description = CHECKS[name].description
        exp.severity = "critical" if name in hard else "warning"
        suite.add_expectation(exp)
    vd = ctx.validation_definitions.add(
        gx.ValidationDefinition(name="raw_asr_dataset", data=batch, suite=suite)
    )
    actions = (
        [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["validation"])] if docs_dir else []
    )
    cp = ctx.checkpoints.add(
        gx.Checkpoint(
            name="validate_data",
            validation_definitions=[vd],
            actions=actions,
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["line"]},
        )
    )
    run = cp.run(batch_parameters={"dataframe": df})
    failing: dict[str, list[int]] = {}
    for vr in run.run_results.values():
        for er in vr.results:
            name = er.expectation_config.meta["check"]
            if er.exception_info and er.exception_info.get("raised_exception"):
                raise RuntimeError(f"great-expectations could not evaluate check {name}: {er.exception_info}")
            failing[name] = sorted({int(u["line"]) for u in er.result.get("unexpected_index_list") or []})
    page = None
    if docs_dir is not None:
        pages = sorted((docs_dir / "validations").rglob("*.html"))
        page = pages[-1] if pages else None
    return failing, page


def _summary(res: ValidationResult, first: int = 8) -> str:
    status = (res.status or ("passed" if res.passed else "failed")).upper()
    tolerance = res.thresholds.max_failed_fraction
    lines = [
        f"Data validation {status}: {res.n_failed_rows} of {res.n_rows} rows fail a hard check"
        + (f" (tolerated: {100 * tolerance:g}%)" if tolerance else "")
        + f", {res.n_warning_rows} more have warnings ({res.metadata_path})",
        f"  {res.n_rows} rows, {res.hours_decodable:.3f} h decodable audio; rows per lang: "
        + (", ".join(f"{k or '<empty>'} {v}" for k, v in sorted(res.rows_per_lang.items())) or "-"),
        f"  {'check':24s} {'severity':8s} {'failed':>7s}",
    ]
    for name, n in res.check_counts.items():
        sev = "error" if name in res.hard_checks else "warning"
        lines.append(f"  {name:24s} {sev:8s} {n:7d}" + ("  <-" if n and sev == "error" else ""))
    shown = sorted(res.failures, key=lambda f: (f.severity != "error", f.line))[:first]
    if shown:
        lines.append(f"First failing rows (of {len(res.failures)} failures):")
        for f in shown:
            lines.append(f"  line {f.line} {f.file}: [{f.check}] {f.reason}")
    lines.append(f"All failures: {res.failures_path}")
    if res.data_docs_path:
        lines.append(f"Data Docs: {res.data_docs_path}")
    return "\n".join(lines)


def _hard_set(hard_checks: Collection[str] | None) -> set[str]:
    hard = (
        {n for n, c in CHECKS.items() if c.severity == "error"} if hard_checks is None else set(hard_checks)
    )
    unknown = hard - set(CHECKS)
    if unknown:
        raise ValueError(
            f"unknown check(s) in hard_checks: {', '.join(sorted(unknown))}; known: {', '.join(CHECKS)}"
        )
    return hard


def validate_dataset(
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    prompt_dictionary: dict | None = None,
    min_duration: float = MIN_DURATION,
    max_duration: float = MAX_DURATION,
    hard_checks: Collection[str] | None = None,
    data_docs: bool = True,
    workers: int = 2,
    min_chars_per_second: float = MIN_CHARS_PER_SECOND,
    max_chars_per_second: float = MAX_CHARS_PER_SECOND,
    max_clipped: float = MAX_CLIPPED,
    min_rms_dbfs: float = MIN_RMS_DBFS,
    max_failed_fraction: float = 0.0,
) -> ValidationResult:
    """Validate `data_root` and write validation.json, failures.csv and data_docs/ into `out_dir`.

    `hard_checks` names the checks whose failure is an error (default: those of severity "error" in CHECKS);
    the others are reported as warnings. Status: "failed" when more than `max_failed_fraction` of the rows
    fail a hard check (default 0: any), "warned" when some rows are flagged but within that tolerance,
    "passed" otherwise; `passed` is status != "failed". Undecodable audio never raises: it is a failing row.
    Raises DatasetError only when the metadata itself cannot be read, ValueError for bad thresholds.
    """
    t = Thresholds(
        min_duration,
        max_duration,
        min_chars_per_second,
        max_chars_per_second,
        max_clipped,
        min_rms_dbfs,
        max_failed_fraction,
    )
    t.check()
    hard = _hard_set(hard_checks)
    meta = read_metadata(data_root)
    df = dataset_frame(meta, probe_dataset(data_root, meta, workers))
    return validate_frame(
        df, out_dir, meta.path, meta.has_split, prompt_dictionary, t, hard, data_docs, data_root=data_root
    )


def validate_frame(
    df,
    out_dir: str | os.PathLike,
    metadata_path: Path,
    has_split: bool,
    prompt_dictionary: dict | None = None,
    thresholds: Thresholds | None = None,
    hard_checks: Collection[str] | None = None,
    data_docs: bool = True,
    data_root: str | os.PathLike = "",
) -> ValidationResult:
    """Run the GX suite over a frame from dataset_frame and write the reports (validate_dataset's 2nd half).

    Separate so that a frame of pre-probed rows (a cache, a benchmark) is validated by the same code.
    """
    t = thresholds or Thresholds()
    t.check()
    hard = _hard_set(hard_checks)
    out = Path(out_dir)
    prompt_keys = sorted(prompt_dictionary if prompt_dictionary is not None else default_prompt_dictionary())

    out.mkdir(parents=True, exist_ok=True)
    tmp_docs = Path(tempfile.mkdtemp(dir=out, prefix=".data_docs.")) if data_docs else None
    try:
        expectations = _expectations(t, prompt_keys, has_split)
        failing, page = _run_gx(df, expectations, hard, tmp_docs)
        docs_index = None
        if tmp_docs is not None:
            final = out / "data_docs"
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp_docs, final)
            docs_index = final / "index.html"
            page = final / page.relative_to(tmp_docs) if page else None
    finally:
        if tmp_docs is not None and tmp_docs.exists():
            shutil.rmtree(tmp_docs, ignore_errors=True)

    reasons = _reasons(df, t, prompt_keys)
    by_line = {int(line): i for i, line in enumerate(df["line"])}
    failures: list[Failure] = []
    for name, lines in failing.items():
        sev = "error" if name in hard else "warning"
        for line in lines:
            r = df.iloc[by_line[line]]
            failures.append(Failure(line, r["audio"], name, sev, str(reasons[name](r))))
    failures.sort(key=lambda f: (f.line, f.check))
    hard_lines = {f.line for f in failures if f.severity == "error"}
    warn_lines = {f.line for f in failures if f.severity == "warning"} - hard_lines
    durations = df["duration"].dropna()
    n_rows = len(df)
    if len(hard_lines) > t.max_failed_fraction * n_rows:
        status = "failed"
    elif hard_lines or warn_lines:
        status = "warned"
    else:
        status = "passed"

    res = ValidationResult(
        passed=status != "failed",
        n_rows=n_rows,
        n_failed_rows=len(hard_lines),
        n_warning_rows=len(warn_lines),
        check_counts={name: len(lines) for name, lines in failing.items()},
        hard_checks=sorted(n for n in hard if n in failing),
        failures=failures,
        summary="",
        metadata_path=Path(metadata_path),
        report_path=out / "validation.json",
        failures_path=out / "failures.csv",
        data_docs_path=docs_index,
        data_docs_page=page,
        rows_per_lang=dict(Counter(df["lang"])),
        hours_decodable=float(durations.sum()) / 3600.0,
        status=status,
        thresholds=t,
    )
    res.summary = _summary(res)

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["line", "file", "check", "severity", "reason"])
    w.writerows([f.line, f.file, f.check, f.severity, f.reason] for f in failures)
    atomic_write_text(res.failures_path, buf.getvalue())
    atomic_write_text(
        res.report_path, json.dumps(report_dict(res, Path(data_root)), ensure_ascii=False, indent=2)
    )
    return res


def report_dict(res: ValidationResult, data_root: Path) -> dict:
    """validation.json: machine-readable result (the full failure list is in failures.csv)."""
    limit = 10000
    return {
        "passed": res.passed,
        "status": res.status,
        "data_root": str(data_root),
        "metadata": str(res.metadata_path),
        "params": asdict(res.thresholds),
        "n_rows": res.n_rows,
        "n_failed_rows": res.n_failed_rows,
        "n_warning_rows": res.n_warning_rows,
        "rows_per_lang": res.rows_per_lang,
        "hours_decodable": round(res.hours_decodable, 6),
        "checks": {
            name: {
                "severity": "error" if name in res.hard_checks else "warning",
                "failed_rows": n,
                "description": CHECKS[name].description,
            }
            for name, n in res.check_counts.items()
        },
        "failures": [asdict(f) for f in res.failures[:limit]],
        "failures_truncated": len(res.failures) > limit,
        "failures_csv": str(res.failures_path),
        "data_docs": str(res.data_docs_path) if res.data_docs_path else None,
        "summary": res.summary,
    }


def report_metrics(res: ValidationResult) -> dict[str, float]:
    """Numbers for a kfp Metrics artifact (the Kubeflow UI shows them as a table)."""
    m = {
        "passed": float(res.passed),
        "warned": float(res.status == "warned"),
        "rows": float(res.n_rows),
        "failed_rows": float(res.n_failed_rows),
        "warning_rows": float(res.n_warning_rows),
        "hours_decodable": round(res.hours_decodable, 4),
    }
    m.update({f"failed_{name}": float(n) for name, n in res.check_counts.items()})
    return m


def write_single_page(res: ValidationResult, dest: str | os.PathLike, max_rows: int = 500) -> Path:
    """One self-contained HTML file for a kfp HTML artifact.

    A kfp HTML artifact is one file (the UI renders the object at the artifact URI), while GX Data Docs is a
    folder of linked pages plus 4 MB of static fonts. So the artifact holds the one-screen summary, the
    failure table and the GX validation-result page inlined in an <iframe srcdoc> (its styles come from
    CDNs, as in the site itself); the full site stays in validate_dataset's out_dir.
    """
    fails = "".join(
        f"<tr class='{html.escape(f.severity)}'><td>{f.line}</td><td>{html.escape(f.file)}</td>"
        f"<td>{html.escape(f.check)}</td><td>{html.escape(f.severity)}</td><td>{html.escape(f.reason)}</td></tr>"
        for f in res.failures[:max_rows]
    )
    more = (
        f"<p>{len(res.failures) - max_rows} more in failures.csv</p>" if len(res.failures) > max_rows else ""
    )
    gx_page = res.data_docs_page.read_text(encoding="utf-8") if res.data_docs_page else ""
    frame = (
        f'<h2>great-expectations validation result</h2><iframe srcdoc="{html.escape(gx_page, quote=True)}" '
        "style='width:100%;height:1600px;border:1px solid #ccc'></iframe>"
        if gx_page
        else ""
    )
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Data validation {"passed" if res.passed else "FAILED"}</title>
<style>body{{font-family:sans-serif;margin:1em}} pre{{background:#f6f6f6;padding:1em}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}
tr.error td{{background:#fde8e8}} tr.warning td{{background:#fff7e0}}</style></head><body>
<h1>Data validation {"passed" if res.passed else "FAILED"}</h1>
<pre>{html.escape(res.summary)}</pre>
<h2>Failures</h2><table><tr><th>line</th><th>file</th><th>check</th><th>severity</th><th>reason</th></tr>
{fails}</table>{more}
{frame}
</body></html>
"""
    atomic_write_text(dest, page)
    return Path(dest)


def run_step(
    data_root: str | os.PathLike,
    docs_html: str | os.PathLike,
    report_json: str | os.PathLike,
    fail_on_error: bool = True,
    **thresholds,
) -> tuple[ValidationResult, dict[str, float]]:
    """The pipeline step: validate `data_root`, write the one-page Data Docs to `docs_html` and
    validation.json to `report_json`, print the one-screen summary; returns (result, metrics to log).

    The full GX site is folded into the one-file HTML (a kfp HTML artifact is a single file). Raises
    ValidationFailed after writing both outputs when hard checks fail and `fail_on_error` is set.
    """
    with tempfile.TemporaryDirectory() as out:
        res = validate_dataset(data_root, out, **thresholds)
        write_single_page(res, docs_html)
        shutil.copyfile(res.report_path, report_json)
    print(res.summary)
    if not res.passed and fail_on_error:
        raise ValidationFailed(res.summary)
    return res, report_metrics(res)
