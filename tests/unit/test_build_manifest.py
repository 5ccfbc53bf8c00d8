"""build_manifest: 16 kHz mono PCM16 audio, speaker-disjoint deterministic splits, honest skip accounting."""

from __future__ import annotations

import csv
import json
import os
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
    # a shared id is a row error (both rows dropped, named), not the whole dataset's
    res = build_manifests(root, tmp_path / "m", workers=1)
    reasons = {s["line"]: s["reason"] for s in res.skipped}
    assert reasons[2] == "id_unique: id 'same' also on line(s) 3"
    assert reasons[3] == "id_unique: id 'same' also on line(s) 2"


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


# ------------------------------------------------------------- malformed files, SPHERE, raw PCM, tarred


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """Three good speakers per language plus one file of every malformed kind (each a row of its own)."""
    root = tmp_path_factory.mktemp("messy") / "data"
    rows = make_corpus(root, speakers=3, utts=1)
    clips = root / "clips"
    good = (clips / "es-ES-0-0.wav").read_bytes()
    sf.write(clips / "sphere.sph", np.full(8000, 0.1, np.float32), 16000, format="NIST", subtype="PCM_16")
    (clips / "ok.raw").write_bytes((np.full(4000, 0.1) * 32767).astype("<i2").tobytes())  # 0.5 s at 8 kHz
    sf.write(clips / "flac_named.wav", np.full(8000, 0.1, np.float32), 16000, format="FLAC")
    malformed = {
        "zero.wav": b"",
        "header_only.wav": good[:44],
        "bogus_header.wav": b"RIFF\xff\xff\xff\xffWAVEjunk" + good[44:],
        "text_named.flac": b"id,text\n1,hello\n" * 20,
        "html.mp3": b"<html><body>404 Not Found</body></html>" * 10,
        "truncated.wav": good[: len(good) // 2],
        "trunc_sphere.sph": (clips / "sphere.sph").read_bytes()[:2000],
        "undeclared.raw": (clips / "ok.raw").read_bytes(),
    }
    for name, data in malformed.items():
        (clips / name).write_bytes(data)
    for name in ["sphere.sph", "flac_named.wav", *malformed]:
        rows.append({"audio": f"clips/{name}", "text": "Hola.", "lang": "es-ES", "speaker": "es-ES-spk0"})
    rows.append(
        {
            "audio": "clips/ok.raw",
            "text": "Hola.",
            "lang": "es-ES",
            "speaker": "es-ES-spk1",
            "raw_format": "s16le",
            "raw_sample_rate": "8000",
            "raw_channels": "1",
        }
    )
    rows.append(
        {
            "audio": "clips/ok.raw",
            "text": "Hola.",
            "lang": "es-ES",
            "speaker": "es-ES-spk1",
            "id": "bad_decl",
            "raw_format": "pcm16",
            "raw_sample_rate": "8000",
            "raw_channels": "1",
        }
    )
    write_rows(root, rows)
    return root


def test_malformed_files_are_skipped_named_and_counted(messy, tmp_path):
    res = build_manifests(messy, tmp_path / "m", workers=2)
    reasons = {s["audio"]: s["reason"] for s in res.skipped}
    expected = {
        "clips/zero.wav": "empty_file",
        "clips/header_only.wav": "no_audio",
        "clips/bogus_header.wav": "undecodable",
        "clips/text_named.flac": "undecodable",
        "clips/html.mp3": "undecodable",
        "clips/truncated.wav": "truncated",
        "clips/trunc_sphere.sph": "truncated",
        "clips/undeclared.raw": "undecodable",
        "clips/ok.raw": "bad_raw_format",  # the row with the bad declaration; the declared one converts
    }
    assert {a: r.split(":")[0] for a, r in reasons.items()} == expected
    assert res.skipped_by_reason == {
        "empty_file": 1,
        "no_audio": 1,
        "undecodable": 4,
        "truncated": 2,
        "bad_raw_format": 1,
    }
    summary = json.loads(res.summary_path.read_text())
    assert summary["skipped_by_reason"] == res.skipped_by_reason and summary["n_skipped"] == 9
    assert "declare raw_format" in reasons["clips/undeclared.raw"]
    # the rest is processed: 9 good clips + SPHERE + FLAC-named-.wav + declared raw PCM
    rows = {r["id"]: r for p in res.manifests.values() for r in read_manifest(p)}
    assert len(rows) == 12 and res.n_converted == 12
    assert rows["clips__sphere"]["duration"] == pytest.approx(0.5)  # SPHERE, 16 kHz
    assert rows["clips__flac_named"]["duration"] == pytest.approx(0.5)
    assert rows["clips__ok"]["duration"] == pytest.approx(0.5)  # raw s16le declared at 8 kHz
    for r in rows.values():
        info = sf.info(r["audio_filepath"])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")


def test_raw_declaration_change_forces_reconversion(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.pcm").write_bytes((np.full(8000, 0.1) * 32767).astype("<i2").tobytes())
    row = {
        "audio": "a.pcm",
        "text": "Hola.",
        "lang": "es-ES",
        "speaker": "s",
        "split": "train",
        "raw_format": "s16le",
        "raw_sample_rate": "16000",
        "raw_channels": "1",
    }
    write_rows(root, [row])
    first = build_manifests(root, tmp_path / "m", workers=1)
    assert first.n_converted == 1 and first.hours["train"]["es-ES"] == pytest.approx(0.5 / 3600, abs=1e-6)
    assert build_manifests(root, tmp_path / "m", workers=1).n_reused == 1
    write_rows(root, [{**row, "raw_sample_rate": "8000"}])  # same bytes, declared at half the rate
    third = build_manifests(root, tmp_path / "m", workers=1)
    assert (third.n_converted, third.n_reused) == (1, 0)
    assert read_manifest(third.manifests["train"])[0]["duration"] == pytest.approx(1.0)


def _check_tarred(res, n_shards: int) -> None:
    import tarfile

    for split, rows in ((s, read_manifest(p, absolute=False)) for s, p in res.manifests.items()):
        t = res.tarred[split]
        d = res.out_dir / "tarred" / split
        assert t["shards"] == n_shards and sorted(Path(p).name for p in t["tars"]) == [
            f"audio_{i}.tar" for i in range(n_shards)
        ]
        lines = [json.loads(x) for x in (d / "tarred_audio_manifest.json").read_text().splitlines()]
        assert sorted(r["id"] for r in lines) == sorted(r["id"] for r in rows)
        for sid in range(n_shards):
            with tarfile.open(d / f"audio_{sid}.tar") as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
            shard = [r for r in lines if r["shard_id"] == sid]
            sharded = [
                json.loads(x)
                for x in (d / "sharded_manifests" / f"manifest_{sid}.json").read_text().splitlines()
            ]
            assert shard == sharded and sorted(members) == sorted(r["audio_filepath"] for r in shard)
            for r in shard:  # the tar holds exactly the converted clip
                assert (
                    members[r["audio_filepath"]] == (res.out_dir / "audio" / r["audio_filepath"]).read_bytes()
                )
                assert r["target_lang"] == r["lang"]
        sizes = [sum(r["shard_id"] == i for r in lines) for i in range(n_shards)]
        assert max(sizes) - min(sizes) <= 1


def test_tarred_shards_are_written_on_request(corpus, tmp_path):
    plain = build_manifests(corpus, tmp_path / "plain", val_ratio=0.2, test_ratio=0.2, workers=1)
    assert plain.tarred == {} and not (tmp_path / "plain" / "tarred").exists()
    res = build_manifests(corpus, tmp_path / "m", val_ratio=0.2, test_ratio=0.2, workers=1, tar_shards=2)
    _check_tarred(res, 2)
    first = {p: Path(p).read_bytes() for t in res.tarred.values() for p in t["tars"]}
    again = build_manifests(corpus, tmp_path / "m", val_ratio=0.2, test_ratio=0.2, workers=1, tar_shards=1)
    _check_tarred(again, 1)  # fewer shards: the old audio_1.tar is gone
    assert not (tmp_path / "m" / "tarred" / "train" / "audio_1.tar").exists()
    res = build_manifests(corpus, tmp_path / "m", val_ratio=0.2, test_ratio=0.2, workers=1, tar_shards=2)
    assert {p: Path(p).read_bytes() for t in res.tarred.values() for p in t["tars"]} == first  # reproducible
    build_manifests(corpus, tmp_path / "m", val_ratio=0.2, test_ratio=0.2, workers=1)
    assert not (tmp_path / "m" / "tarred" / "train").exists()
    with pytest.raises(ValueError, match="tar_shards"):
        build_manifests(corpus, tmp_path / "x", tar_shards=-1)


@pytest.mark.slow  # imports NeMo + lhotse (~10-30 s on a busy machine)
def test_tarred_shards_read_by_nemo(corpus, tmp_path):
    pytest.importorskip("nemo.collections.common.data.lhotse")
    from nemo.collections.common.data.lhotse.nemo_adapters import LazyNeMoTarredIterator

    res = build_manifests(corpus, tmp_path / "m", val_ratio=0.2, test_ratio=0.2, workers=1, tar_shards=3)
    d = res.out_dir / "tarred" / "train"
    it = LazyNeMoTarredIterator(
        [str(d / "sharded_manifests" / f"manifest_{i}.json") for i in range(3)],
        [str(d / f"audio_{i}.tar") for i in range(3)],
    )
    cuts = list(it)
    train = {r["id"]: r for r in read_manifest(res.manifests["train"])}
    assert len(cuts) == len(train)
    for cut in cuts:
        sup = cut.supervisions[0]
        row = train[cut.recording.id.removesuffix(".wav")]
        assert sup.text == row["text"] and sup.language == row["lang"]
        assert cut.recording.sampling_rate == 16000
        assert cut.duration == pytest.approx(row["duration"], abs=1e-3)
        assert cut.load_audio().shape == (1, round(row["duration"] * 16000))


def test_stat_cache_and_verify_sources(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    sf.write(root / "a.wav", np.full(8000, 0.1, np.float32), 16000)
    old = 1_600_000_000_000_000_000  # long before the index is written: not "racy"
    os.utime(root / "a.wav", ns=(old, old))
    write_rows(root, [{"audio": "a.wav", "text": "Hola.", "lang": "es-ES", "speaker": "s", "split": "train"}])
    assert build_manifests(root, tmp_path / "m", workers=1).n_converted == 1
    # same size and mtime, other content (a tool that preserves mtimes): the stat cache trusts it...
    sf.write(root / "a.wav", np.full(8000, 0.2, np.float32), 16000)
    os.utime(root / "a.wav", ns=(old, old))
    assert build_manifests(root, tmp_path / "m", workers=1).n_reused == 1
    # ... verify_sources re-hashes and converts it; a fresh mtime alone also triggers a re-hash
    assert build_manifests(root, tmp_path / "m", workers=1, verify_sources=True).n_converted == 1
    y, _ = sf.read(tmp_path / "m" / "audio" / "a.wav")
    assert y[0] == pytest.approx(0.2, abs=1e-4)
    (root / "a.wav").touch()
    again = build_manifests(root, tmp_path / "m", workers=1)
    assert (again.n_converted, again.n_reused) == (0, 1)  # touched, re-hashed, same content: reused


def test_clips_converted_by_other_code_are_converted_again(tmp_path):
    """A re-run after the resampler/encoder changed must not reuse clips the old code produced."""
    from components.build_manifest import core

    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    rows = ["audio,text,lang,speaker"]
    for i in range(4):
        sf.write(data / "a" / f"{i}.wav", 0.1 * np.sin(np.arange(8000 + 800 * i) / 7.0), 22050)
        rows.append(f"a/{i}.wav,Hola número {i}.,es-ES,s{i}")
    (data / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "m"
    assert core.build_manifests(data, out, val_ratio=0.25, test_ratio=0.25).n_converted == 4
    assert core.build_manifests(data, out, val_ratio=0.25, test_ratio=0.25).n_reused == 4
    index = json.loads((out / core.INDEX_NAME).read_text(encoding="utf-8"))
    for entry in index.values():
        entry["converter"] = "some-older-resampler/1"
    (out / core.INDEX_NAME).write_text(json.dumps(index), encoding="utf-8")
    (out / core.STATE_NAME).unlink(missing_ok=True)  # as after an upgrade: the fast path's key changed too
    again = core.build_manifests(data, out, val_ratio=0.25, test_ratio=0.25)
    assert again.n_converted == 4 and again.n_reused == 0


# ---------------------------------------------------------------- two dataset versions, one build folder
def _tone(path: Path, freq: float, when_ns: int) -> None:
    """A 0.5 s 16 kHz tone (same length = same file size for every frequency), with a given mtime: as a tar or
    zip extraction, `rsync -a` or `cp -p` leave it (they keep the archive's mtimes)."""
    sf.write(path, 0.3 * np.sin(2 * np.pi * freq * np.arange(8000) / 16000), 16000)
    os.utime(path, ns=(when_ns, when_ns))


def _peak_hz(path: Path) -> float:
    y, sr = sf.read(path)
    return float(np.argmax(np.abs(np.fft.rfft(y))) * sr / len(y))


def test_versions_under_one_data_root_never_reuse_another_versions_clip(tmp_path):
    """Issue 16: two data versions in the same data_root (data_rev empty: the folder is edited or checked out
    in place) share one build folder. v2 points clip id `u1` at another file of the same size and mtime (files
    from one archive); v3 replaces v2's file by a new one at the same path (`rsync -a`/`tar x`: a new inode,
    the old size and mtime). Each version's clip must be converted from its own audio, not reused."""
    from components.build_manifest.fanout import build_step

    root = tmp_path / "data"
    root.mkdir()
    old = 1_600_000_000_000_000_000  # long before any index is written: not "racy"
    _tone(root / "one.wav", 440.0, old)
    _tone(root / "two.wav", 1000.0, old)
    row = {"id": "u1", "text": "Hola.", "lang": "es-ES", "speaker": "s", "split": "train"}
    write_rows(root, [{**row, "audio": "one.wav"}])
    build_root, art = tmp_path / "volume", tmp_path / "art"
    clip = lambda: next(build_root.iterdir()) / "audio" / "u1.wav"  # noqa: E731 (one build folder)

    build_step(str(root), art / "v1", build_root=str(build_root), workers=1)
    assert _peak_hz(clip()) == pytest.approx(440.0, abs=5)
    write_rows(root, [{**row, "audio": "two.wav"}])  # v2: same id, another file of the same size and mtime
    build_step(str(root), art / "v2", build_root=str(build_root), workers=1)
    assert len(list(build_root.iterdir())) == 1  # one build folder per data_root: the versions share it
    assert _peak_hz(clip()) == pytest.approx(1000.0, abs=5), "v2 reused v1's clip"
    replacement = tmp_path / "new.wav"  # v3: two.wav replaced by another file (new inode, old size and mtime)
    _tone(replacement, 2000.0, old)
    os.replace(replacement, root / "two.wav")
    build_step(str(root), art / "v3", build_root=str(build_root), workers=1)
    assert _peak_hz(clip()) == pytest.approx(2000.0, abs=5), "v3 reused v2's clip"


def test_named_data_versions_get_build_folders_of_their_own(tmp_path):
    """With data_rev, materialize_data puts each version in <data_cache>/<md5>/: another data_root, so
    another build folder (nothing converted for one version can be reused by another)."""
    from components.build_manifest.fanout import build_dir_for

    cache = tmp_path / "versions"
    a, b = build_dir_for(tmp_path / "vol", cache / "a"), build_dir_for(tmp_path / "vol", cache / "b")
    assert a != b and a.parent == b.parent
