"""build_manifest: 16 kHz mono PCM16 audio, speaker-disjoint deterministic splits, honest skip accounting."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from components.build_manifest.core import ManifestBuildError, assign_speakers, build_manifests
from components.common.manifest import read_manifest

LANGS = {"el-GR": "Γειά σου.", "bg-BG": "Здравей.", "es-ES": "Hola."}
FORMATS = [("wav", 16000, 1), ("flac", 22050, 1), ("ogg", 16000, 1), ("wav", 44100, 2)]


def make_corpus(root: Path, speakers: int = 5, utts: int = 3, split: bool = False) -> list[dict]:
    """LANGS x speakers x utts clips in mixed formats/rates/channels (45 clips by default: pool path)."""
    (root / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for lang, text in LANGS.items():
        for s in range(speakers):
            for u in range(utts):
                ext, sr, ch = FORMATS[(s + u) % len(FORMATS)]
                n = int(sr * (0.4 + 0.1 * u))
                x = (0.2 * rng.standard_normal((n, ch))).astype(np.float32)
                name = f"clips/{lang}-{s}-{u}.{ext}"
                sf.write(root / name, x if ch > 1 else x[:, 0], sr)
                row = {"audio": name, "text": text, "lang": lang, "speaker": f"{lang}-spk{s}"}
                if split:
                    row["split"] = ["train", "train", "train", "val", "test"][s % 5]
                rows.append(row)
    write_rows(root, rows)
    return rows


def write_rows(root: Path, rows: list[dict]) -> None:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus") / "data"
    rows = make_corpus(root)
    (root / "clips" / "junk.wav").write_bytes(b"not audio" * 40)
    rows += [
        {"audio": "clips/junk.wav", "text": "Hola.", "lang": "es-ES", "speaker": "x"},
        {"audio": "clips/gone.wav", "text": "Hola.", "lang": "es-ES", "speaker": "x"},
        {"audio": "../escape.wav", "text": "Hola.", "lang": "es-ES", "speaker": "x"},
    ]
    write_rows(root, rows)
    return root


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("manifests")
    return build_manifests(corpus, out, seed=0, val_ratio=0.2, test_ratio=0.2, workers=2)


def test_manifests_follow_the_contract(built):
    rows = {s: read_manifest(p) for s, p in built.manifests.items()}
    assert sum(len(r) for r in rows.values()) == 45
    for split, manifest in rows.items():
        raw = [json.loads(line) for line in built.manifests[split].read_text().splitlines()]
        for line, row in zip(raw, manifest, strict=True):
            assert set(line) == {"audio_filepath", "duration", "text", "lang", "target_lang", "speaker", "id"}
            assert line["audio_filepath"] == f"audio/{line['id']}.wav"
            assert line["target_lang"] == line["lang"] and line["text"] == LANGS[line["lang"]]
            info = sf.info(row["audio_filepath"])
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert line["duration"] == pytest.approx(info.frames / 16000, abs=1e-4)
    # a 0.5 s clip at 22.05 kHz becomes 8000 samples at 16 kHz
    el = {r["id"]: r for s in rows.values() for r in s}["clips__el-GR-0-1"]
    assert el["duration"] == pytest.approx(0.5, abs=1e-3)


def test_splits_are_speaker_disjoint_and_cover_every_language(built):
    speakers = {s: {r["speaker"] for r in read_manifest(p)} for s, p in built.manifests.items()}
    assert not (
        speakers["train"] & speakers["val"]
        or speakers["train"] & speakers["test"]
        or speakers["val"] & speakers["test"]
    )
    for split in ("train", "val", "test"):
        assert set(built.counts[split]) == set(LANGS), split
    assert built.split_source == "seeded" and built.warnings == []
    summary = json.loads(built.summary_path.read_text())
    assert summary["counts"] == built.counts and summary["totals"] == built.totals()
    assert summary["hours"]["train"]["el-GR"] == pytest.approx(
        sum(r["duration"] for r in read_manifest(built.manifests["train"]) if r["lang"] == "el-GR") / 3600,
        rel=1e-4,
    )


def test_bad_rows_are_skipped_with_reasons(built):
    summary = json.loads(built.summary_path.read_text())
    reasons = {s["audio"]: s["reason"] for s in summary["skipped"]}
    assert summary["n_skipped"] == built.n_skipped == 3
    assert reasons["clips/junk.wav"].startswith("undecodable")
    assert reasons["clips/gone.wav"].startswith("missing")
    assert "escapes the dataset root" in reasons["../escape.wav"]
    assert not (built.out_dir / "audio" / "clips__junk.wav").exists()


def test_deterministic_and_seeded(corpus, built, tmp_path):
    again = build_manifests(corpus, tmp_path / "a", seed=0, val_ratio=0.2, test_ratio=0.2, workers=1)
    for s in ("train", "val", "test"):
        assert again.manifests[s].read_text() == built.manifests[s].read_text()
    other = build_manifests(corpus, tmp_path / "b", seed=1, val_ratio=0.2, test_ratio=0.2, workers=1)
    assert other.manifests["test"].read_text() != built.manifests["test"].read_text()


def test_rerun_reuses_converted_clips_and_prunes_stale_ones(corpus, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(corpus, data)
    out = tmp_path / "m"
    first = build_manifests(data, out, langs=["el-GR"], workers=1)
    assert (first.n_converted, first.n_reused) == (15, 0)
    second = build_manifests(data, out, langs="el-GR", workers=1)
    assert (second.n_converted, second.n_reused) == (0, 15)
    sf.write(data / "clips" / "el-GR-0-0.wav", np.full(8000, 0.1, np.float32), 16000)  # new content
    third = build_manifests(data, out, langs=["el-GR"], workers=1)
    assert (third.n_converted, third.n_reused) == (1, 14)
    index = json.loads((out / "sources.json").read_text())
    assert len(index["clips__el-GR-0-0"]["sha256"]) == 64 and index["clips__el-GR-0-0"]["duration"] == 0.5
    rows = list(csv.DictReader(open(data / "metadata.csv", encoding="utf-8")))
    write_rows(data, [r for r in rows if r["audio"] != "clips/el-GR-1-1.ogg"])
    fourth = build_manifests(data, out, langs=["el-GR"], workers=1)
    assert sum(fourth.totals().values()) == 14
    assert not (out / "audio" / "clips__el-GR-1-1.wav").exists()
    assert len(list((out / "audio").iterdir())) == 14
    assert json.loads((out / "summary.json").read_text())["n_excluded_by_lang"] == (len(rows) - 1) - 14


def test_declared_split_is_honoured(tmp_path):
    root = tmp_path / "data"
    make_corpus(root, speakers=5, utts=2, split=True)
    res = build_manifests(root, tmp_path / "m", workers=1)
    assert res.split_source == "declared"
    assert res.totals() == {"train": 18, "val": 6, "test": 6}
    assert {r["speaker"] for r in read_manifest(res.manifests["test"])} == {f"{lg}-spk4" for lg in LANGS}


def test_declared_split_errors_name_the_culprit(tmp_path):
    root = tmp_path / "data"
    rows = make_corpus(root, speakers=2, utts=2, split=True)
    rows[1]["split"] = "test"  # el-GR-spk0 now in train (row 0) and test (row 1)
    write_rows(root, rows)
    with pytest.raises(ManifestBuildError, match=r"speaker 'el-GR-spk0' is in more than one declared split"):
        build_manifests(root, tmp_path / "m", workers=1)
    rows[1]["split"] = "dev"
    write_rows(root, rows)
    with pytest.raises(
        ManifestBuildError, match=r"metadata.csv:3: split 'dev' is not one of train, val, test"
    ):
        build_manifests(root, tmp_path / "m", workers=1)
    rows[1]["split"] = "train"
    rows[1]["id"] = rows[0]["id"] = "same"
    write_rows(root, rows)
    with pytest.raises(ManifestBuildError, match=r"metadata.csv:3: duplicate id 'same' \(first on line 2\)"):
        build_manifests(root, tmp_path / "m", workers=1)


def test_bad_parameters(corpus, tmp_path):
    with pytest.raises(ValueError, match="val_ratio"):
        build_manifests(corpus, tmp_path, val_ratio=0.6, test_ratio=0.5)
    with pytest.raises(ManifestBuildError, match="no rows for langs"):
        build_manifests(corpus, tmp_path, langs=["fr-FR"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.wav").write_bytes(b"junk")
    write_rows(bad, [{"audio": "a.wav", "text": "x", "lang": "en-US", "speaker": "s"}])
    with pytest.raises(
        ManifestBuildError, match="no usable clips, all 1 rows skipped .line 2 a.wav: undecodable"
    ):
        build_manifests(bad, tmp_path / "out")
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_assign_speakers_ratios_and_cross_language_speakers():
    utts = [("el-GR", f"s{i}") for i in range(50) for _ in range(10)]
    split, warnings = assign_speakers(utts, seed=3, val_ratio=0.1, test_ratio=0.2)
    per = Counter(split[s] for _, s in utts)
    assert per["test"] == pytest.approx(100, abs=10) and per["val"] == pytest.approx(50, abs=10)
    assert warnings == []
    assert assign_speakers(list(reversed(utts)), 3, 0.1, 0.2)[0] == split  # row order does not matter
    # a speaker recorded in two languages keeps one split; a language with two speakers cannot give test
    both = [("el-GR", "a"), ("el-GR", "b"), ("el-GR", "c"), ("es-ES", "a"), ("es-ES", "d")]
    split, warnings = assign_speakers(both, seed=0, val_ratio=0.0, test_ratio=0.3)
    assert set(split) == {"a", "b", "c", "d"}
    el = [split[s] for s in "abc"]
    assert el.count("test") == 1 and el.count("train") == 2  # 1 of 3 speakers is closest to 30%
    es = [split[s] for s in "ad"]
    assert es.count("test") == 1 or any(w.startswith("es-ES: no test") for w in warnings)
