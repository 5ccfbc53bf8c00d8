"""One implementation per concept: the steps share one rule (components.common) instead of their own copies."""

from __future__ import annotations

import pytest

from components.common.settings import SettingsError, parse_att_context_size

GOOD = [
    ("[56,1]", [56, 1]),
    (" [56, 13] ", [56, 13]),
    ("56,0", [56, 0]),
    ("(70, 6)", [70, 6]),
    ([70, 6], [70, 6]),
    ((56, 1), [56, 1]),
    ("", None),
    (None, None),
    ([], None),
    ("[-1,0]", [-1, 0]),
]
BAD = ["[56]", "[56,1,2]", "fast", "[56,x1]", [56, -1], "[56,-1]", [-2, 1], "[56, 1.5]", [56.0, 1], [True, 1]]


@pytest.mark.parametrize(("value", "expected"), GOOD)
def test_parse_att_context_size_one_rule(value, expected):
    from components.evaluate_wer import core as evaluate_core
    from components.export_triton import core as export_core

    assert parse_att_context_size(value) == expected
    assert evaluate_core.parse_att_context_size(value) == expected
    assert export_core.parse_att_context_size(value) == expected


@pytest.mark.parametrize("value", BAD)
def test_parse_att_context_size_refuses_the_same_values_everywhere(value):
    from components.evaluate_wer import core as evaluate_core
    from components.export_triton import core as export_core

    with pytest.raises(SettingsError, match="att_context_size") as common:
        parse_att_context_size(value)
    with pytest.raises(ValueError, match="att_context_size") as evaluate:
        evaluate_core.parse_att_context_size(value)
    with pytest.raises(export_core.ExportError) as export:  # the step's own error type, the same message
        export_core.parse_att_context_size(value)
    assert str(common.value) == str(evaluate.value) == str(export.value)


def test_one_audio_loader_resampling_with_soxr(tmp_path):
    """The pipeline, the serving client and the tests read audio through components.common.audio.load_audio
    (soxr); a caller that needs the manifest's 16 kHz asks for strict_rate instead of keeping its own copy."""
    import numpy as np
    import soundfile as sf
    import soxr

    from components.common import asr_infer, audio
    from serving import client

    assert not hasattr(client, "load_audio") and not hasattr(asr_infer, "load_audio")
    t = np.arange(44100, dtype=np.float32) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)], axis=1) * 0.5
    sf.write(tmp_path / "a.wav", stereo, 44100, subtype="FLOAT")
    got = audio.load_audio(tmp_path / "a.wav")
    want = soxr.resample(stereo.mean(axis=1).astype(np.float32), 44100, 16000, quality="HQ")
    assert got.dtype == np.float32 and len(got) == 16000
    np.testing.assert_allclose(got[: len(want)], want[:16000], atol=1e-6)
    with pytest.raises(ValueError, match=r"a\.wav: sample rate 44100 Hz, expected 16000 Hz"):
        audio.load_audio(tmp_path / "a.wav", strict_rate=True)


def test_one_sha256_helper():
    from components.common import io
    from registry import gate_record

    assert gate_record.sha256_bytes is io.sha256_bytes
    assert io.sha256_bytes(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_one_riff_walker_in_the_gateway():
    """The gateway's streamed-WAV header parser walks chunks with components.common.audio.walk_riff: a LIST
    chunk before `fmt ` and an odd-sized chunk (padded) are skipped, as in the pipeline's reader."""
    import inspect
    import struct

    pytest.importorskip("aiohttp")
    from serving.gateway import riva

    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    pcm = b"\x01\x00\x02\x00"
    body = b"WAVE" + b"LIST" + struct.pack("<I", 3) + b"abc\x00" + b"fmt " + struct.pack("<I", 16) + fmt
    body += b"data" + struct.pack("<I", len(pcm)) + pcm
    wav = b"RIFF" + struct.pack("<I", len(body)) + body
    assert riva.strip_wav(wav) == (pcm, 16000)
    assert "walk_riff" in inspect.getsource(riva.strip_wav)
