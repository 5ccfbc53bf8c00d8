"""Issue 15's data path: what a careless or hostile dataset must not get past the data stage.

Each test builds its own tiny dataset; GX runs once per validated dataset (a few seconds each).
"""

from __future__ import annotations

import json
import os
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from components.build_manifest.core import build_manifests
from components.common.audio import AudioError, probe_audio
from components.common.manifest import read_manifest
from components.materialize_data.core import dvc_md5
from components.validate_data.core import validate_dataset


def _tone(sr: int = 16000, seconds: float = 0.8, freq: float = 220.0) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(sr * seconds)) / sr)).astype(np.float32)


def _jsonl(root: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (root / "metadata.jsonl").write_text(text, encoding="utf-8")


def _manifest_rows(out: Path) -> list[dict]:
    return [r for s in ("train", "val", "test") for r in read_manifest(out / f"{s}.jsonl")]


def _speakers(root: Path, n: int, lang: str = "es-ES", text: str = "Hola, buenos días.") -> list[dict]:
    (root / "clips").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        sf.write(root / "clips" / f"s{i}.wav", _tone(freq=200 + 37 * i), 16000)
        rows.append({"audio": f"clips/s{i}.wav", "text": text, "lang": lang, "speaker": f"spk{i}"})
    return rows


# ------------------------------------------------------------------------------------ finding 7: dropped rows


def test_rows_failing_hard_checks_never_reach_a_manifest_even_when_tolerated(tmp_path):
    root = tmp_path / "data"
    rows = _speakers(root, 8)
    sf.write(root / "clips" / "long.wav", _tone(seconds=31.0), 16000)
    rows += [
        {"audio": "clips/s0.wav", "text": "Здравей.", "lang": "es-ES", "speaker": "spk0"},  # wrong script
        {"audio": "clips/long.wav", "text": "Hola " * 40, "lang": "es-ES", "speaker": "spk1"},  # too long
        {"audio": "clips/s2.wav", "text": "Hola.", "lang": "xx-XX", "speaker": "spk2"},  # unknown lang
    ]
    rows[8]["id"], rows[9]["id"], rows[10]["id"] = "bad_script", "bad_long", "bad_lang"
    for i, r in enumerate(rows[:8]):
        r["id"] = f"ok{i}"
    _jsonl(root, rows)
    report = tmp_path / "val"
    res = validate_dataset(root, report, max_failed_fraction=0.5, data_docs=False)
    assert res.status == "warned" and res.passed
    rejected = json.loads((report / "validation.json").read_text())["rejected_rows"]
    assert {r["id"] for r in rejected} >= {"bad_script", "bad_long", "bad_lang"}

    out = tmp_path / "m"
    built = build_manifests(root, out, validation=report / "validation.json", workers=1)
    ids = {r["id"] for r in _manifest_rows(out)}
    assert not ids & {"bad_script", "bad_long", "bad_lang"}
    dropped = {s["id"]: s["reason"] for s in built.skipped}
    assert "text_script" in dropped["bad_script"]
    assert "duration_in_range" in dropped["bad_long"]
    assert "lang_known" in dropped["bad_lang"]


# ---------------------------------------------------------------------- finding 7: leakage across speakers


def test_identical_audio_under_two_speakers_is_a_hard_error_and_never_splits(tmp_path):
    root = tmp_path / "data"
    rows = _speakers(root, 10)
    (root / "clips" / "copy.wav").write_bytes((root / "clips" / "s3.wav").read_bytes())
    rows.append(
        {"audio": "clips/copy.wav", "text": "Hola, buenos días.", "lang": "es-ES", "speaker": "other"}
    )
    _jsonl(root, rows)
    res = validate_dataset(root, tmp_path / "val", data_docs=False)
    assert not res.passed
    dup = [f for f in res.failures if f.check == "audio_unique"]
    assert {f.file for f in dup} == {"clips/s3.wav", "clips/copy.wav"}
    assert all(f.severity == "error" for f in dup)

    out = tmp_path / "m"
    built = build_manifests(root, out, val_ratio=0.3, test_ratio=0.3, workers=1)
    audio = [r["id"] for r in _manifest_rows(out)]
    assert "copy" not in audio and "clips__s3" not in audio
    assert sum("audio_unique" in s["reason"] for s in built.skipped) == 2

    kept = build_manifests(root, tmp_path / "k", duplicate_audio="keep_first", workers=1)
    ids = {r["id"] for r in _manifest_rows(tmp_path / "k")}
    assert "clips__s3" in ids and "clips__copy" not in ids
    assert any("keep_first" in s["reason"] for s in kept.skipped)


# --------------------------------------------------------------------------------- finding 8: size bombs


def _wav_header(sr: int, channels: int, bits: int, data_bytes: int) -> bytes:
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, sr, sr * align, align, bits)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + (b"data" + struct.pack("<I", data_bytes))
    )


