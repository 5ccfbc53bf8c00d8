"""What evaluate_wer computes from the transcripts: which utterances, WER/CER per model x mode x language,
the paired-bootstrap CI of the deltas the gate judges, the candidate's WER-vs-latency curve and the timings."""

from __future__ import annotations

import random

from components.common.wer import paired_bootstrap, score, utterance_scores
from components.evaluate_wer.transcribe import ModelRun

MODES = ("streaming", "offline")


def select_utterances(
    rows: list[dict], langs: list[str], max_per_lang: int | None, seed: int, where: str
) -> list[dict]:
    """Every language's rows in id order, `max_per_lang` of them sampled by `seed` when there are more;
    a language with no row is an error naming `where`."""
    by_lang: dict[str, list[dict]] = {}
    for r in rows:
        by_lang.setdefault(r["lang"], []).append(r)
    missing = [lg for lg in langs if lg not in by_lang]
    if missing:
        raise ValueError(
            f"{where}: no test utterances for language(s) {missing} (present: {sorted(by_lang)})"
        )
    picked: list[dict] = []
    for lg in langs:
        items = sorted(by_lang[lg], key=lambda r: str(r.get("id", r["audio_filepath"])))
        if max_per_lang is not None and len(items) > max_per_lang:
            items = sorted(
                random.Random(f"{seed}:{lg}").sample(items, max_per_lang),
                key=lambda r: str(r.get("id", r["audio_filepath"])),
            )
        picked.extend(items)
    return picked


def timings_per_model(runs: dict, audio_s: float) -> dict:
    """Seconds per model and mode, and the evaluation speed: seconds of audio per second of compute."""
    timings: dict = {name: dict(r.timings_s) for name, r in runs.items()}
    for name in runs:
        for mode in MODES:
            timings[name][f"{mode}_rtfx"] = audio_s / max(timings[name][mode], 1e-9)
    return timings


def check_same_lookaheads(runs: dict) -> None:
    """Every model was scored at the candidate's streaming and offline lookaheads (else the deltas lie)."""
    atts = {name: r.att_context_size for name, r in runs.items()}
    for name in runs:
        if atts[name] != atts["candidate"]:
            raise ValueError(
                f"{name} default att_context_size {atts[name]} differs from the candidate's "
                f"{atts['candidate']}: pass att_context_size explicitly"
            )
        if runs[name].offline_att_context_size != runs["candidate"].offline_att_context_size:
            raise ValueError(
                f"{name} offline lookahead {runs[name].offline_att_context_size} differs from the "
                f"candidate's {runs['candidate'].offline_att_context_size}: pass "
                "offline_att_context_size explicitly"
            )


def score_models(hyps: dict, refs: list[str], utt_langs: list[str], langs: list[str]) -> tuple[dict, dict]:
    """-> (metrics[model][mode][lang or "overall"], per-utterance scores[model][mode])."""
    metrics: dict = {m: {mode: {} for mode in MODES} for m in hyps}
    per_utt: dict = {m: {} for m in hyps}
    for m in hyps:
        for mode in MODES:
            h = hyps[m][mode]
            per_utt[m][mode] = utterance_scores(refs, h, utt_langs)
            for lg in langs:
                ix = [i for i, x in enumerate(utt_langs) if x == lg]
                metrics[m][mode][lg] = score(
                    [refs[i] for i in ix], [h[i] for i in ix], [lg] * len(ix)
                ).to_dict()
            metrics[m][mode]["overall"] = score(refs, h, utt_langs).to_dict()
    return metrics, per_utt


def bootstrap_deltas(
    per_utt: dict, ref: str, langs: list[str], utt_langs: list[str], policy: dict, n_resamples: int, seed: int
) -> dict:
    """Per language: paired-bootstrap CI of candidate - `ref` on the same utterances and resampling. The CI is
    of the delta the gate judges: the policy's mode and metric (default streaming wer_norm)."""
    ci_mode, ci_metric = policy.get("mode", "streaming"), policy.get("metric", "wer_norm")
    err_field, den_field = {
        "wer_norm": ("errors", "n_ref_words"),
        "wer_raw": ("raw_errors", "raw_ref_words"),
        "cer": ("char_errors", "n_ref_chars"),
    }[ci_metric]
    out = {}
    for lg in langs:
        ix = [i for i, x in enumerate(utt_langs) if x == lg]
        r, c = per_utt[ref][ci_mode], per_utt["candidate"][ci_mode]
        ci = paired_bootstrap(
            [getattr(r[i], err_field) for i in ix],
            [getattr(c[i], err_field) for i in ix],
            [getattr(r[i], den_field) for i in ix],
            n_resamples=n_resamples,
            seed=seed,
        )
        out[lg] = {**ci.__dict__, "mode": ci_mode, "metric": ci_metric}
    return out


def latency_curve(run: ModelRun, refs: list[str], utt_langs: list[str], langs: list[str]) -> list[dict]:
    """The candidate's streaming scores at every supported lookahead, lowest latency first."""
    points = []
    for a in run.att_context_sizes:
        h = run.curve_hyps[str(a)]
        per_lang = {}
        for lg in langs:
            ix = [i for i, x in enumerate(utt_langs) if x == lg]
            per_lang[lg] = score([refs[i] for i in ix], [h[i] for i in ix], [lg] * len(ix)).to_dict()
        per_lang["overall"] = score(refs, h, utt_langs).to_dict()
        points.append(
            {
                "att_context_size": list(a),
                "latency_ms": run.latency_ms[str(a)],
                "deployed": list(a) == run.att_context_size,
                "metrics": {
                    lg: {k: s[k] for k in ("wer_norm", "wer_raw", "cer", "n_utts")}
                    for lg, s in per_lang.items()
                },
            }
        )
    return sorted(points, key=lambda p: (p["latency_ms"], p["att_context_size"]))
