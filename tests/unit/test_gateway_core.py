"""serving.gateway.core: keys, limits, canary routing, language mapping, audio decoding: each refusal named."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from serving.gateway.core import (
    AudioBudget,
    CanaryRouter,
    GatewayConfig,
    GatewayError,
    KeyLimiter,
    authenticate,
    decode_audio,
    load_api_keys,
    resolve_language,
    triton_error,
)


def _wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((samples * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def _named(fn, code: str, words: str) -> None:
    with pytest.raises(GatewayError) as e:
        fn()
    assert e.value.code == code and words in e.value.message, (e.value.code, e.value.message)


def test_api_keys_from_file_and_env_and_never_open(tmp_path):
    f = tmp_path / "keys"
    f.write_text("# team a\nk1\n\nk2\n")
    keys = load_api_keys(f, "k3, k4")
    assert set(keys) == {"k1", "k2", "k3", "k4"} and all(len(v) == 8 for v in keys.values())
    with pytest.raises(ValueError, match="no API keys"):
        load_api_keys(None, "")
    with pytest.raises(ValueError, match="not found"):
        load_api_keys(tmp_path / "missing")
    assert authenticate(keys, [("authorization", "Bearer k1")]) == keys["k1"]
    assert authenticate(keys, [("api-key", "k4")]) == keys["k4"]
    _named(lambda: authenticate(keys, []), "UNAUTHENTICATED", "missing API key")
    _named(lambda: authenticate(keys, [("authorization", "Bearer nope")]), "UNAUTHENTICATED", "invalid")


def test_key_limiter_counts_per_key():
    lim = KeyLimiter(2)
    lim.acquire("a")
    lim.acquire("a")
    lim.acquire("b")
    _named(lambda: lim.acquire("a"), "RESOURCE_EXHAUSTED", "max_streams_per_key 2")
    lim.release("a")
    lim.acquire("a")


def test_canary_router_share_and_zero():
    r = CanaryRouter("1", "2", 0.25, seed=3)
    picks = [r.pick()[0] for _ in range(4000)]
    assert abs(picks.count("2") / 4000 - 0.25) < 0.03
    assert {CanaryRouter("1", "2", 0.0, seed=3).pick() for _ in range(200)} == {("1", "champion")}
    with pytest.raises(ValueError, match="canary_share"):
        GatewayConfig(canary_share=1.5)
    with pytest.raises(ValueError, match="challenger_version"):
        GatewayConfig(canary_share=0.1)


def test_language_mapping():
    langs = ("en-US", "de-DE", "es-ES", "es-US")
    assert resolve_language("en-US", langs) == "en-US"
    assert resolve_language("de", langs) == "de-DE"
    _named(lambda: resolve_language("es", langs), "INVALID_ARGUMENT", "unknown language 'es'")
    _named(lambda: resolve_language("xx-XX", langs), "INVALID_ARGUMENT", "unknown language")
    _named(lambda: resolve_language("", langs), "INVALID_ARGUMENT", "empty")
    assert resolve_language("xx-XX", ()) == "xx-XX"  # no list: Triton decides


def test_decode_audio_pcm_wav_resample_and_refusals():
    x = (0.3 * np.sin(np.arange(8000) / 10)).astype(np.float32)
    pcm = (x * 32767).astype("<i2").tobytes()
    a, rate = decode_audio(pcm, "LINEAR_PCM", 16000)
    assert rate == 16000 and a.size == 8000 and np.abs(a - x).max() < 1e-3
    a, rate = decode_audio(_wav(x, 8000), "", 0)
    assert rate == 8000 and abs(a.size - 16000) <= 2
    _named(lambda: decode_audio(pcm, "LINEAR_PCM", 0), "INVALID_ARGUMENT", "sample_rate_hertz: required")
    _named(lambda: decode_audio(pcm, "LINEAR_PCM", 4000), "INVALID_ARGUMENT", "4000 Hz is not supported")
    _named(lambda: decode_audio(_wav(x), "", 8000), "INVALID_ARGUMENT", "does not match")
    _named(lambda: decode_audio(b"", "", 16000), "INVALID_ARGUMENT", "empty")
    _named(lambda: decode_audio(pcm[:-1], "", 16000), "INVALID_ARGUMENT", "odd")
    _named(lambda: decode_audio(pcm, "MULAW", 16000), "INVALID_ARGUMENT", "encoding: MULAW")
    _named(lambda: decode_audio(b"RIFFxxxxWAVEjunk", "", 0), "INVALID_ARGUMENT", "cannot decode")


def test_audio_budget_and_triton_errors():
    b = AudioBudget(GatewayConfig(max_request_bytes=100, max_audio_s=1.0))
    b.add_bytes(100)
    _named(lambda: b.add_bytes(1), "RESOURCE_EXHAUSTED", "max_request_bytes 100")
    b.add_samples(16000)
    _named(lambda: b.add_samples(1), "RESOURCE_EXHAUSTED", "max_audio_s 1")
    assert triton_error("LANG: unknown language 'xx'").code == "INVALID_ARGUMENT"
    assert triton_error("AUDIO_CHUNK: 30.0 s is longer than max_audio_s").code == "RESOURCE_EXHAUSTED"
    assert triton_error("failed to connect").code == "UNAVAILABLE"


def test_cli_settings_from_flags_env_and_rollout_file(tmp_path, monkeypatch):
    from registry.rollout import RolloutState, save_state
    from serving.gateway.__main__ import _parser, config_from_args

    monkeypatch.setenv("GATEWAY_MAX_STREAMS_PER_KEY", "5")
    save_state(
        tmp_path / "r.json",
        RolloutState(champion_version="3", challenger_version="4", canary_share=0.2, stage="canary"),
    )
    a = _parser().parse_args(
        ["--rollout", str(tmp_path / "r.json"), "--languages", "en-US,de-DE", "--max-audio-s", "30"]
    )
    cfg = config_from_args(a)
    assert (cfg.champion_version, cfg.challenger_version, cfg.canary_share) == ("3", "4", 0.2)
    assert cfg.max_streams_per_key == 5 and cfg.max_audio_s == 30.0 and cfg.languages == ("en-US", "de-DE")