def test_size_bombs_are_refused_from_the_header_before_decoding(tmp_path):
    # 1 Hz, 1 M frames: ~64 GB once resampled to 16 kHz, 1 MB on disk
    bomb = tmp_path / "one_hz.wav"
    bomb.write_bytes(_wav_header(1, 1, 8, 1 << 20) + bytes(1 << 20))
    with pytest.raises(AudioError) as e:
        probe_audio(bomb)
    assert e.value.reason == "too_large"

    # 20 minutes of silence as FLAC: a few kB on disk, 77 MB as float32; the cap (here 60 s) comes first
    flac = tmp_path / "silence.flac"
    with sf.SoundFile(flac, "w", 16000, 1, "PCM_16", format="FLAC") as f:
        block = np.zeros(16000 * 60, np.int16)
        for _ in range(20):
            f.write(block)
    tracemalloc.start()
    try:
        with pytest.raises(AudioError) as e:
            probe_audio(flac, max_seconds=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert e.value.reason == "too_large"
    assert "1200" in str(e.value)
    assert peak < 8 << 20  # nothing near the decoded size was allocated


def _die_on_three(x: int) -> int:
    if x == 3:
        os._exit(9)  # what the kernel's OOM killer leaves behind: a worker gone without an exception
    return x * 10


def test_a_dead_worker_is_a_named_failure_for_its_item_only():
    from components.common.pool import map_guarded

    got = map_guarded(_die_on_three, list(range(8)), workers=2, on_crash=lambda x, why: f"crashed {x}: {why}")
    assert got[:3] == [0, 10, 20] and got[4:] == [40, 50, 60, 70]
    assert got[3].startswith("crashed 3: worker_died")


# ------------------------------------------------------------------------------------ finding 9: NUL, U+2028


def test_nul_bytes_and_line_separators_are_named_row_errors_not_crashes(tmp_path):
    root = tmp_path / "data"
    rows = _speakers(root, 4)
    rows[1]["text"] = "Hola\u2028adiós."  # a raw U+2028 inside a JSON string
    rows[2]["audio"] = "clips/s2\x00.wav"  # a NUL byte in a path
    rows[3]["text"] = "Hola\u0085."
    _jsonl(root, rows)
    assert len((root / "metadata.jsonl").read_text(encoding="utf-8").split("\n")) == 5
    res = validate_dataset(root, tmp_path / "val", data_docs=False)
    by_line = {}
    for f in res.failures:
        by_line.setdefault(f.line, []).append(f)
    assert res.n_rows == 4 and 1 not in by_line
    assert any("U+2028" in f.reason for f in by_line[2])
    assert any("NUL" in f.reason for f in by_line[3])
    assert any("U+0085" in f.reason for f in by_line[4])

    out = tmp_path / "m"
    built = build_manifests(root, out, workers=1)
    assert {r["id"] for r in _manifest_rows(out)} == {"clips__s0"}
    assert {s["line"] for s in built.skipped} == {2, 3, 4}


# ------------------------------------------------------------------------------- finding 10: data md5


def test_data_md5_follows_symlinks_and_hidden_files_that_the_data_stage_reads(tmp_path):
    root = tmp_path / "data"
    (root / "clips" / ".hidden").mkdir(parents=True)
    sf.write(root / "clips" / "a.wav", _tone(freq=300), 16000)
    sf.write(root / "clips" / "b.wav", _tone(freq=500), 16000)
    sf.write(root / "clips" / ".hidden" / "h.wav", _tone(freq=700), 16000)
    os.symlink("a.wav", root / "clips" / "link.wav")
    _jsonl(
        root,
        [
            {"audio": "clips/link.wav", "text": "Hola.", "lang": "es-ES", "speaker": "x"},
            {"audio": "clips/.hidden/h.wav", "text": "Hola.", "lang": "es-ES", "speaker": "y"},
        ],
    )
    first = dvc_md5(root)  # the data steps' cache key (materialize_data)
    os.unlink(root / "clips" / "link.wav")
    os.symlink("b.wav", root / "clips" / "link.wav")  # same names, other audio read
    second = dvc_md5(root)
    assert second != first
    sf.write(root / "clips" / ".hidden" / "h.wav", _tone(freq=900), 16000)
    assert dvc_md5(root) != second


# ------------------------------------------------------------------- finding 11: real text, aliases, ids


@pytest.mark.parametrize(
    "text, lang, ok",
    [
        (
            "我们坐M2路公交车去WHO总部，2024年。",
            "zh-CN",
            True,
        ),  # FLEURS-style: a bus line, an acronym, digits
        ("東京でiPhone 15を買いました。", "ja-JP", True),
        ("서울에서 KTX를 탔어요.", "ko-KR", True),
        ("Καλημέρα Здравей", "el-GR", False),  # Cyrillic in Greek: a wrong label, not a loan word
        ("Hola مرحبا", "es-ES", False),
        ("Привет world", "ru-RU", False),
        ("我们 привет", "zh-CN", False),  # Cyrillic in Chinese text is still wrong
    ],
)
def test_script_check_allows_latin_in_cjk_and_stays_strict_elsewhere(text, lang, ok):
    from components.validate_data.core import invalid_characters

    assert (invalid_characters(text, lang) == "") is ok


def test_locale_aliases_and_two_formats_of_one_stem(tmp_path):
    root = tmp_path / "data"
    (root / "clips").mkdir(parents=True)
    for i, ext in enumerate(("flac", "wav")):
        sf.write(root / "clips" / f"clip.{ext}", _tone(freq=250 + 50 * i), 16000)
    rows = [
        {"audio": "clips/clip.flac", "text": "Hello there.", "lang": "en", "speaker": "a"},
        {"audio": "clips/clip.wav", "text": "Hello again.", "lang": "en-US", "speaker": "b"},
    ]
    _jsonl(root, rows)
    res = validate_dataset(root, tmp_path / "val", data_docs=False)
    assert res.passed and res.rows_per_lang == {"en-US": 2}
    out = tmp_path / "m"
    build_manifests(root, out, val_ratio=0, test_ratio=0, validation=tmp_path / "val" / "validation.json")
    got = _manifest_rows(out)
    assert len({r["id"] for r in got}) == 2
    assert {r["lang"] for r in got} == {"en-US"} and {r["target_lang"] for r in got} == {"en-US"}


# ---------------------------------------------------------- finding 12: a shared output folder, two builds


def test_two_builds_into_one_folder_leave_one_consistent_set(tmp_path):
    import threading

    root = tmp_path / "data"
    _jsonl(root, _speakers(root, 6))
    out = tmp_path / "shared"
    errors: list[BaseException] = []

    def build(seed: int) -> None:
        try:
            build_manifests(root, out, seed=seed, val_ratio=0.2, test_ratio=0.2, workers=1)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=build, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    import hashlib

    for split, sha in summary["manifest_sha256"].items():  # the three files are one run's set
        assert hashlib.sha256((out / f"{split}.jsonl").read_bytes()).hexdigest() == sha
    assert not [p.name for p in out.rglob("*.tmp")]
    assert len(_manifest_rows(out)) == 6
