"""Text normalisation for scoring: the same rules for references and hypotheses, in every script.

Nemotron writes punctuated, cased text, and a reference may use other punctuation conventions (Greek `;` as a
question mark, `·` ano teleia, «» and „“ quotes, Spanish ¿¡). Normalised WER compares words only; raw WER
(tags stripped, nothing else) is reported beside it so punctuation/casing regressions stay visible.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from components.common.languages import LANG_TAG_RE, language_of

_SPACES = re.compile(r"\s+")
# Apostrophes inside words join (l'homme -> lhomme, don't -> dont) so that "don't"/"dont" spellings agree;
# every other punctuation mark becomes a word boundary.
_APOSTROPHES = {"'", "\u2019", "\u02bc", "\u2018", "\u00b4", "`"}
_FINAL_SIGMA = "\u03c2"  # ς: str.casefold() would turn it into σ


def strip_lang_tags(text: str) -> str:
    """Remove Nemotron `<xx-XX>` language tags (emitted in `auto` mode) and tidy the spaces they leave."""
    return _SPACES.sub(" ", LANG_TAG_RE.sub(" ", text)).strip()


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


def normalize_text(text: str, lang: str | None = None, fold_final_sigma: bool = False) -> str:
    """Scoring form of a transcript: NFC, no language tags, no punctuation (any script), case-folded.

    Final sigma ς stays distinct from σ unless `fold_final_sigma` (a model writing σ at a word end is wrong
    Greek). `lang` selects language-specific case rules (Turkish/Azeri dotted and dotless i).
    """
    text = unicodedata.normalize("NFC", strip_lang_tags(text))
    out = []
    for ch in text:
        if ch in _APOSTROPHES:
            continue
        out.append(" " if _is_punct(ch) else ch)
    text = "".join(out)
    if lang and language_of(lang) in ("tr", "az"):
        text = text.replace("I", "\u0131").replace("\u0130", "i")
    text = "".join(ch if (ch == _FINAL_SIGMA and not fold_final_sigma) else ch.casefold() for ch in text)
    # casefold may decompose (e.g. İ -> i + combining dot): recompose so equal words compare equal
    text = unicodedata.normalize("NFC", text)
    return _SPACES.sub(" ", text).strip()


def raw_text(text: str) -> str:
    """The form raw WER scores: as produced, only tags stripped, Unicode NFC and spaces collapsed."""
    return unicodedata.normalize("NFC", strip_lang_tags(text))


# ------------------------------------------------------------------ tokenizer text maps (train <-> decode)
# A base tokenizer may lack characters the language needs: Nemotron's maps Greek final sigma "ς" to <unk>,
# and a model trained on <unk> learns to emit <unk>. A text map rewrites such characters into ones the
# tokenizer has *before training* (manifests), and a restore function puts them back *after decoding*
# (evaluation, serving), so users never see the mapped form. docs/DATA.md ("Tokenizer coverage").

_GREEK_LETTER = r"[\u0370-\u03ff\u1f00-\u1fff]"
# σ at the end of a Greek word: preceded by a Greek letter, not followed by a letter, digit or combining mark
_WORD_FINAL_SIGMA = re.compile(rf"(?<={_GREEK_LETTER})\u03c3(?![\w\u0300-\u036f])")


def _restore_final_sigma(text: str) -> str:
    return _WORD_FINAL_SIGMA.sub(_FINAL_SIGMA, text)


@dataclass(frozen=True)
class TextMap:
    """A reversible spelling change for the tokenizer's sake, for the languages in `languages`."""

    name: str
    languages: tuple[str, ...]  # language subtags ("el"); empty: every language
    forward: dict[str, str]  # character -> replacement, applied to training text
    restore: Callable[[str], str]  # undoes `forward` on decoded text
    doc: str

    def applies_to(self, lang: str | None) -> bool:
        return not self.languages or (lang is not None and language_of(lang) in self.languages)


TEXT_MAPS: dict[str, TextMap] = {
    m.name: m
    for m in [
        TextMap(
            "el_final_sigma",
            ("el",),
            {_FINAL_SIGMA: "\u03c3"},
            _restore_final_sigma,
            "Greek final sigma ς -> σ before training; after decoding, σ at the end of a Greek word -> ς "
            "(Greek writes σ only inside words, so the restore is exact for well-formed Greek)",
        ),
    ]
}


def get_text_maps(names: str | list[str] | tuple[str, ...] | None) -> list[TextMap]:
    """'el_final_sigma,...' or a list -> TextMaps; ValueError names an unknown map."""
    if not names:
        return []
    items = names.split(",") if isinstance(names, str) else list(names)
    out = []
    for n in (s.strip() for s in items):
        if not n:
            continue
        if n not in TEXT_MAPS:
            raise ValueError(f"unknown text map {n!r}; known: {', '.join(TEXT_MAPS)}")
        out.append(TEXT_MAPS[n])
    return out


def _as_maps(maps: str | list | tuple | None) -> list[TextMap]:
    if not maps:
        return []
    if isinstance(maps, str):
        return get_text_maps(maps)
    return [m if isinstance(m, TextMap) else get_text_maps([m])[0] for m in maps]


def map_for_tokenizer(text: str, lang: str | None, maps: str | list | tuple | None) -> str:
    """Training-side spelling (apply the text maps that cover `lang`)."""
    for m in _as_maps(maps):
        if m.applies_to(lang):
            text = text.translate(str.maketrans(m.forward))
    return text


def restore_after_decoding(text: str, lang: str | None, maps: str | list | tuple | None) -> str:
    """User-side spelling of a decoded hypothesis (undo the text maps that cover `lang`)."""
    for m in _as_maps(maps):
        if m.applies_to(lang):
            text = m.restore(text)
    return text
