"""Issue 16: compressed formats users bring. Opus (in Ogg) decodes through libsndfile; m4a/AAC (MP4, ADTS) and
WebM/Matroska are refused with the named reason `unsupported` and what to do, never as `undecodable` noise."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from components.common.audio import AudioError, decode_mono

# The first bytes of each container, as an encoder writes them (the body does not matter: refused by header).
HEADERS = {
    "clip.m4a": b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00M4A mp42isom" + b"\x00" * 64,
    "clip.mp4": b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64,
    "clip.aac": b"\xff\xf1\x50\x80\x02\x1f\xfc" + b"\x21\x00" * 40,
    "clip.webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01webm" + b"\x00" * 64,
    "clip.mka": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01matroska" + b"\x00" * 64,
}


@pytest.mark.parametrize("name", sorted(HEADERS))
def test_aac_mp4_webm_are_refused_by_name(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(HEADERS[name])
    with pytest.raises(AudioError) as e:
        decode_mono(p)
    assert e.value.reason == "unsupported"
    assert "convert" in e.value.detail and "ffmpeg" in e.value.detail


def test_a_container_is_judged_by_its_bytes_not_its_name(tmp_path):
    p = tmp_path / "really_m4a.wav"
    p.write_bytes(HEADERS["clip.m4a"])
    with pytest.raises(AudioError, match="MP4"):
        decode_mono(p)


def test_opus_in_ogg_decodes(tmp_path):
    if "OPUS" not in sf.available_subtypes("OGG"):
        pytest.skip("this libsndfile has no Opus")
    t = np.arange(48000) / 48000
    sf.write(
        tmp_path / "clip.opus",
        (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
        48000,
        format="OGG",
        subtype="OPUS",
    )
    x = decode_mono(tmp_path / "clip.opus")
    assert abs(len(x) - 16000) < 400 and 0.1 < np.abs(x).max() < 0.5
