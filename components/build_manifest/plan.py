"""What a build will do, decided before any audio is touched: which rows go in (and why the others do
not), how identical audio is resolved, and which split each speaker lands in. Pure functions, no I/O
except reading validate_data's report."""

from __future__ import annotations

import json
import os
import random
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

from components.common.dataset import ID_RE, DatasetError, MetadataRow, duplicate_ids
from components.common.io import sha256_file
from components.common.languages import canonical_locale, invalid_characters
from components.common.manifest import SPLITS

DUPLICATE_AUDIO_MODES = ("reject", "keep_first")


class ManifestBuildError(DatasetError):
    """The dataset cannot be split/converted as declared; the message names the rows/speaker/id."""


def assign_speakers(
    utterances: list[tuple[str, str]], seed: int, val_ratio: float, test_ratio: float
) -> tuple[dict[str, str], list[str]]:
    """(lang, speaker) per utterance -> (speaker -> split, warnings).

    Per language (sorted, so the result does not depend on row order), the not-yet-assigned speakers are
    shuffled with a seed derived from (seed, lang) and each goes to test or val when that brings the split's
    utterance count closer to its target share, else to train. Speakers already placed by an earlier
    language keep their split. If a split with a non-zero ratio ends up empty and the language has at least
    three speakers, its smallest train speaker is moved there, so every language can be evaluated.
    """
    per_lang: dict[str, Counter] = defaultdict(Counter)
    for lang, spk in utterances:
        per_lang[lang][spk] += 1
    assigned: dict[str, str] = {}
    warnings: list[str] = []
    ratios = {"test": test_ratio, "val": val_ratio}
    for lang in sorted(per_lang):
        counts = per_lang[lang]
        total = sum(counts.values())
        cur = Counter({s: 0 for s in SPLITS})
        for spk, n in counts.items():
            if spk in assigned:
                cur[assigned[spk]] += n
        free = sorted(s for s in counts if s not in assigned)
        random.Random(f"{seed}:{lang}").shuffle(free)
        for spk in free:
            n, choice = counts[spk], "train"
            for split, ratio in ratios.items():
                target = ratio * total
                if ratio > 0 and abs(cur[split] + n - target) < abs(cur[split] - target):
                    choice = split
                    break
            assigned[spk] = choice
            cur[choice] += n
        for split, ratio in ratios.items():
            if ratio <= 0 or cur[split] > 0:
                continue
            movable = sorted((counts[s], s) for s in free if assigned[s] == "train")
            train_speakers = [s for s in counts if assigned[s] == "train"]
            if len(counts) >= 3 and movable and len(train_speakers) > 1:
                n, spk = movable[0]
                assigned[spk], cur["train"], cur[split] = split, cur["train"] - n, cur[split] + n
            else:
                warnings.append(f"{lang}: no {split} data ({len(counts)} speaker(s) cannot be split further)")
    return assigned, warnings


def check_splits(rows: list[MetadataRow], metadata_path: Path, has_split: bool) -> None:
    """A declared split that is not train/val/test, or a speaker in two declared splits: the split itself is
    ambiguous, so refuse rather than guess."""
    if not has_split:
        return
    splits_of: dict[str, dict[str, int]] = defaultdict(dict)
    for r in rows:
        if r.split not in SPLITS:
            raise ManifestBuildError(
                f"{metadata_path}:{r.line}: split {r.split!r} is not one of {', '.join(SPLITS)}"
            )
        splits_of[r.speaker].setdefault(r.split, r.line)
    for spk, where in splits_of.items():
        if len(where) > 1:
            lines = ", ".join(f"{s} (line {ln})" for s, ln in sorted(where.items()))
            raise ManifestBuildError(
                f"{metadata_path}: speaker {spk!r} is in more than one declared split: {lines}; "
                "declared splits must be speaker-disjoint"
            )


