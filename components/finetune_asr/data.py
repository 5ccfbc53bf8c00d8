"""Which manifest rows a fine-tune trains on: the target languages plus a seeded replay slice of the others."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence

from components.common.manifest import ManifestError, read_manifest

# Manifest fields we pass on to NeMo (lhotse reads audio_filepath/duration/text/lang; the rest is provenance).
_KEEP_FIELDS = ("audio_filepath", "duration", "text", "lang", "target_lang", "speaker", "id")


def select_rows(
    train_manifest: str | os.PathLike,
    target_langs: Sequence[str],
    replay_manifest: str | os.PathLike | None = None,
    replay_langs: Sequence[str] = (),
    replay_per_lang: int = 150,
    seed: int = 0,
    prompt_dictionary: dict[str, int] | None = None,
    replay_ratio: float | None = None,
) -> list[dict]:
    """All target-language rows + `replay_per_lang` seeded random rows per replay language.

    `replay_ratio` (0 <= r < 1), when given, replaces `replay_per_lang`: replay rows make up that fraction of
    the training mix, split evenly over the replay languages (r=0.3 with 500 target rows -> 214 replay rows).

    Every row gets absolute `audio_filepath` and `lang` = `target_lang` (the prompt key lhotse reads; the
    Nemotron recipe reads `target_lang`). Fails naming the file and language when a language has no rows, is
    not a prompt-dictionary key, or an audio file is missing.
    """
    target_langs = list(target_langs)
    replay_langs = [lang for lang in replay_langs if lang not in target_langs]
    if not target_langs:
        raise ValueError("finetune: target_langs is empty")
    if replay_per_lang < 0:
        raise ValueError(f"finetune: replay_per_lang must be >= 0, got {replay_per_lang}")
    if replay_ratio is not None and not 0.0 <= replay_ratio < 1.0:
        raise ValueError(f"finetune: replay_ratio must be in [0, 1), got {replay_ratio}")
    if prompt_dictionary is not None:
        unknown = [lang for lang in [*target_langs, *replay_langs] if lang not in prompt_dictionary]
        if unknown:
            raise ValueError(
                f"finetune: languages {unknown} are not keys of the model's prompt_dictionary "
                f"(known: {sorted(prompt_dictionary)})"
            )

    train_rows = _read(train_manifest)
    rows = [r for r in train_rows if _lang(r) in target_langs]
    for lang in target_langs:
        if not any(_lang(r) == lang for r in rows):
            found = sorted({_lang(r) for r in train_rows})
            raise ValueError(f"{train_manifest}: no rows with lang '{lang}' (languages present: {found})")

    if replay_ratio is not None and replay_langs:
        total = round(replay_ratio / (1.0 - replay_ratio) * len(rows))
        replay_per_lang = math.ceil(total / len(replay_langs)) if total else 0
    if replay_langs and replay_per_lang > 0:
        src = replay_manifest or train_manifest
        src_rows = train_rows if src == train_manifest else _read(src)
        rng = random.Random(seed)
        for lang in replay_langs:
            pool = [r for r in src_rows if _lang(r) == lang]
            if not pool:
                found = sorted({_lang(r) for r in src_rows})
                raise ValueError(f"{src}: no rows with lang '{lang}' for replay (languages present: {found})")
            rows += rng.sample(pool, min(replay_per_lang, len(pool)))

    out = []
    for r in rows:
        if not os.path.isfile(r["audio_filepath"]):
            raise ManifestError(
                f"{train_manifest}: audio file not found: {r['audio_filepath']} (id {r.get('id')})"
            )
        row = {k: r[k] for k in _KEEP_FIELDS if k in r}
        row["lang"] = row["target_lang"] = _lang(r)
        row["duration"] = float(r["duration"])
        out.append(row)
    return out


def _read(path: str | os.PathLike) -> list[dict]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"manifest not found: {path}")
    return read_manifest(path, absolute=True)


def _lang(row: dict) -> str:
    return row.get("target_lang") or row["lang"]


def count_langs(rows: Sequence[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["lang"]] = counts.get(r["lang"], 0) + 1
    return dict(sorted(counts.items()))


def langs_of(target_langs: Sequence[str], replay_langs: Sequence[str]) -> list[str]:
    return [*target_langs, *[lang for lang in replay_langs if lang not in target_langs]]
