"""Text normalisation for scoring: the same rules for references and hypotheses, in every script.

Nemotron writes punctuated, cased text, and a reference may use other punctuation conventions (Greek `;` as a
question mark, `·` ano teleia, «» and „“ quotes, Spanish ¿¡). Normalised WER compares words only; raw WER
(tags stripped, nothing else) is reported beside it so punctuation/casing regressions stay visible.
"""

from __future__ import annotations

import re
import unicodedata

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