def load_validation(path: str | os.PathLike | None, meta_path: Path) -> dict:
    """validate_data's validation.json, checked to be about these metadata bytes ({} when `path` is None)."""
    if not path:
        return {}
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ManifestBuildError(f"{path}: cannot read the validation report ({e})") from None
    if not isinstance(report, dict) or "rejected_rows" not in report:
        raise ManifestBuildError(f"{path}: not a validation.json with rejected_rows (re-run validate_data)")
    if report.get("metadata_sha256") != sha256_file(meta_path):
        raise ManifestBuildError(
            f"{path}: the validation report is about other metadata than {meta_path} (sha256 differs); "
            "validate this dataset first"
        )
    return report


def skip_entry(r: MetadataRow, reason: str) -> dict:
    return {"line": r.line, "id": r.id, "audio": r.audio, "reason": reason}


def _text_or_lang_problem(r: MetadataRow, aliases: dict[str, str]) -> str | None:
    """The hard row checks build_manifest makes itself when no validation report is given."""
    if r.lang and r.lang not in aliases.values():
        return f"lang_known: lang {r.lang!r} is not in the prompt dictionary"
    bad = invalid_characters(r.text, r.lang)
    return f"text_script: characters not valid for {r.lang}: {bad!r}" if bad else None


def plan_rows(
    rows: list[MetadataRow], validation: dict, aliases: dict[str, str], keep: set[str]
) -> tuple[list[MetadataRow], list[dict], int]:
    """The rows to convert, the rows dropped with their reasons, and how many `langs` excluded.

    Dropped: every row validation rejected (a hard check failed, whatever the tolerance was), rows whose
    record is unreadable (NUL, control characters, non-UTF-8, bad JSON), ids that are unsafe as file names
    or held by two rows (both rows). Without a validation report, also rows whose lang is not a prompt key
    (`aliases`' keys) or whose text fails the script check. Locale aliases become the canonical locale of
    their prompt index.
    """
    rejected = {int(x["line"]): x["reason"] for x in validation.get("rejected_rows", [])}
    dup_ids = duplicate_ids(rows)
    kept: list[MetadataRow] = []
    skipped: list[dict] = []
    n_excluded = 0
    for r in rows:
        r = replace(r, lang=canonical_locale(r.lang, aliases))
        if keep and r.lang not in keep:
            n_excluded += 1
        elif r.line in rejected:
            skipped.append(skip_entry(r, f"rejected by validation: {rejected[r.line]}"))
        elif r.error:
            skipped.append(skip_entry(r, r.error))
        elif not validation and (why := _text_or_lang_problem(r, aliases)):
            skipped.append(skip_entry(r, why))
        elif not ID_RE.match(r.id):
            skipped.append(skip_entry(r, f"id_format: id {r.id!r} is not a safe file name"))
        elif r.id in dup_ids:
            others = ", ".join(str(x) for x in dup_ids[r.id] if x != r.line)
            skipped.append(skip_entry(r, f"id_unique: id {r.id!r} also on line(s) {others}"))
        else:
            kept.append(r)
    return kept, skipped, n_excluded


def drop_duplicate_audio(
    converted: list[tuple[MetadataRow, float, str]], mode: str
) -> tuple[list[tuple[MetadataRow, float]], list[dict]]:
    """Rows with identical source audio (sha256) are one recording: under two speakers a seeded split could
    put one copy in train and the other in test. `reject` drops every copy, `keep_first` all but the first
    line of each group; each dropped row is listed with its reason."""
    lines_of: dict[str, list[int]] = defaultdict(list)
    for r, _, sha in converted:
        lines_of[sha].append(r.line)
    kept, skipped = [], []
    for r, duration, sha in converted:
        lines = lines_of[sha]
        if len(lines) < 2 or (mode == "keep_first" and r.line == min(lines)):
            kept.append((r, duration))
            continue
        others = ", ".join(str(x) for x in lines if x != r.line)
        rule = f" (kept line {min(lines)} by duplicate_audio=keep_first)" if mode == "keep_first" else ""
        skipped.append(skip_entry(r, f"audio_unique: same audio content as line(s) {others}{rule}"))
    return kept, skipped
