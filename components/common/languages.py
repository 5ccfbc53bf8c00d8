"""Locales, scripts and the language-prompt dictionary shared by every stage."""

from __future__ import annotations

import re

# Script of each language subtag, for "characters valid for the declared language" checks and normalisation.
SCRIPT_BY_LANGUAGE = {
    "el": "Greek",
    "bg": "Cyrillic", "ru": "Cyrillic", "uk": "Cyrillic",
    "en": "Latin", "es": "Latin", "fr": "Latin", "de": "Latin", "it": "Latin", "pt": "Latin", "nl": "Latin",
    "pl": "Latin", "cs": "Latin", "sk": "Latin", "sl": "Latin", "hr": "Latin", "ro": "Latin", "hu": "Latin",
    "fi": "Latin", "et": "Latin", "lv": "Latin", "lt": "Latin", "sv": "Latin", "da": "Latin", "nb": "Latin",
    "nn": "Latin", "no": "Latin", "tr": "Latin", "mt": "Latin", "vi": "Latin",
    "ar": "Arabic", "he": "Hebrew", "hi": "Devanagari", "th": "Thai",
    "ja": "Japanese", "ko": "Hangul", "zh": "Han",
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
