"""The espeak-ng demo corpus: layout, audio, scripts, splits, determinism, reuse and failure paths.

Real libespeak-ng (espeakng-loader wheel) on tiny sizes: each synthesis here takes a few seconds.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import unicodedata
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from components.synthesize_corpus import grammar
from components.synthesize_corpus.__main__ import main as cli_main
from components.synthesize_corpus.core import (
    METADATA_COLUMNS,
    TEST_VARIANTS,
    plan_corpus,
    synthesize_corpus,
)

TINY = dict(n_train=6, n_val=2, n_test=3, seed=0)
SCRIPT = {"el-GR": "GREEK", "bg-BG": "CYRILLIC", "es-ES": "LATIN"}


def read_rows(root: Path) -> list[dict]:
    with (root / "metadata.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("synth") / "data"
    summary = synthesize_corpus(out, progress=False, **TINY)
    return out, summary


# ---------------------------------------------------------------- layout and audio


def test_metadata_columns_and_relative_paths(corpus):
    root, summary = corpus
    with (root / "metadata.csv").open(encoding="utf-8") as f:
        assert f.readline().strip() == ",".join(METADATA_COLUMNS)
    rows = read_rows(root)
    assert len(rows) == 3 * (6 + 2 + 3) == summary.total_clips
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert not os.path.isabs(r["audio"])
        assert r["audio"] == f"audio/{r['lang']}/{r['speaker']}/{r['id']}.wav"
        assert (root / r["audio"]).is_file()
        assert r["split"] in ("train", "val", "test")
    assert summary.n_clips["train"] == {"bg-BG": 6, "el-GR": 6, "es-ES": 6}
    assert summary.n_clips["test"]["el-GR"] == 3
    assert (root / "corpus.json").is_file()
    assert not list(root.parent.glob(".data.tmp-*")), "build folder left behind"


def test_every_clip_decodes_at_22050_mono_non_silent(corpus):
    root, summary = corpus
    total = 0.0
    for r in read_rows(root):
        info = sf.info(root / r["audio"])
        assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16"), r["audio"]
        x, _ = sf.read(root / r["audio"], dtype="float32")
        seconds = len(x) / 22050
        total += seconds
        # ~13 characters per second of espeak speech at 140-190 wpm; allow a wide band
        assert 0.3 * len(r["text"]) / 13 < seconds < 3 * len(r["text"]) / 13 + 1, (r["audio"], seconds)
        assert abs(np.abs(x).max() - 0.8) < 0.01, r["audio"]  # scaled to peak 0.8, no clipping
        assert np.sqrt(np.mean(x**2)) > 0.03, f"{r['audio']} is nearly silent"
    assert total == pytest.approx(summary.total_seconds, abs=0.01)


def test_text_is_cased_punctuated_in_the_right_script(corpus):
    root, _ = corpus
    for r in read_rows(root):
        text = r["text"]
        assert text[0].isupper() and text.endswith("."), text
        letters = [c for c in text if c.isalpha()]
        assert letters and all(unicodedata.name(c).startswith(SCRIPT[r["lang"]]) for c in letters), text
        assert not any(ch.isdigit() for ch in text), f"numbers must be words: {text}"


def test_greek_words_use_final_sigma():
    g = grammar.GRAMMARS["el-GR"]
    for w in {w for t in (*g.objects, *g.names, *g.hours, *g.temperatures, g.temperature) for w in t.split()}:
        w = w.strip(".,{}")
        assert not w.endswith("σ") and "ς" not in w[:-1], w


def test_grammar_vocabulary_is_small_and_closed():
    rng = random.Random(1)
    for lang in grammar.supported_langs():
        sentences = grammar.sample_sentences(lang, 400, rng)
        assert len(set(sentences)) == 400
        vocab = {w for s in sentences for w in grammar.words(s)}
        assert 50 <= len(vocab) <= 90, (lang, len(vocab))


# ---------------------------------------------------------------- splits


def test_splits_are_speaker_and_sentence_disjoint(corpus):
    root, _ = corpus
    rows = read_rows(root)
    split_of_speaker: dict[str, set] = defaultdict(set)
    texts: dict[tuple, set] = defaultdict(set)
    for r in rows:
        split_of_speaker[r["speaker"]].add(r["split"])
        texts[(r["lang"], r["split"])].add(r["text"])
        variant = r["speaker"].split("-")[1]
        assert (variant in TEST_VARIANTS) == (r["split"] == "test"), r
        assert r["speaker"].startswith(r["lang"][:2] + "-")
    assert all(len(s) == 1 for s in split_of_speaker.values())
    for lang in SCRIPT:
        assert not texts[(lang, "test")] & texts[(lang, "train")]
        assert not texts[(lang, "val")] & texts[(lang, "train")]
        assert not texts[(lang, "val")] & texts[(lang, "test")]


def test_default_plan_sizes_renditions_and_balance():
    clips = plan_corpus()  # the full default corpus, planned only (no audio)
    by = defaultdict(list)
    for c in clips:
        by[(c.lang, c.split)].append(c)
    for lang in ("el-GR", "bg-BG", "es-ES"):
        train = by[(lang, "train")]
        assert (len(train), len(by[(lang, "val")]), len(by[(lang, "test")])) == (500, 20, 60)
        speakers_of = defaultdict(set)
        for c in train:
            speakers_of[c.text].add(c.speaker.name)
        assert len(speakers_of) == 250 and all(len(s) == 2 for s in speakers_of.values())
        assert len({c.speaker for c in train}) == 14
        assert {c.speaker.variant for c in by[(lang, "test")]} == set(TEST_VARIANTS)
        assert all(140 <= c.speaker.rate <= 190 and 30 <= c.speaker.pitch <= 70 for c in train)
        # held-out sentences were drawn from a shuffled stream: their verbs are heard in training
        train_words = {w for c in train for w in grammar.words(c.text)}
        held = by[(lang, "test")] + by[(lang, "val")]
        assert {w for c in held for w in grammar.words(c.text)} <= train_words
        # not sorted: the test set is not dominated by one first word
        first_words = [c.text.split()[0] for c in by[(lang, "test")]]
        assert max(first_words.count(w) for w in set(first_words)) < 30


def test_plan_is_seeded():
    assert [c.text for c in plan_corpus(**TINY)] == [c.text for c in plan_corpus(**TINY)]
    assert [c.text for c in plan_corpus(**{**TINY, "seed": 1})] != [c.text for c in plan_corpus(**TINY)]
    # adding a language leaves the others alone
    only_es = [(c.id, c.text, c.speaker) for c in plan_corpus(langs=["es-ES"], **TINY)]
    assert only_es == [(c.id, c.text, c.speaker) for c in plan_corpus(**TINY) if c.lang == "es-ES"]


# ---------------------------------------------------------------- determinism, reuse, atomicity


def test_two_runs_give_identical_bytes_and_rerun_is_a_noop(corpus, tmp_path):
    root, _ = corpus
    again = synthesize_corpus(tmp_path / "data", workers=1, progress=False, **TINY)  # other worker count
    assert again.reused is False
    assert tree_digest(tmp_path / "data") == tree_digest(root)

    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "data").rglob("*")}
    third = synthesize_corpus(tmp_path / "data", progress=False, **TINY)
    assert third.reused is True and third.total_clips == again.total_clips
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "data").rglob("*")} == mtimes


def test_all_clips_differ_across_and_within_languages(corpus):
    root, _ = corpus
    digests = [hashlib.md5((root / r["audio"]).read_bytes()).hexdigest() for r in read_rows(root)]
    assert len(set(digests)) == len(digests)


def test_voice_rate_and_pitch_take_effect():
    from components.synthesize_corpus.espeak import Espeak

    e = Espeak()
    text = "Enciende la lámpara de la cocina."

    def f0(x: np.ndarray) -> float:  # median autocorrelation pitch of the loud 40 ms frames
        x = x.astype(float)
        n, sr, est = int(0.04 * e.sample_rate), e.sample_rate, []
        for i in range(0, len(x) - n, n):
            fr = x[i : i + n] - x[i : i + n].mean()
            if np.sqrt(np.mean(fr**2)) < np.abs(x).max() / 30:
                continue
            ac = np.correlate(fr, fr, "full")[n - 1 :]
            lag = int(sr / 400) + int(np.argmax(ac[int(sr / 400) : int(sr / 60)]))
            if ac[lag] > 0.3 * ac[0]:
                est.append(sr / lag)
        return float(np.median(est))

    assert len(e.synth("es+m1", text, 140, 50)) > 1.15 * len(e.synth("es+m1", text, 190, 50))
    assert f0(e.synth("es+m1", text, 160, 70)) > 1.2 * f0(e.synth("es+m1", text, 160, 30))
    assert f0(e.synth("es+f2", text, 160, 50)) > 1.4 * f0(e.synth("es+m1", text, 160, 50))
    es, el = e.synth("es+m1", "Uno, dos, tres.", 160, 50), e.synth("el+m1", "Ένα, δύο, τρία.", 160, 50)
    assert es.tobytes() != el.tobytes()
    with pytest.raises(ValueError, match="no voice 'xx\\+m1'"):
        e.synth("xx+m1", text, 160, 50)


def test_incomplete_or_changed_corpus_is_rebuilt(tmp_path):
    out = tmp_path / "c"
    small = dict(langs=["es-ES"], n_train=2, n_val=1, n_test=1, progress=False)
    first = synthesize_corpus(out, **small)
    victim = out / read_rows(out)[0]["audio"]
    victim.unlink()
    (tmp_path / ".c.tmp-999999999").mkdir()  # a build folder left by a killed run
    rebuilt = synthesize_corpus(out, **small)
    assert rebuilt.reused is False and victim.is_file()
    assert not (tmp_path / ".c.tmp-999999999").exists()
    other = synthesize_corpus(out, **{**small, "seed": 3})
    assert other.reused is False
    plan = {k: v for k, v in small.items() if k != "progress"}
    assert [r["text"] for r in read_rows(out)] == [c.text for c in plan_corpus(**plan, seed=3)]
    assert [r["text"] for r in read_rows(out)] != [c.text for c in plan_corpus(**plan, seed=0)]
    assert first.total_clips == other.total_clips == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_refuses_to_replace_a_folder_it_did_not_make(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "my_recordings.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="no corpus.json"):
        synthesize_corpus(out, langs=["es-ES"], n_train=2, n_val=0, n_test=0, progress=False)
    assert (out / "my_recordings.txt").read_text() == "precious"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(langs=["xx-XX"]), "no demo grammar for 'xx-XX'"),
        (dict(langs=[]), "langs"),
        (dict(n_train=0), "n_train"),
        (dict(n_test=-1), "n_test"),
        (dict(renditions=0), "renditions"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        synthesize_corpus(tmp_path / "data", progress=False, **kwargs)
    assert not (tmp_path / "data").exists()


def test_cli_reports_errors_and_help(tmp_path, capsys):
    assert cli_main(["--out", str(tmp_path / "d"), "--langs", "el-GR,xx-XX"]) == 2
    assert "xx-XX" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main(["--help"])
    assert exc.value.code == 0
    assert "--n-train" in capsys.readouterr().out
