"""WER/CER with jiwer 4, one convention for every stage, plus a paired bootstrap for base-vs-candidate deltas.

Empty references (after normalisation) are legal: a clip of silence whose correct transcript is nothing.
jiwer cannot divide by zero words, so the convention here is: every hypothesis word on an empty reference is
an insertion, the utterance contributes 0 reference words, and any error rate is errors / max(ref words, 1).
Corpus rates are total errors / total reference words (never a mean of per-utterance rates).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import jiwer
import numpy as np

from components.common.text import normalize_text, raw_text


@dataclass
class Scores:
    """Corpus scores. Word counts are for the normalised text (the one the gate judges)."""

    wer_raw: float
    wer_norm: float
    cer: float
    n_utts: int
    n_ref_words: int
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    n_ref_chars: int
    raw_errors: int
    raw_ref_words: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class UtteranceScore:
    ref_norm: str
    hyp_norm: str
    wer_raw: float
    wer_norm: float
    cer: float
    errors: int  # normalised word errors (S + D + I)
    n_ref_words: int
    char_errors: int
    n_ref_chars: int
    raw_errors: int
    raw_ref_words: int


@dataclass
class BootstrapCI:
    """Paired bootstrap of (candidate - base) corpus WER: negative means the candidate is better."""

    delta: float
    low: float
    high: float
    n_utts: int
    n_resamples: int
    seed: int
    confidence: float


def _counts(refs: list[str], hyps: list[str], chars: bool) -> tuple[int, int, int, int, int]:
    """(S, D, I, hits, ref units) over pairs; empty references count hypothesis units as insertions."""
    s = d = i = h = n = 0
    pairs = [(r, y) for r, y in zip(refs, hyps, strict=True) if r.strip()]
    for r, y in zip(refs, hyps, strict=True):
        if not r.strip():
            i += len(y) if chars else len(y.split())
    if pairs:
        pr, py = [p[0] for p in pairs], [p[1] for p in pairs]
        out = jiwer.process_characters(pr, py) if chars else jiwer.process_words(pr, py)
        s, d, i2, h = out.substitutions, out.deletions, out.insertions, out.hits
        i += i2
        n = s + d + h
    return s, d, i, h, n


def _rate(errors: int, n: int) -> float:
    return errors / max(n, 1)


def _forms(refs: Sequence[str], hyps: Sequence[str], langs: Sequence[str | None] | None):
    if len(refs) != len(hyps):
        raise ValueError(f"got {len(refs)} references but {len(hyps)} hypotheses")
    if langs is not None and len(langs) != len(refs):
        raise ValueError(f"got {len(refs)} references but {len(langs)} languages")
    ls = list(langs) if langs is not None else [None] * len(refs)
    rr = [raw_text(r) for r in refs]
    hr = [raw_text(h) for h in hyps]
    rn = [normalize_text(r, lg) for r, lg in zip(refs, ls, strict=True)]
    hn = [normalize_text(h, lg) for h, lg in zip(hyps, ls, strict=True)]
    return rr, hr, rn, hn


def score(refs: Sequence[str], hyps: Sequence[str], langs: Sequence[str | None] | None = None) -> Scores:
    """Corpus WER raw (punctuation and case as produced), WER normalised and CER (normalised)."""
    rr, hr, rn, hn = _forms(refs, hyps, langs)
    rs, rd, ri, _, rnw = _counts(rr, hr, chars=False)
    s, d, i, h, nw = _counts(rn, hn, chars=False)
    cs, cd, ci, _, nc = _counts(rn, hn, chars=True)
    return Scores(
        wer_raw=_rate(rs + rd + ri, rnw),
        wer_norm=_rate(s + d + i, nw),
        cer=_rate(cs + cd + ci, nc),
        n_utts=len(rn),
        n_ref_words=nw,
        substitutions=s,
        deletions=d,
        insertions=i,
        hits=h,
        n_ref_chars=nc,
        raw_errors=rs + rd + ri,
        raw_ref_words=rnw,
    )


def utterance_scores(
    refs: Sequence[str], hyps: Sequence[str], langs: Sequence[str | None] | None = None
) -> list[UtteranceScore]:
    """Per-utterance results (for utterances.jsonl and the bootstrap)."""
    rr, hr, rn, hn = _forms(refs, hyps, langs)
    out = []
    for a, b, c, e in zip(rr, hr, rn, hn, strict=True):
        rs, rd, ri, _, rnw = _counts([a], [b], chars=False)
        s, d, i, _, nw = _counts([c], [e], chars=False)
        cs, cd, ci, _, nc = _counts([c], [e], chars=True)
        out.append(
            UtteranceScore(
                ref_norm=c,
                hyp_norm=e,
                wer_raw=_rate(rs + rd + ri, rnw),
                wer_norm=_rate(s + d + i, nw),
                cer=_rate(cs + cd + ci, nc),
                errors=s + d + i,
                n_ref_words=nw,
                char_errors=cs + cd + ci,
                n_ref_chars=nc,
                raw_errors=rs + rd + ri,
                raw_ref_words=rnw,
            )
        )
    return out


def paired_bootstrap(
    errors_base: Sequence[int],
    errors_cand: Sequence[int],
    n_ref_words: Sequence[int],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapCI:
    """CI of the corpus-WER delta (candidate - base), resampling utterances with replacement.

    Paired: each resample takes the same utterances for both models, so utterance difficulty cancels out.
    """
    eb = np.asarray(errors_base, dtype=np.float64)
    ec = np.asarray(errors_cand, dtype=np.float64)
    nw = np.asarray(n_ref_words, dtype=np.float64)
    if not (eb.shape == ec.shape == nw.shape):
        raise ValueError(f"bootstrap inputs differ in length: {eb.shape}, {ec.shape}, {nw.shape}")
    n = eb.size
    if n == 0:
        raise ValueError("bootstrap needs at least one utterance")
    delta = float((ec.sum() - eb.sum()) / max(nw.sum(), 1.0))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    denom = np.maximum(nw[idx].sum(axis=1), 1.0)
    deltas = (ec[idx].sum(axis=1) - eb[idx].sum(axis=1)) / denom
    a = (1.0 - confidence) / 2.0
    low, high = np.quantile(deltas, [a, 1.0 - a])
    return BootstrapCI(
        delta=delta,
        low=float(low),
        high=float(high),
        n_utts=n,
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
    )
