"""Synthesize the multilingual demo corpus with espeak-ng, in the raw-dataset layout of docs/ARCHITECTURE.md.

Why synthetic: no open Greek or Bulgarian recordings can be fetched offline, and a tiny model on a CPU needs a
small closed vocabulary to learn in minutes (reference/tiny-model-learning.md §2).

Layout written to `out_dir`:
  audio/<lang>/<speaker>/<id>.wav   22050 Hz mono PCM16 (espeak's native rate: build_manifest resamples)
  metadata.csv                      id,audio,text,lang,speaker,split (audio relative to out_dir)
  corpus.json                       the arguments, library versions and a content summary; written last

A "speaker" is one espeak-ng voice variant at one speed and pitch (`el-m1-160-50`). Splits are
speaker-disjoint and sentence-disjoint: train = training variants x training sentences (each sentence spoken
twice, by two speakers); val = other speakers of the training variants x held-out sentences; test = held-out
variants (m6, f4) x other held-out sentences. Same arguments and same espeak data give byte-identical files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import multiprocessing as mp
import os
import random
import shutil
import time
import wave
import zlib
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

from components.common.io import atomic_write_text, sha256_file
from components.common.languages import language_of
from components.synthesize_corpus import grammar

log = logging.getLogger(__name__)

DEFAULT_LANGS = ("el-GR", "bg-BG", "es-ES")
SPLITS = ("train", "val", "test")
METADATA_COLUMNS = ("id", "audio", "text", "lang", "speaker", "split")
GENERATOR = "synthesize_corpus/1"  # bump when the plan or audio processing changes

TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "f1", "f2", "f3")
TEST_VARIANTS = ("m6", "f4")  # never heard in train or val
STYLES_PER_VARIANT = 2  # (speed, pitch) pairs per variant: 14 train speakers, 4 test speakers per language
N_VAL_SPEAKERS = 2
RATES = tuple(range(140, 191, 5))  # words per minute
PITCHES = tuple(range(30, 71, 5))  # espeak 0..100, 50 = the variant's own pitch
PEAK = 0.8  # scale every clip to this peak (full scale 1.0): loud enough, never clipped


@dataclass(frozen=True)
class Speaker:
    lang: str
    variant: str
    rate: int
    pitch: int

    @property
    def name(self) -> str:
        return f"{language_of(self.lang)}-{self.variant}-{self.rate}-{self.pitch}"

    @property
    def voice(self) -> str:
        return f"{grammar.grammar_for(self.lang).voice}+{self.variant}"


@dataclass(frozen=True)
class Clip:
    id: str
    audio: str  # relative to the corpus root
    text: str
    lang: str
    speaker: Speaker
    split: str


@dataclass
class CorpusSummary:
    """What was written (or found already complete) at `out_dir`."""

    out_dir: str
    n_clips: dict[str, dict[str, int]]  # split -> lang -> clips
    seconds: dict[str, dict[str, float]]  # split -> lang -> audio seconds
    n_speakers: dict[str, dict[str, int]]  # split -> lang -> speakers
    total_clips: int
    total_seconds: float
    bytes: int
    seconds_taken: float
    reused: bool = False
    vocabulary: dict[str, int] = field(default_factory=dict)  # lang -> distinct lower-cased words
    test_words_unseen_in_train: dict[str, list[str]] = field(default_factory=dict)


# ---------------------------------------------------------------- plan (pure: no audio)


def _speakers(lang: str, rng: random.Random) -> dict[str, list[Speaker]]:
    """Train, val and test speakers of one language: all (variant, rate, pitch) triples distinct."""
    used: set[tuple[str, int, int]] = set()

    def draw(variant: str) -> Speaker:
        while True:
            rate, pitch = rng.choice(RATES), rng.choice(PITCHES)
            if (variant, rate, pitch) not in used:
                used.add((variant, rate, pitch))
                return Speaker(lang, variant, rate, pitch)

    train = [draw(v) for v in TRAIN_VARIANTS for _ in range(STYLES_PER_VARIANT)]
    males = [v for v in TRAIN_VARIANTS if v.startswith("m")]
    females = [v for v in TRAIN_VARIANTS if v.startswith("f")]
    val_variants = [rng.choice(males), rng.choice(females)][:N_VAL_SPEAKERS]
    val = [draw(v) for v in val_variants]
    test = [draw(v) for v in TEST_VARIANTS for _ in range(STYLES_PER_VARIANT)]
    for group in (train, val, test):
        rng.shuffle(group)
    return {"train": train, "val": val, "test": test}


def _clips(lang: str, split: str, texts: list[str], speakers: list[Speaker]) -> list[Clip]:
    """Consecutive clips cycle through the speakers, so the renditions of a sentence (adjacent in `texts`)
    are spoken by different speakers."""
    out = []
    for i, text in enumerate(texts):
        s = speakers[i % len(speakers)]
        clip_id = f"{language_of(lang)}-{split}-{i:04d}"
        out.append(Clip(clip_id, f"audio/{lang}/{s.name}/{clip_id}.wav", text, lang, s, split))
    return out


def plan_corpus(
    langs: tuple[str, ...] | list[str] = DEFAULT_LANGS,
    n_train: int = 500,
    n_val: int = 20,
    n_test: int = 60,
    seed: int = 0,
    renditions: int = 2,
) -> list[Clip]:
    """Every clip of the corpus (text, speaker, split, path), deterministic in the arguments.

    Sentences are drawn at random (never from a sorted list); held-out sentences are never in train and use
    train's words where it can. Each language has its own random stream, so adding a language does not
    change the others.
    """
    _check_args(langs, n_train, n_val, n_test, renditions)
    clips: list[Clip] = []
    for lang in langs:
        rng = random.Random(f"synthesize_corpus:{seed}:{lang}")
        # Train sentences first, then held-out ones (never in train, preferably in train's words): the train
        # set does not depend on n_val / n_test.
        train_sentences = grammar.sample_sentences(lang, math.ceil(n_train / renditions), rng)
        vocabulary = {w for t in train_sentences for w in grammar.words(t)}
        held = grammar.sample_sentences(lang, n_test + n_val, rng, set(train_sentences), vocabulary)
        held_test, held_val = held[:n_test], held[n_test:]
        speakers = _speakers(lang, rng)
        train_texts = [t for t in train_sentences for _ in range(renditions)][:n_train]
        clips += _clips(lang, "train", train_texts, speakers["train"])
        clips += _clips(lang, "val", held_val, speakers["val"])
        clips += _clips(lang, "test", held_test, speakers["test"])
    return clips


def _check_args(langs, n_train: int, n_val: int, n_test: int, renditions: int) -> None:
    if isinstance(langs, str) or not langs:
        raise ValueError(f"langs: expected a non-empty list of locales, got {langs!r}")
    if len(set(langs)) != len(langs):
        raise ValueError(f"langs: duplicate locale in {list(langs)}")
    for lang in langs:
        grammar.grammar_for(lang)
    for name, value, minimum in (("n_train", n_train, 1), ("n_val", n_val, 0), ("n_test", n_test, 0)):
        if not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if not isinstance(renditions, int) or not 1 <= renditions <= len(TRAIN_VARIANTS) * STYLES_PER_VARIANT:
        raise ValueError(
            f"renditions: expected 1..{len(TRAIN_VARIANTS) * STYLES_PER_VARIANT}, got {renditions!r}"
        )


# ---------------------------------------------------------------- audio (runs in worker processes)


def _wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def _normalize(samples: np.ndarray, where: str) -> np.ndarray:
    peak = int(np.abs(samples.astype(np.int32)).max()) if samples.size else 0
    if peak == 0:
        raise RuntimeError(f"{where}: espeak-ng produced silence")
    gain = PEAK * 32767.0 / peak
    return np.round(samples.astype(np.float64) * gain).astype(np.int16)


def _render_chunk(task: tuple[str, str, int, int, list[tuple[str, str, str]]]) -> list[tuple[str, int, int]]:
    """Speak one speaker's clips in a fresh process (libespeak-ng state is per process; see espeak.py).

    Returns (id, samples, file bytes) per clip."""
    from components.synthesize_corpus.espeak import Espeak

    root, voice, rate, pitch, items = task
    engine = Espeak()
    done = []
    for clip_id, rel, text in items:
        samples = engine.synth(voice, text, rate, pitch, seed=zlib.crc32(clip_id.encode()) & 0x7FFFFFFF)
        data = _wav_bytes(_normalize(samples, f"{clip_id} ({voice}, {text!r})"), engine.sample_rate)
        path = Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        done.append((clip_id, len(samples), len(data)))
    return done


def _pool(workers: int) -> mp.pool.Pool:
    """Processes forked from a clean server (forkserver), one task each: every chunk starts from a freshly
    initialised libespeak-ng whatever ran before, which is what makes the audio reproducible."""
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["components.synthesize_corpus.core"])
    return ctx.Pool(processes=workers, maxtasksperchild=1)


# ---------------------------------------------------------------- the corpus


def _metadata_csv(clips: list[Clip]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(METADATA_COLUMNS)
    for c in clips:
        writer.writerow((c.id, c.audio, c.text, c.lang, c.speaker.name, c.split))
    return buf.getvalue()


def _fingerprint(langs, n_train, n_val, n_test, seed, renditions) -> dict:
    from components.synthesize_corpus.espeak import espeak_version

    try:
        loader = importlib_metadata.version("espeakng-loader")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover
        loader = "unknown"
    return {
        "generator": GENERATOR,
        "args": {
            "langs": list(langs),
            "n_train": n_train,
            "n_val": n_val,
            "n_test": n_test,
            "seed": seed,
            "renditions": renditions,
        },
        "grammar_sha256": grammar.grammar_sha256(),
        "espeak": {"espeakng_loader": loader, "library": espeak_version()},
    }


def _summarize(clips: list[Clip], samples: dict[str, int], sample_rate: int) -> dict:
    n_clips: dict = {s: defaultdict(int) for s in SPLITS}
    seconds: dict = {s: defaultdict(float) for s in SPLITS}
    speakers: dict = {s: defaultdict(set) for s in SPLITS}
    words: dict = {s: defaultdict(set) for s in SPLITS}
    for c in clips:
        n_clips[c.split][c.lang] += 1
        seconds[c.split][c.lang] += samples[c.id] / sample_rate
        speakers[c.split][c.lang].add(c.speaker.name)
        words[c.split][c.lang].update(grammar.words(c.text))
    langs = sorted({c.lang for c in clips})
    return {
        "n_clips": {s: {lang: n_clips[s][lang] for lang in langs} for s in SPLITS},
        "seconds": {s: {lang: round(seconds[s][lang], 3) for lang in langs} for s in SPLITS},
        "n_speakers": {s: {lang: len(speakers[s][lang]) for lang in langs} for s in SPLITS},
        "total_clips": len(clips),
        "total_seconds": round(sum(samples.values()) / sample_rate, 3),
        "vocabulary": {lang: len(set().union(*(words[s][lang] for s in SPLITS))) for lang in langs},
        "test_words_unseen_in_train": {
            lang: sorted((words["test"][lang] | words["val"][lang]) - words["train"][lang]) for lang in langs
        },
    }


def _summary_from(out_dir: Path, record: dict, seconds_taken: float, reused: bool) -> CorpusSummary:
    s = record["summary"]
    return CorpusSummary(
        out_dir=str(out_dir),
        n_clips=s["n_clips"],
        seconds=s["seconds"],
        n_speakers=s["n_speakers"],
        total_clips=s["total_clips"],
        total_seconds=s["total_seconds"],
        bytes=record["bytes"],
        seconds_taken=round(seconds_taken, 3),
        reused=reused,
        vocabulary=s["vocabulary"],
        test_words_unseen_in_train=s["test_words_unseen_in_train"],
    )


def _existing_complete(out_dir: Path, fingerprint: dict) -> dict | None:
    """The corpus.json record when `out_dir` already holds this exact corpus, complete; else None."""
    try:
        record = json.loads((out_dir / "corpus.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if {k: record.get(k) for k in fingerprint} != fingerprint:
        return None
    meta = out_dir / "metadata.csv"
    if not meta.is_file() or sha256_file(meta) != record.get("metadata_sha256"):
        return None
    with meta.open(encoding="utf-8", newline="") as f:
        paths = [row["audio"] for row in csv.DictReader(f)]
    try:
        total = sum((out_dir / p).stat().st_size for p in paths)
    except OSError:
        return None
    return record if total == record.get("bytes") and len(paths) == record.get("n_files") else None


def _remove_stale_tmp(out_dir: Path) -> None:
    """Delete build (and moved-aside) folders left by killed runs (their pid is gone)."""
    stale = [*out_dir.parent.glob(f".{out_dir.name}.tmp-*"), *out_dir.parent.glob(f".{out_dir.name}.old-*")]
    for tmp in stale:
        try:
            os.kill(int(tmp.name.rsplit("-", 1)[1]), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass


def _log(msg: str) -> None:
    log.info("%s", msg)


def synthesize_corpus(
    out_dir: str | os.PathLike,
    langs: tuple[str, ...] | list[str] = DEFAULT_LANGS,
    n_train: int = 500,
    n_val: int = 20,
    n_test: int = 60,
    seed: int = 0,
    renditions: int = 2,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> CorpusSummary:
    """Write the demo corpus to `out_dir` (per language: n_train train clips, n_val val, n_test test).

    A complete corpus made with the same arguments is reused as is (checked through corpus.json, the
    metadata hash and the audio sizes) unless `force`. The corpus is built in a sibling folder and renamed
    into place, so a killed run never leaves a half corpus behind `out_dir`. A non-empty `out_dir` that this
    function did not make (no corpus.json) is never replaced.
    """
    start = time.monotonic()
    out_dir = Path(out_dir).absolute()
    langs = tuple(langs)
    clips = plan_corpus(langs, n_train, n_val, n_test, seed, renditions)
    metadata = _metadata_csv(clips)
    fingerprint = _fingerprint(langs, n_train, n_val, n_test, seed, renditions)
    fingerprint["metadata_sha256"] = hashlib.sha256(metadata.encode("utf-8")).hexdigest()

    if out_dir.exists():
        if not out_dir.is_dir():
            raise FileExistsError(f"{out_dir}: exists and is not a directory")
        if not force and (record := _existing_complete(out_dir, fingerprint)) is not None:
            if progress:
                _log(f"{out_dir} already holds this corpus ({record['n_files']} clips); nothing to do")
            return _summary_from(out_dir, record, time.monotonic() - start, reused=True)
        if any(out_dir.iterdir()) and not (out_dir / "corpus.json").exists():
            raise FileExistsError(
                f"{out_dir}: not empty and has no corpus.json, so it was not made by synthesize_corpus; "
                "refusing to replace it (remove it or choose another --out)"
            )

    _remove_stale_tmp(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        samples, n_bytes = _render_all(clips, tmp, out_dir, len(langs), workers, progress, start)
        sample_rate = _native_rate(tmp, clips[0])
        atomic_write_text(tmp / "metadata.csv", metadata)
        record = {
            **fingerprint,
            "sample_rate": sample_rate,
            "n_files": len(clips),
            "bytes": n_bytes,
            "summary": _summarize(clips, samples, sample_rate),
        }
        atomic_write_text(tmp / "corpus.json", json.dumps(record, ensure_ascii=False, indent=2) + "\n")
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary = _summary_from(out_dir, record, time.monotonic() - start, reused=False)
    if progress:
        _log(
            f"wrote {summary.total_clips} clips, {summary.total_seconds / 60:.1f} min of audio, "
            f"{summary.bytes / 1e6:.1f} MB in {summary.seconds_taken:.1f} s"
        )
    return summary


def _render_all(
    clips: list[Clip],
    tmp: Path,
    out_dir: Path,
    n_langs: int,
    workers: int | None,
    progress: bool,
    start: float,
) -> tuple[dict[str, int], int]:
    """Render every clip into `tmp`, one task per speaker (its voice) over a process pool, progress logged
    every quarter -> (samples per clip id, bytes written)."""
    by_speaker: dict[Speaker, list[Clip]] = defaultdict(list)
    for c in clips:
        by_speaker[c.speaker].append(c)
    tasks = [
        (str(tmp), spk.voice, spk.rate, spk.pitch, [(c.id, c.audio, c.text) for c in group])
        for spk, group in by_speaker.items()
    ]
    tasks.sort(key=lambda t: -len(t[4]))  # biggest first: better load balance, same bytes either way
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    samples: dict[str, int] = {}
    n_bytes = 0
    next_report = 0.25  # progress every quarter
    if progress:
        _log(
            f"{len(clips)} clips, {n_langs} languages, {len(tasks)} speakers, {n_workers} workers -> {out_dir}"
        )
    with _pool(n_workers) as pool:
        for done in pool.imap_unordered(_render_chunk, tasks):
            for clip_id, n, size in done:
                samples[clip_id] = n
                n_bytes += size
            frac = len(samples) / len(clips)
            if progress and (frac >= next_report or len(samples) == len(clips)):
                _log(f"{len(samples)}/{len(clips)} clips ({frac:.0%}) {time.monotonic() - start:.1f} s")
                next_report = math.floor(frac * 4 + 1e-9) / 4 + 0.25
    return samples, n_bytes


def _native_rate(root: Path, clip: Clip) -> int:
    with wave.open(str(root / clip.audio), "rb") as w:
        return w.getframerate()


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished build over `out_dir`; an older corpus there is moved aside first, then deleted."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def summary_dict(summary: CorpusSummary) -> dict:
    return asdict(summary)
