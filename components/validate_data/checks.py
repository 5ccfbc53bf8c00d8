"""The data checks: one `Check` record per check (column, GX expectation, reason text, severity, description).

great-expectations decides which rows fail a check (the record's `expectation` over the joined frame's
`column`); the record's `reason` explains a failing row in words. docs/DATA.md's check table is generated
from these records (`checks_table()`) and a test keeps the two equal.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from components.common.audio import CLIP_LEVEL
from components.common.dataset import ID_RE
from components.common.languages import language_of, script_of
from components.common.manifest import SPLITS

MIN_SAMPLE_RATE = 16000
SILENCE_PEAK = 1e-4  # -80 dBFS: below this a clip is digital silence, not a quiet recording
# Defaults of the thresholds validate_dataset exposes (docs/DATA.md explains each choice).
MIN_DURATION, MAX_DURATION = 0.3, 30.0  # seconds; Nemotron's training recipe caps utterances near 30 s
# Letters+digits per second of decoded audio. Read speech runs ~10-20; a value far outside the range means the
# transcript belongs to another clip, was cut, or the audio is mostly silence.
MIN_CHARS_PER_SECOND, MAX_CHARS_PER_SECOND = 1.0, 40.0
MAX_CLIPPED = 0.001  # share of samples at full scale above which a clip is flagged as clipped
MIN_RMS_DBFS = -60.0  # clips quieter than this overall are flagged as near-silent
DUPLICATE_AUDIO_MODES = ("reject", "keep_first")


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


@dataclass
class Context:
    """What expectations and reasons need besides the row: thresholds, prompt keys, lines per id."""

    t: Thresholds
    prompt_keys: list[str]
    lines_of_id: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def of(cls, df, t: Thresholds, prompt_keys: list[str]) -> Context:
        lines_of_id: dict[str, list[int]] = defaultdict(list)
        for line, rid in zip(df["line"], df["id"], strict=True):
            lines_of_id[rid].append(int(line))
        return cls(t, prompt_keys, dict(lines_of_id))


@dataclass(frozen=True)
class Check:
    name: str
    column: str  # the column of the joined frame (validate_data.core.dataset_frame) the expectation reads
    severity: str  # default: "error" (the row is dropped; it counts against max_failed_fraction) or "warning"
    description: str
    threshold: str  # what decides, in words, for the docs table ("" when the description says it all)
    expectation: Callable  # (gx expectations module, Context) -> the GX expectation over `column`
    reason: Callable  # (failing row, Context) -> why, in words
    optional: bool = False  # only when the metadata has a `split` column


def _describe_chars(chars: str, limit: int = 5) -> str:
    shown = [f"{ch!r} U+{ord(ch):04X} {unicodedata.name(ch, '?')}" for ch in chars[:limit]]
    return ", ".join(shown) + (f" and {len(chars) - limit} more" if len(chars) > limit else "")


def _lang_reason(r, c: Context) -> str:
    if not r["lang"]:
        return "lang is empty"
    same = [k for k in c.prompt_keys if language_of(k) == language_of(r["lang"])]
    hint = same or difflib.get_close_matches(r["lang"], c.prompt_keys, n=1)
    known = f" (known for this language: {', '.join(hint)})" if same else ""
    guess = f" (did you mean {hint[0]!r}?)" if hint and not same else ""
    return f"lang {r['lang']!r} is not in the model's prompt dictionary{known or guess}"


def _others(lines: list[int], me: int) -> str:
    return ", ".join(str(x) for x in lines if x != me)


def _null(column: str) -> Callable:
    return lambda gxe, c: gxe.ExpectColumnValuesToBeNull(column=column)


def _between(column: str, lo: Callable | None = None, hi: Callable | None = None) -> Callable:
    def make(gxe, c: Context):
        return gxe.ExpectColumnValuesToBeBetween(
            column=column, min_value=lo(c) if lo else None, max_value=hi(c) if hi else None
        )

    return make


# fmt: off
CHECKS: tuple[Check, ...] = (
    Check(
        "metadata_row", "row_error", "error",
        "the record is readable: valid JSON object, UTF-8, no NUL byte or control character (U+2028, U+0085...)",
        "", _null("row_error"), lambda r, c: r["row_error"],
    ),
    Check(
        "audio_in_root", "path_error", "error",
        "audio path stays inside the dataset root (no '..', outside path, symlink out, or NUL byte)",
        "", _null("path_error"), lambda r, c: r["path_error"],
    ),
    Check(
        "audio_exists", "audio_exists", "error", "audio file exists", "",
        lambda gxe, c: gxe.ExpectColumnValuesToBeInSet(column="audio_exists", value_set=[True]),
        lambda r, c: f"file not found: {r['audio_file']}",
    ),
    Check(
        "audio_decodable", "decode_error", "error",
        "audio decodes completely (not empty, truncated, corrupt, NaN, over the decode cap, or killing its worker)",
        "reasons above", _null("decode_error"), lambda r, c: r["decode_error"],
    ),
    Check(
        "duration_in_range", "duration", "error", "decoded duration within [min_duration, max_duration]",
        f"`min_duration` {MIN_DURATION:g} s, `max_duration` {MAX_DURATION:g} s",
        _between("duration", lambda c: c.t.min_duration, lambda c: c.t.max_duration),
        lambda r, c: f"duration {r['duration']:.3f} s outside [{c.t.min_duration}, {c.t.max_duration}] s",
    ),
    Check(
        "sample_rate_min", "sample_rate", "warning",
        f"sample rate >= {MIN_SAMPLE_RATE} Hz (lower rates lack high frequencies)", f"{MIN_SAMPLE_RATE} Hz",
        _between("sample_rate", lambda c: MIN_SAMPLE_RATE),
        lambda r, c: f"sample rate {int(r['sample_rate'])} Hz < {MIN_SAMPLE_RATE} Hz",
    ),
    Check(
        "channels", "channels", "warning", "mono or stereo (stereo is averaged to mono)", "1 or 2",
        lambda gxe, c: gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[1, 2]),
        lambda r, c: f"{int(r['channels'])} channels (expected mono or stereo)",
    ),
    Check(
        "not_silent", "peak", "warning", f"audio is not digital silence (peak > {SILENCE_PEAK})",
        f"peak > {SILENCE_PEAK:g}", _between("peak", lambda c: SILENCE_PEAK),
        lambda r, c: f"digital silence (peak {r['peak']:.2g})",
    ),
    Check(
        "not_near_silent", "rms_dbfs", "warning", "overall level (RMS) is at least min_rms_dbfs",
        f"`min_rms_dbfs` {MIN_RMS_DBFS:g} dBFS RMS", _between("rms_dbfs", lambda c: c.t.min_rms_dbfs),
        lambda r, c: f"level {r['rms_dbfs']:.1f} dBFS RMS < {c.t.min_rms_dbfs} dBFS",
    ),
    Check(
        "not_clipped", "clipped", "warning", "at most max_clipped of the samples sit at full scale",
        f"`max_clipped` {MAX_CLIPPED:g} of samples at full scale (abs >= {CLIP_LEVEL})", _between("clipped", hi=lambda c: c.t.max_clipped),
        lambda r, c: f"{100 * r['clipped']:.2f}% of samples at full scale (> {100 * c.t.max_clipped:g}%)",
    ),
    Check(
        "audio_extension", "extension_ok", "warning", "the file extension agrees with the decoded container",
        "", lambda gxe, c: gxe.ExpectColumnValuesToBeInSet(column="extension_ok", value_set=[True]),
        lambda r, c: (
            f"extension {Path(r['audio']).suffix or '(none)'!r} but the content is {r['format']} "
            "(decoded by content)"
        ),
    ),
    Check(
        "text_present", "text", "error", "text is not empty", "",
        lambda gxe, c: gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
        lambda r, c: "text is empty",
    ),
    Check(
        "chars_per_second", "chars_per_second", "warning",
        "letters+digits per second of audio within [min_chars_per_second, max_chars_per_second] "
        "(a transcript of another clip, or a cut one, falls outside)",
        f"`min_chars_per_second` {MIN_CHARS_PER_SECOND:g}, `max_chars_per_second` {MAX_CHARS_PER_SECOND:g}",
        _between("chars_per_second", lambda c: c.t.min_chars_per_second, lambda c: c.t.max_chars_per_second),
        lambda r, c: (
            f"{r['chars_per_second']:.1f} letters/s ({len(r['text'])} chars over {r['duration']:.2f} s) "
            f"outside [{c.t.min_chars_per_second}, {c.t.max_chars_per_second}]: transcript of another clip, "
            "or cut?"
        ),
    ),
    Check(
        "text_script", "invalid_chars", "error",
        "letters belong to the declared language's scripts (Unicode Script property); zh/ja/ko also allow Latin",
        "see \"Script check\"", _null("invalid_chars"),
        lambda r, c: (
            f"characters not valid for {r['lang']} ({script_of(r['lang'])} script): "
            + _describe_chars(r["invalid_chars"])
        ),
    ),
    Check(
        "lang_known", "lang", "error", "lang is a key of the model's prompt dictionary (aliases normalised)",
        "", lambda gxe, c: gxe.ExpectColumnValuesToBeInSet(column="lang", value_set=c.prompt_keys), _lang_reason,
    ),
    Check(
        "speaker_present", "speaker", "error", "speaker is not empty", "",
        lambda gxe, c: gxe.ExpectColumnValueLengthsToBeBetween(column="speaker", min_value=1),
        lambda r, c: "speaker is empty",
    ),
    Check(
        "id_unique", "id", "error", "ids are unique", "",
        lambda gxe, c: gxe.ExpectColumnValuesToBeUnique(column="id"),
        lambda r, c: f"id {r['id']!r} also on line(s) {_others(c.lines_of_id[r['id']], int(r['line']))}",
    ),
    Check(
        "id_format", "id", "error", f"id is a safe file name ({ID_RE.pattern})", "",
        lambda gxe, c: gxe.ExpectColumnValuesToMatchRegex(column="id", regex=ID_RE.pattern),
        lambda r, c: f"id {r['id']!r} is not a safe file name (allowed: letters, digits, . _ -)",
    ),
    Check(
        "audio_unique", "audio_duplicate", "error",
        "no two rows use the same audio (file or identical content, by sha256), across speakers and splits",
        "`duplicate_audio` reject (every copy) or keep_first", _null("audio_duplicate"),
        lambda r, c: r["audio_duplicate"],
    ),
    Check(
        "split_valid", "split", "error", f"split is one of {', '.join(SPLITS)}", "only with a `split` column",
        lambda gxe, c: gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        lambda r, c: f"split {r['split']!r} is not one of {', '.join(SPLITS)}", optional=True,
    ),
    Check(
        "speaker_split_disjoint", "speaker_split_conflict", "error",
        "each speaker is in one declared split only", "only with a `split` column",
        _null("speaker_split_conflict"),
        lambda r, c: f"speaker {r['speaker']!r} appears in splits {r['speaker_split_conflict']}", optional=True,
    ),
    Check(
        "split_leak", "split_leak", "error", "the same audio content is not in two declared splits (test leakage)",
        "only with a `split` column", _null("split_leak"),
        lambda r, c: f"the same audio is in splits {r['split_leak']}", optional=True,
    ),
)
# fmt: on
CHECKS_BY_NAME: dict[str, Check] = {c.name: c for c in CHECKS}


def checks_table() -> str:
    """docs/DATA.md's check table, generated from the records (a test compares the two)."""
    rows = [
        "| check | default severity | what passes | threshold (parameter, default) |",
        "|---|---|---|---|",
    ]
    rows += [f"| {c.name} | {c.severity} | {c.description} | {c.threshold} |" for c in CHECKS]
    return "\n".join(rows)


def hard_set(hard_checks) -> set[str]:
    """The checks whose failure is an error: `hard_checks`, or by default those of severity "error"."""
    hard = {c.name for c in CHECKS if c.severity == "error"} if hard_checks is None else set(hard_checks)
    unknown = hard - set(CHECKS_BY_NAME)
    if unknown:
        raise ValueError(
            f"unknown check(s) in hard_checks: {', '.join(sorted(unknown))}; known: {', '.join(CHECKS_BY_NAME)}"
        )
    return hard
