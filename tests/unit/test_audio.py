"""components.common.audio: decoding every common format, refusing broken files with a named reason."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from components.common.audio import (
    AudioError,
    RawFormat,
    decode,
    load_audio,
    probe_audio,
    read_audio,
    read_samples,
    read_wav_fast,
    resample,
    to_mono,
    write_wav16,
)

EVAL_AUDIO = Path(__file__).resolve().parents[3] / "shared" / "eval-audio"


def tone(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(sr * seconds)) / sr)).astype(np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    x = tone(440, 16000, 0.5)
    c = {
        name: d / name
        for name in [
            "good.wav",
            "empty.wav",
            "header_only.wav",
            "junk.wav",
            "truncated.wav",
            "stereo44.wav",
            "u8.wav",
            "float.wav",
            "nan.wav",
            "good.flac",
            "good.ogg",
            "good.mp3",
        ]
    }
    sf.write(c["good.wav"], x, 16000, subtype="PCM_16")
    c["empty.wav"].write_bytes(b"")
    good = c["good.wav"].read_bytes()
    c["header_only.wav"].write_bytes(good[:44])
    c["junk.wav"].write_bytes(b"this is not audio, just text with a .wav name\n" * 20)
    c["truncated.wav"].write_bytes(good[: len(good) // 2])
    sf.write(c["stereo44.wav"], np.stack([tone(440, 44100, 0.5), tone(440, 44100, 0.5, 0.1)], 1), 44100)
    sf.write(c["u8.wav"], tone(440, 8000, 0.5), 8000, subtype="PCM_U8")
    sf.write(c["float.wav"], x, 16000, subtype="FLOAT")
    bad = x.copy()
    bad[100] = np.nan
    sf.write(c["nan.wav"], bad, 16000, subtype="FLOAT")
    sf.write(c["good.flac"], x, 16000)
    sf.write(c["good.ogg"], x, 16000)  # Vorbis
    if "MP3" in sf.available_formats():
        sf.write(c["good.mp3"], tone(440, 16000, 1.0), 16000)
    return c


@pytest.mark.parametrize(
    "name, sr, channels, frames, fmt, subtype",
    [
        ("good.wav", 16000, 1, 8000, "WAV", "PCM_16"),
        ("stereo44.wav", 44100, 2, 22050, "WAV", "PCM_16"),
        ("u8.wav", 8000, 1, 4000, "WAV", "PCM_U8"),
        ("float.wav", 16000, 1, 8000, "WAV", "FLOAT"),
        ("good.flac", 16000, 1, 8000, "FLAC", "PCM_16"),
        ("good.ogg", 16000, 1, 8000, "OGG", "VORBIS"),
    ],
)
def test_probe_reads_decoded_properties(clips, name, sr, channels, frames, fmt, subtype):
    info = probe_audio(clips[name])
    assert (info.sample_rate, info.channels, info.frames, info.format, info.subtype) == (
        sr,
        channels,
        frames,
        fmt,
        subtype,
    )
    assert info.duration == pytest.approx(frames / sr)
    assert info.peak == pytest.approx(0.5, abs=0.03)  # lossy codecs overshoot a little


def test_mp3_decodes_when_libsndfile_supports_it(clips):
    if "MP3" not in sf.available_formats():
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} has no MP3")
    info = probe_audio(clips["good.mp3"])
    assert info.format == "MP3" and info.sample_rate == 16000
    assert info.duration == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(
    "name, reason, words",
    [
        ("empty.wav", "empty_file", "0 bytes"),
        ("header_only.wav", "no_audio", "no audio frames"),
        ("junk.wav", "undecodable", "cannot open"),
        ("truncated.wav", "truncated", "declares 16000 bytes"),
        ("nan.wav", "non_finite", "1 NaN"),
        ("does_not_exist.wav", "missing", "not found"),
    ],
)
def test_broken_files_raise_named_reason(clips, name, reason, words):
    path = clips.get(name, Path(clips["good.wav"]).parent / name)
    with pytest.raises(AudioError) as e:
        probe_audio(path)
    assert e.value.reason == reason
    assert words in str(e.value) and str(path) in str(e.value)
    with pytest.raises(AudioError):
        load_audio(path)


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = tone(300, 16000, 0.25, 0.6), tone(700, 16000, 0.25, 0.2)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 16000, subtype="FLOAT")
    mono = load_audio(tmp_path / "s.wav")
    assert mono.dtype == np.float32 and mono.ndim == 1
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-6)
    assert to_mono(np.ones((3, 1), np.float32)).shape == (3,)


def test_resample_44k1_keeps_tone_and_removes_aliases():
    sr = 44100
    out = resample(tone(440, sr, 1.0), sr, 16000)
    assert out.dtype == np.float32 and len(out) == math.ceil(sr * 160 / 441)
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) * 16000 / len(out) == pytest.approx(440, abs=2)
    # 10 kHz is above the 8 kHz Nyquist of the target: a polyphase low-pass removes it instead of folding
    # it back to 6 kHz (what naive decimation would do).
    alias = resample(tone(10000, sr, 1.0), sr, 16000)
    assert np.sqrt(np.mean(alias[200:-200] ** 2)) < 0.01


def test_load_audio_resamples_u8_8k(clips):
    audio = load_audio(clips["u8.wav"])
    assert audio.dtype == np.float32 and len(audio) == 8000
    assert np.abs(audio).max() == pytest.approx(0.5, abs=0.03)


def test_write_wav16_roundtrip_clips_and_is_atomic(tmp_path):
    x = np.concatenate([tone(440, 16000, 0.1), [1.7, -3.0]]).astype(np.float32)
    write_wav16(tmp_path / "sub" / "o.wav", x)
    info = sf.info(tmp_path / "sub" / "o.wav")
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", len(x))
    y, _ = sf.read(tmp_path / "sub" / "o.wav", dtype="float32")
    np.testing.assert_allclose(y[:-2], x[:-2], atol=1 / 32768 + 1e-6)
    assert y[-2] == pytest.approx(1.0, abs=1e-4) and y[-1] == -1.0
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["o.wav"]  # no temp file left behind
    with pytest.raises(ValueError, match="mono"):
        write_wav16(tmp_path / "st.wav", np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        write_wav16(tmp_path / "nan.wav", np.array([0.0, np.nan], np.float32))
    assert not (tmp_path / "st.wav").exists() and not (tmp_path / "nan.wav").exists()


# ------------------------------------------------------------------------ real recordings (../shared)


def _eval_clips() -> list[dict]:
    if not (EVAL_AUDIO / "manifest.jsonl").is_file():
        return []
    rows = [json.loads(line) for line in (EVAL_AUDIO / "manifest.jsonl").read_text().splitlines() if line]
    picked: dict[tuple, dict] = {}
    for r in rows:  # one clip per (container, rate): Opus, and WAV at 8 / 16 / 22.05 / 24 / 44.1 kHz
        picked.setdefault((r["format"], r["sample_rate"]), r)
    return list(picked.values())


@pytest.mark.skipif(not _eval_clips(), reason="../shared/eval-audio not present (a user's clone has none)")
@pytest.mark.parametrize("row", _eval_clips(), ids=lambda r: f"{r['format']}@{r['sample_rate']}")
def test_real_recordings_probe_and_load(row):
    path = EVAL_AUDIO / row["audio_filepath"]
    data, info = read_audio(path)
    assert info.sample_rate == row["sample_rate"] and info.channels == row["channels"]
    assert info.frames == len(data) and info.duration == pytest.approx(info.frames / info.sample_rate)
    assert info.duration == pytest.approx(row["duration"], abs=0.05)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    g = math.gcd(info.sample_rate, 16000)
    assert len(audio) == math.ceil(info.frames * (16000 // g) / (info.sample_rate // g))
    assert np.isfinite(audio).all() and 0 < np.abs(audio).max() <= 1.0 + 1e-3


# ------------------------------------------------ more containers, SPHERE, headerless PCM, malformed files


@pytest.mark.parametrize(
    "fmt, subtype, ext",
    [
        ("WAV", "PCM_24", "wav"),
        ("WAV", "PCM_32", "wav"),
        ("WAV", "DOUBLE", "wav"),
        ("AIFF", "PCM_16", "aiff"),
        ("OGG", "OPUS", "opus"),
        ("NIST", "PCM_16", "sph"),
        ("NIST", "PCM_24", "sph"),
    ],
)
def test_more_containers_decode(tmp_path, fmt, subtype, ext):
    x = tone(440, 16000, 0.5)
    path = tmp_path / f"a.{ext}"
    sf.write(path, x, 16000, format=fmt, subtype=subtype)
    data, info = read_audio(path)
    assert (info.format, info.subtype, info.sample_rate, info.channels) == (fmt, subtype, 16000, 1)
    assert info.frames == 8000 and info.extension_ok
    if subtype != "OPUS":  # lossy: only check the lossless ones sample by sample
        np.testing.assert_allclose(data[:, 0], x, atol=1e-4)


def _sphere(path: Path, frames: int = 8000, sr: int = 16000) -> bytes:
    sf.write(path, tone(300, sr, frames / sr), sr, format="NIST", subtype="PCM_16")
    return path.read_bytes()


def test_sphere_malformed_files_are_named(tmp_path):
    good = _sphere(tmp_path / "good.sph")
    (tmp_path / "trunc.sph").write_bytes(good[: 1024 + 4000])
    (tmp_path / "header.sph").write_bytes(good[:1024])
    shorten = good[:1024].replace(b"sample_coding -s3 pcm", b"sample_coding -s7 shorten")
    (tmp_path / "shorten.sph").write_bytes(shorten + good[1024:])
    (tmp_path / "bogus.sph").write_bytes(b"NIST_1A\n   1024\nthis is not a header\n" + b"\x00" * 2000)
    expected = {
        "trunc.sph": ("truncated", "declares 8000 frames"),
        "header.sph": ("truncated", "file holds 0"),
        "shorten.sph": ("unsupported", "'pcm,embedded-shorten" if b"embedded" in shorten else "shorten"),
        "bogus.sph": ("undecodable", "cannot open"),
    }
    for name, (reason, words) in expected.items():
        with pytest.raises(AudioError) as e:
            read_audio(tmp_path / name)
        assert e.value.reason == reason, (name, e.value)
        assert words in str(e.value) and name in str(e.value)


@pytest.mark.parametrize(
    "encoding, dtype, scale",
    [("s16le", "<i2", 32767), ("s16be", ">i2", 32767), ("s32le", "<i4", 2**31 - 1), ("f32le", "<f4", 1.0)],
)
def test_raw_pcm_with_declared_format(tmp_path, encoding, dtype, scale):
    x = np.stack([tone(440, 8000, 0.5), tone(440, 8000, 0.5, 0.25)], 1)  # stereo, interleaved
    path = tmp_path / "a.raw"
    (x * scale).astype(dtype).tofile(path)
    raw = RawFormat.parse(encoding, "8000", "2")
    data, info = read_audio(path, raw)
    assert (info.format, info.sample_rate, info.channels, info.frames) == ("RAW", 8000, 2, 4000)
    np.testing.assert_allclose(data, x, atol=1e-4)
    audio, _ = decode(path, raw=raw)
    assert len(audio) == 8000  # 0.5 s at 16 kHz, channels averaged


def test_raw_pcm_problems_are_named(tmp_path):
    pcm = (tone(440, 16000, 0.5) * 32767).astype("<i2").tobytes()
    (tmp_path / "a.raw").write_bytes(pcm)
    (tmp_path / "odd.raw").write_bytes(pcm[:-1])
    sf.write(tmp_path / "wav.raw", tone(440, 16000, 0.5), 16000, format="WAV")
    s16 = RawFormat.parse("s16le", 16000)
    cases = [
        ("a.raw", None, "undecodable", "declare raw_format"),
        ("odd.raw", s16, "truncated", "not a whole number of s16le x 1 ch frames"),
        ("wav.raw", s16, "raw_has_header", "starts with a WAV header"),
        ("a.raw", RawFormat("s17le", 16000, 1), "bad_raw_format", "'s17le'"),
    ]
    for name, raw, reason, words in cases:
        with pytest.raises(AudioError) as e:
            read_audio(tmp_path / name, raw)
        assert e.value.reason == reason and words in str(e.value), (name, e.value)
    # a raw file that is really a WAV is decoded from its header when nothing is declared
    assert probe_audio(tmp_path / "wav.raw").format == "WAV"
    for bad, field in [
        (("s16", 16000, 1), "raw_format"),
        (("s16le", "fast", 1), "raw_sample_rate"),
        (("s16le", 16000, 0), "raw_channels"),
        (("s16le", 10, 1), "raw_sample_rate"),
    ]:
        with pytest.raises(ValueError, match=field):
            RawFormat.parse(*bad)
    assert RawFormat.parse("S16LE", "16000.0", "") == RawFormat("s16le", 16000, 1)


def test_wrong_extension_is_decoded_by_content_and_reported(tmp_path):
    x = tone(440, 16000, 0.5)
    sf.write(tmp_path / "really_flac.wav", x, 16000, format="FLAC")
    sf.write(tmp_path / "really_ogg.mp3", x, 16000, format="OGG")
    (tmp_path / "text.flac").write_bytes(b"1,2,3\n" * 100)
    info = probe_audio(tmp_path / "really_flac.wav")
    assert info.format == "FLAC" and not info.extension_ok and info.frames == 8000
    assert not probe_audio(tmp_path / "really_ogg.mp3").extension_ok
    with pytest.raises(AudioError) as e:
        probe_audio(tmp_path / "text.flac")
    assert e.value.reason == "undecodable"


def test_level_statistics(tmp_path):
    x = tone(440, 16000, 1.0, 0.5)
    sf.write(tmp_path / "tone.wav", x, 16000)
    info = probe_audio(tmp_path / "tone.wav")
    assert info.rms_dbfs == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.05)
    assert info.clipped == 0.0
    sf.write(tmp_path / "hot.wav", np.clip(4 * x, -1, 1), 16000)
    assert probe_audio(tmp_path / "hot.wav").clipped > 0.5
    sf.write(tmp_path / "quiet.wav", x * 1e-4, 16000, subtype="FLOAT")
    assert probe_audio(tmp_path / "quiet.wav").rms_dbfs == pytest.approx(
        20 * math.log10(0.5e-4 / math.sqrt(2)), abs=0.1
    )
    sf.write(tmp_path / "zero.wav", np.zeros(1600, np.float32), 16000)
    assert probe_audio(tmp_path / "zero.wav").rms_dbfs == float("-inf")


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
@pytest.mark.parametrize("channels", [1, 2])
def test_fast_wav_reader_is_bit_identical_to_libsndfile(tmp_path, subtype, channels):
    """read_wav_fast (numpy, used for plain WAV) returns exactly what libsndfile decodes, for every PCM/float
    layout, in plain and WAVE_FORMAT_EXTENSIBLE headers; other layouts fall back (None)."""
    rng = np.random.default_rng(0)
    x = np.clip(rng.standard_normal((1234, channels)) * 0.4, -1, 1).astype(np.float32)
    x[0] = 1.0  # full scale and the most negative value are where conversions go wrong
    x[1] = -1.0
    for name, fmt in (("plain.wav", None), ("ext.wav", "WAVEX")):
        path = tmp_path / name
        sf.write(path, x if channels > 1 else x[:, 0], 8000, subtype=subtype, format=fmt or "WAV")
        got = read_wav_fast(path, path.read_bytes())
        assert got is not None, f"{name} {subtype} should take the fast path"
        want = sf.read(path, dtype="float32", always_2d=True)[0]
        data, sr, ch, container, sub = got
        assert (sr, ch, container, sub) == (8000, channels, "WAV", subtype)
        assert data.dtype == np.float32 and data.shape == want.shape
        np.testing.assert_array_equal(data, want)
        np.testing.assert_array_equal(read_samples(path)[0], want)  # the public path uses it


def test_fast_wav_reader_declines_what_it_does_not_know(tmp_path):
    x = tone(440, 8000, 0.2)
    sf.write(tmp_path / "a.wav", x, 8000, subtype="IMA_ADPCM")
    sf.write(tmp_path / "b.flac", x, 8000)
    for name in ("a.wav", "b.flac"):
        assert read_wav_fast(tmp_path / name, (tmp_path / name).read_bytes()) is None
    assert read_samples(tmp_path / "a.wav")[4] == "IMA_ADPCM"  # libsndfile still decodes it
    good = tmp_path / "good.wav"
    sf.write(good, x, 8000, subtype="PCM_16")
    blob = good.read_bytes()
    streaming = blob[:40] + b"\xff\xff\xff\xff" + blob[44:]  # a streaming writer's unknown data size
    assert read_wav_fast(good, streaming) is None
    with pytest.raises(AudioError) as e:
        read_wav_fast(good, blob[:-100])
    assert e.value.reason == "truncated"
