"""Locales, scripts and the language-prompt dictionary shared by every stage."""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from pathlib import Path

# Script of each language subtag, for "characters valid for the declared language" checks and normalisation.
SCRIPT_BY_LANGUAGE = {
    "el": "Greek",
    "bg": "Cyrillic",
    "ru": "Cyrillic",
    "uk": "Cyrillic",
    "en": "Latin",
    "es": "Latin",
    "fr": "Latin",
    "de": "Latin",
    "it": "Latin",
    "pt": "Latin",
    "nl": "Latin",
    "pl": "Latin",
    "cs": "Latin",
    "sk": "Latin",
    "sl": "Latin",
    "hr": "Latin",
    "ro": "Latin",
    "hu": "Latin",
    "fi": "Latin",
    "et": "Latin",
    "lv": "Latin",
    "lt": "Latin",
    "sv": "Latin",
    "da": "Latin",
    "nb": "Latin",
    "nn": "Latin",
    "no": "Latin",
    "tr": "Latin",
    "mt": "Latin",
    "vi": "Latin",
    "ar": "Arabic",
    "he": "Hebrew",
    "hi": "Devanagari",
    "th": "Thai",
    "ja": "Japanese",
    "ko": "Hangul",
    "zh": "Han",
}

_LOCALE_RE = re.compile(r"^[a-z]{2,3}(-[A-Z]{2})?$")
LANG_TAG_RE = re.compile(r"<[a-z]{2,3}-[A-Z]{2}>")  # what Nemotron emits in `auto` mode


def language_of(locale: str) -> str:
    """'el-GR' -> 'el'."""
    return locale.split("-")[0].lower()


def script_of(locale: str) -> str | None:
    return SCRIPT_BY_LANGUAGE.get(language_of(locale))


def is_locale(value: str) -> bool:
    return bool(_LOCALE_RE.match(value or ""))


def parse_langs(value: str | list[str] | None) -> list[str]:
    """'bg-BG, el-GR' or ['bg-BG'] -> ['bg-BG', 'el-GR'] (pipeline parameters arrive as strings)."""
    if not value:
        return []
    items = value.split(",") if isinstance(value, str) else value
    return [s.strip() for s in items if s and s.strip()]


def canonical_locales(prompt_dictionary: dict[str, int]) -> dict[str, str]:
    """Every key of a prompt dictionary -> the canonical key of its prompt index.

    Nemotron's dictionary lists aliases of one prompt ('en-US' and 'en' are both index 0; 'es-US' and 'es'
    index 3): they are one language to the model, so they must be one language in splits, counts and
    evaluation. The canonical key is the first well-formed locale ('xx-YY') with that index, in dictionary
    order, else the first key with it.
    """
    keys_of: dict[int, list[str]] = {}
    for key, index in prompt_dictionary.items():
        keys_of.setdefault(index, []).append(key)
    first = {i: next((k for k in keys if _LOCALE_RE.match(k)), keys[0]) for i, keys in keys_of.items()}
    return {key: first[index] for key, index in prompt_dictionary.items()}


def canonical_locale(lang: str, aliases: dict[str, str]) -> str:
    """`lang` under its canonical name (unknown locales are returned unchanged: lang_known reports them)."""
    return aliases.get(lang, lang)


DEFAULT_MODEL_CONFIG = Path(__file__).resolve().parents[1] / "finetune_asr" / "conf" / "tiny_prompt_rnnt.yaml"


def default_prompt_dictionary(config: str | os.PathLike = DEFAULT_MODEL_CONFIG) -> dict[str, int]:
    """model.model_defaults.prompt_dictionary of a NeMo config (the languages the model can be prompted with)."""
    import yaml

    cfg = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
    try:
        return dict(cfg["model"]["model_defaults"]["prompt_dictionary"])
    except (KeyError, TypeError):
        raise ValueError(f"{config}: no model.model_defaults.prompt_dictionary") from None


# Scripts whose letters a transcript of each script's languages may contain (Unicode Script property, via
# the `regex` package). Real Chinese, Japanese and Korean text carries Latin words, acronyms and brand names
# ("M2路", "WHO", "iPhone", "KTX"); Korean may carry Hanja. Elsewhere a letter of another script means the
# row's `lang` is wrong (Cyrillic in a Greek row), so those stay strict. Script-neutral everywhere: digits,
# punctuation, spaces, combining marks, currency/math/modifier symbols, modifier letters, ZWNJ/ZWJ.
ALLOWED_SCRIPTS = {
    "Latin": ("Latin",),
    "Greek": ("Greek",),
    "Cyrillic": ("Cyrillic",),
    "Arabic": ("Arabic",),
    "Hebrew": ("Hebrew",),
    "Devanagari": ("Devanagari",),
    "Thai": ("Thai",),
    "Hangul": ("Hangul", "Han", "Latin"),
    "Han": ("Han", "Latin", "Bopomofo"),
    "Japanese": ("Hiragana", "Katakana", "Han", "Latin"),
}
_NEUTRAL_CLASSES = r"\p{N}\p{P}\p{Zs}\p{M}\p{Sc}\p{Sm}\p{Sk}\p{Lm}\u200c\u200d\u00aa\u00ba"


@functools.cache
def _invalid_pattern(script: str):
    import regex

    allowed = "".join(f"\\p{{Script={s}}}" for s in ALLOWED_SCRIPTS[script])
    return regex.compile(f"[^{allowed}{_NEUTRAL_CLASSES}]")


def invalid_characters(text: str, locale: str) -> str | None:
    """Characters of `text` not valid for `locale` ('' if all are valid, None if its script is unknown),
    each listed once, in order of appearance."""
    script = script_of(locale)
    if script not in ALLOWED_SCRIPTS:
        return None
    bad = _invalid_pattern(script).findall(unicodedata.normalize("NFC", text))
    return "".join(dict.fromkeys(bad))
