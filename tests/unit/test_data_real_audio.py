"""build_manifest over real recordings from ../shared/eval-audio (skipped cleanly when that folder is absent).

One clip per (container, sample rate) of the shared set (Opus 16 kHz, WAV at 8 / 16 / 22.05 / 24 / 44.1 kHz),
plus the same real speech re-encoded here as stereo FLAC at 48 kHz and as declared raw PCM: the decoded
duration and the 16 kHz mono output are checked against the source.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from components.build_manifest.core import build_manifests
from components.common.audio import read_audio
from components.common.languages import canonical_locales, default_prompt_dictionary
from components.common.manifest import read_manifest

EVAL_AUDIO = Path(__file__).resolve().parents[3] / "shared" / "eval-audio"


def _picked() -> list[dict]:
    if not (EVAL_AUDIO / "manifest.jsonl").is_file():
        return []
    rows = [json.loads(x) for x in (EVAL_AUDIO / "manifest.jsonl").read_text().splitlines() if x.strip()]
    picked: dict[tuple, dict] = {}
    for r in rows:
        picked.setdefault((r["format"], r["sample_rate"]), r)
    return list(picked.values())


pytestmark = pytest.mark.skipif(
    not _picked(), reason="../shared/eval-audio not present (a user's clone has none)"
)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("real") / "data"
    (root / "clips").mkdir(parents=True)
    rows, expect = [], {}
    for i, r in enumerate(_picked()):
        src = EVAL_AUDIO / r["audio_filepath"]
        name = f"clips/{i:02d}{src.suffix}"
        shutil.copyfile(src, root / name)
        rows.append(
            {"audio": name, "text": r["text"], "lang": r["lang"], "speaker": f"s{i}", "split": "train"}
        )
        data, info = read_audio(src)
        expect[name] = (info.frames, info.sample_rate, data)
    # the first clip again, as stereo 48 kHz FLAC (left = speech, right = half of it) and as raw s16le
    frames, sr, data = next(iter(expect.values()))
    mono = data[:, 0]
    sf.write(root / "clips/stereo.flac", np.stack([mono, 0.5 * mono], 1), sr, format="FLAC")
    (root / "clips/speech.raw").write_bytes((mono * 32767).astype("<i2").tobytes())
    rows.append(
        {
            "audio": "clips/stereo.flac",
            "text": rows[0]["text"],
            "lang": rows[0]["lang"],
            "speaker": "st",
            "split": "test",
        }
    )
    rows.append(
        {
            "audio": "clips/speech.raw",
            "text": rows[0]["text"],
            "lang": rows[0]["lang"],
            "speaker": "rw",
            "split": "test",
            "raw_format": "s16le",
            "raw_sample_rate": str(sr),
            "raw_channels": "1",
        }
    )
    expect["clips/stereo.flac"] = (frames, sr, None)
    expect["clips/speech.raw"] = (frames, sr, None)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    res = build_manifests(root, root.parent / "manifests", workers=1)
    return res, rows, expect


def test_real_recordings_convert_with_decoded_durations(real):
    res, rows, expect = real
    assert res.n_skipped == 0 and res.n_converted == len(rows)
    by_id = {r["id"]: r for p in res.manifests.values() for r in read_manifest(p)}
    for row in rows:
        rid = row["audio"].replace("/", "__").rsplit(".", 1)[0]
        frames, sr, _ = expect[row["audio"]]
        out = by_id[rid]
        info = sf.info(out["audio_filepath"])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), row["audio"]
        g = math.gcd(sr, 16000)
        assert info.frames == math.ceil(frames * (16000 // g) / (sr // g)), row["audio"]
        assert out["duration"] == pytest.approx(frames / sr, abs=1e-3)  # decoded, not header, duration
        canonical = canonical_locales(default_prompt_dictionary()).get(
            row["lang"], row["lang"]
        )  # en -> en-US
        assert out["target_lang"] == out["lang"] == canonical and out["text"] == row["text"]


def test_real_speech_survives_resampling(real):
    """The 16 kHz output of a real clip matches the source's band below 7 kHz (no level loss, no delay)."""
    res, rows, expect = real
    by_id = {r["id"]: r for p in res.manifests.values() for r in read_manifest(p)}
    for row in rows:
        frames, sr, data = expect[row["audio"]]
        if data is None or sr == 16000 or data.shape[1] != 1:
            continue
        out, _ = sf.read(
            by_id[row["audio"].replace("/", "__").rsplit(".", 1)[0]]["audio_filepath"], dtype="float32"
        )
        ref_rms = float(np.sqrt(np.mean(data[:, 0] ** 2)))
        out_rms = float(np.sqrt(np.mean(out**2)))
        assert out_rms == pytest.approx(ref_rms, rel=0.1), row["audio"]  # speech energy is below 7 kHz
        # same timing: the energy envelope (20 ms frames) of input and output correlates
        hop_in, hop_out = sr // 50, 320
        n = min(len(data) // hop_in, len(out) // hop_out)
        env_in = np.sqrt(np.mean(data[: n * hop_in, 0].reshape(n, hop_in) ** 2, axis=1))
        env_out = np.sqrt(np.mean(out[: n * hop_out].reshape(n, hop_out) ** 2, axis=1))
        assert np.corrcoef(env_in, env_out)[0, 1] > 0.99, row["audio"]
