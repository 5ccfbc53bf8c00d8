"""The front door, end to end: the UNMODIFIED real clients (riva.client.ASRService offline + streaming, the
openai SDK's audio.transcriptions.create) against the real gateway process in front of the real tritonserver,
both started here. Texts equal the in-process `asr_infer` text for the same clip and language; every bad input
gets its named error while the gateway stays up; canary routing is counted over N sessions.

One tritonserver for the module, serving two versions of each model: v1 (champion) and v2 (challenger, the same
tiny model with another blank bias, so its text differs and a mislabelled answer would be caught).
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
import urllib.error
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest

from serving.gateway.process import GatewayProcess
from serving.server import TritonServer
from tests.e2e.test_triton_serving import ATT, CHUNK_S, build_tiny_model, test_clips
from tests.e2e.test_triton_serving import pytestmark as triton_serving_marks

pytestmark = triton_serving_marks  # triton, slow, e2e; skipped without the tritonserver binary

REPO_ROOT = Path(__file__).resolve().parents[2]
PORTS: dict[
    str, int
] = {}  # the gateway's free ports, set by the `front` fixture (other sessions run Triton too)
KEYS = ("key-alpha", "key-beta")
MAX_AUDIO_S = 20.0
MAX_STREAMS = 2


def _wait(fn, timeout_s: float, what: str):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            if fn():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} not reached after {timeout_s:.0f}s")


def _get(path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['http']}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _pcm16(audio: np.ndarray) -> tuple[np.ndarray, bytes]:
    """(the float audio a 16-bit client actually sends, its bytes): parity is checked on the same samples."""
    q = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
    return q.astype(np.float32) / 32768.0, q.tobytes()


def _wav(pcm: bytes, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def _stream_final(asr, audio: np.ndarray, lang: str) -> str:
    state = asr.new_stream(lang, ATT)
    step = int(CHUNK_S * 16000)
    pieces = [audio[i : i + step] for i in range(0, audio.size, step)] or [audio]
    text = ""
    for i, p in enumerate(pieces):
        text = asr.stream_step(state, p, last=i == len(pieces) - 1)
    return text


@pytest.fixture(scope="module")
def front(tmp_path_factory):
    """(models {version: AsrModel}, clips, paths): Triton with v1 + v2 of both models, and the gateway."""
    import torch
    from nemo.collections.asr.models import EncDecRNNTBPEModelWithPrompt

    from components.common.asr_infer import AsrModel
    from components.export_triton.core import ServingConfig, export_model
    from registry.rollout import RolloutState, save_state, serve_versions

    work = tmp_path_factory.mktemp("gateway")
    nemo_a = build_tiny_model(work / "a")
    m = EncDecRNNTBPEModelWithPrompt.restore_from(str(nemo_a), map_location="cpu")
    with torch.no_grad():
        torch.manual_seed(1)  # the challenger: another joint output layer, so its text differs
        w = m.joint.joint_net[-1].weight
        w.add_(0.5 * w.abs().mean() * torch.randn_like(w))
    nemo_b = work / "b.nemo"
    m.save_to(str(nemo_b))
    del m
    repo = work / "triton_repo"
    serving = ServingConfig(max_audio_s=MAX_AUDIO_S)
    for i, nemo in enumerate((nemo_a, nemo_b), 1):
        assert export_model(nemo, repo, None, {"name": f"tiny-{i}"}, ATT, serving=serving).version == i
    server = TritonServer(repo, state_dir=work / "state", startup_timeout_s=600)  # free ports
    server.start()
    gw = None
    try:
        for model in ("asr_offline", "asr_streaming"):
            serve_versions(server.http_url, model, ["1", "2"])
        import tritonclient.http as th

        tc = th.InferenceServerClient(server.http_url.removeprefix("http://"))
        _wait(
            lambda: all(tc.is_model_ready(mm, v) for mm in ("asr_offline", "asr_streaming") for v in "12"),
            300,
            "both versions READY",
        )
        models = {"1": AsrModel.load(str(nemo_a)), "2": AsrModel.load(str(nemo_b))}
        langs = sorted(models["1"].prompt_dictionary)
        rollout = work / "rollout.json"
        save_state(rollout, RolloutState(model="tiny", champion_version="1"))
        args = [
            "--rollout",
            str(rollout),
            "--languages",
            ",".join(langs),
            "--max-audio-s",
            str(MAX_AUDIO_S),
            "--max-streams-per-key",
            str(MAX_STREAMS),
            "--max-request-bytes",
            "1000000",
            "--seed",
            "7",
        ]
        triton_grpc = server.grpc_url.removeprefix("grpc://")
        gw = GatewayProcess(triton_grpc, work / "gateway.log", api_key=",".join(KEYS), args=args)
        PORTS.update(grpc=gw.grpc_port, http=gw.http_port)
        gw.start()
        yield {
            "models": models,
            "clips": test_clips(),
            "rollout": rollout,
            "log": work / "gateway.log",
            "gw": gw.process,
            "triton_http": server.http_url,
        }
    finally:
        if gw is not None:
            gw.stop()
            print("\n--- gateway log tail\n" + (work / "gateway.log").read_text()[-3000:])
        server.stop()


def _riva(key: str | None = KEYS[0]):
    import riva.client

    meta = [["authorization", f"Bearer {key}"]] if key else None
    return riva.client.ASRService(riva.client.Auth(uri=f"127.0.0.1:{PORTS['grpc']}", metadata_args=meta))


def _riva_config(lang: str, rate: int = 16000, **kw):
    import riva.client

    return riva.client.RecognitionConfig(
        encoding=riva.client.AudioEncoding.LINEAR_PCM,
        sample_rate_hertz=rate,
        language_code=lang,
        max_alternatives=1,
        **kw,
    )


def _openai(key: str | None = KEYS[0]):
    import openai

    return openai.OpenAI(api_key=key or "", base_url=f"http://127.0.0.1:{PORTS['http']}/v1", max_retries=0)


def test_riva_client_offline_and_streaming_match_in_process(front, tmp_path):
    import riva.client

    asr = _riva()
    for name, audio, lang in front["clips"]:
        audio_q, pcm = _pcm16(audio)
        expected = front["models"]["1"].transcribe([audio_q], [lang], att_context_size=ATT)[0]
        assert expected, f"{name}: the tiny model emitted nothing; parity would be vacuous"
        # offline: raw PCM, and a whole WAV file (what riva's own examples send)
        for payload in (pcm, _wav(pcm)):
            resp = asr.offline_recognize(payload, _riva_config(lang))
            assert resp.results[0].alternatives[0].transcript == expected, name
        # streaming: the client's own file iterator (its first chunk carries the WAV header), interim results
        wav = tmp_path / f"{name}.wav"
        wav.write_bytes(_wav(pcm))
        scfg = riva.client.StreamingRecognitionConfig(config=_riva_config(lang), interim_results=True)
        with riva.client.AudioChunkFileIterator(str(wav), 1600) as chunks:
            results = [r for resp in asr.streaming_response_generator(chunks, scfg) for r in resp.results]
        finals = [r for r in results if r.is_final]
        assert len(finals) == 1 and results[-1].is_final, [
            (r.is_final, r.alternatives[0].transcript) for r in results
        ]
        assert any(not r.is_final for r in results), "interim_results=True gave no partials"
        assert finals[0].alternatives[0].transcript == _stream_final(front["models"]["1"], audio_q, lang), (
            name
        )


def test_riva_client_resamples_8khz_pcm(front):
    """A non-16 kHz rate in range is resampled (soxr) before the model, as the data stage does."""
    import soxr

    name, audio, lang = front["clips"][0]
    a8 = soxr.resample(audio, 16000, 8000).astype(np.float32)
    a8_q, pcm8 = _pcm16(a8)
    expected = front["models"]["1"].transcribe(
        [soxr.resample(a8_q, 8000, 16000).astype(np.float32)], [lang], att_context_size=ATT
    )[0]
    resp = _riva().offline_recognize(pcm8, _riva_config(lang, 8000))
    assert resp.results[0].alternatives[0].transcript == expected


def test_openai_sdk_matches_in_process(front, tmp_path):
    client = _openai()
    ids = {m.id for m in client.models.list()}
    assert {"asr_offline", "asr_streaming"} <= ids
    for name, audio, lang in front["clips"]:
        audio_q, pcm = _pcm16(audio)
        expected = front["models"]["1"].transcribe([audio_q], [lang], att_context_size=ATT)[0]
        wav = tmp_path / f"{name}.wav"
        wav.write_bytes(_wav(pcm))
        with open(wav, "rb") as f:
            r = client.audio.transcriptions.create(model="asr_offline", file=f, language=lang)
        assert r.text == expected, name
        with open(wav, "rb") as f:  # a 2-letter code maps to the model's one locale of that language
            r = client.audio.transcriptions.create(
                model="asr_offline", file=f, language=lang.split("-")[0], response_format="text"
            )
        assert r.strip() == expected if isinstance(r, str) else r.text == expected
        with open(wav, "rb") as f:
            r = client.audio.transcriptions.create(
                model="asr_offline", file=f, language=lang, response_format="verbose_json"
            )
        assert r.text == expected and r.model_version == "1" and r.language == lang


def _grpc_status(fn):
    import grpc

    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code().name, e.value.details()


@pytest.fixture(scope="module")
def bad(front):
    """What the bad-input cases send: a clip's 16-bit PCM, its language, a Riva client with a valid key."""
    _, audio, lang = front["clips"][0]
    return {"pcm": _pcm16(audio)[1], "lang": lang, "asr": _riva()}


def _riva_stream(asr, chunks, lang):
    import riva.client

    cfg = riva.client.StreamingRecognitionConfig(config=_riva_config(lang))
    return list(asr.streaming_response_generator(iter(chunks), cfg))


def _mulaw(b):
    import riva.client

    cfg = riva.client.RecognitionConfig(
        encoding=riva.client.AudioEncoding.MULAW, sample_rate_hertz=16000, language_code=b["lang"]
    )
    return b["asr"].offline_recognize(b["pcm"], cfg)


# case -> (call with the `bad` fixture, gRPC status, words the message must contain)
RIVA_BAD = {
    "wrong sample rate": (
        lambda b: b["asr"].offline_recognize(b["pcm"], _riva_config(b["lang"], 4000)),
        "INVALID_ARGUMENT",
        "sample_rate_hertz",
    ),
    "rate disagrees with the WAV": (
        lambda b: b["asr"].offline_recognize(_wav(b["pcm"], 16000), _riva_config(b["lang"], 8000)),
        "INVALID_ARGUMENT",
        "does not match",
    ),
    "unknown language": (
        lambda b: b["asr"].offline_recognize(b["pcm"], _riva_config("xx-XX")),
        "INVALID_ARGUMENT",
        "unknown language",
    ),
    "empty": (
        lambda b: b["asr"].offline_recognize(b"", _riva_config(b["lang"])),
        "INVALID_ARGUMENT",
        "empty",
    ),
    "unsupported encoding": (_mulaw, "INVALID_ARGUMENT", "encoding"),
    "longer than max_audio_s": (
        lambda b: b["asr"].offline_recognize(
            b"\0\0" * int(16000 * (MAX_AUDIO_S + 1)), _riva_config(b["lang"])
        ),
        "RESOURCE_EXHAUSTED",
        "max_audio_s",
    ),
    "oversized": (
        lambda b: b["asr"].offline_recognize(b"\0\0" * 510_000, _riva_config(b["lang"], 48000)),
        "RESOURCE_EXHAUSTED",
        "max_request_bytes",
    ),
    "missing key": (
        lambda b: _riva(None).offline_recognize(b["pcm"], _riva_config(b["lang"])),
        "UNAUTHENTICATED",
        "missing API key",
    ),
    "wrong key": (
        lambda b: _riva("nope").offline_recognize(b["pcm"], _riva_config(b["lang"])),
        "UNAUTHENTICATED",
        "invalid API key",
    ),
    "streaming: unknown language": (
        lambda b: _riva_stream(b["asr"], [b["pcm"][:3200]], "xx-XX"),
        "INVALID_ARGUMENT",
        "unknown language",
    ),
    "streaming: no audio": (
        lambda b: _riva_stream(b["asr"], [], b["lang"]),
        "INVALID_ARGUMENT",
        "empty stream",
    ),
    "streaming: missing key": (
        lambda b: _riva_stream(_riva(None), [b["pcm"][:3200]], b["lang"]),
        "UNAUTHENTICATED",
        "missing API key",
    ),
}


def _still_up(front) -> None:
    assert front["gw"].poll() is None, "the gateway died"
    assert _get("/readyz")[0] == 200


@pytest.mark.parametrize("case", list(RIVA_BAD))
def test_riva_bad_input_gets_its_named_status_and_the_gateway_stays_up(front, bad, case):
    fn, code, words = RIVA_BAD[case]
    got = _grpc_status(lambda: fn(bad))
    assert got[0] == code and words in got[1], got
    _still_up(front)
    method = "StreamingRecognize" if case.startswith("streaming") else "Recognize"
    assert f'asr_gateway_requests_total{{api="riva",code="{code}",method="{method}"}}' in _get("/metrics")[1]


def _http(b, key=KEYS[0], file=None, **kw):
    return _openai(key).audio.transcriptions.create(
        model=kw.pop("model", "asr_offline"),
        file=("a.wav", _wav(b["pcm"]) if file is None else file),
        **({"language": b["lang"]} | kw),
    )


# case -> (call with the `bad` fixture, HTTP status, words the error body must contain)
HTTP_BAD = {
    "wrong sample rate": (lambda b: _http(b, file=_wav(b["pcm"][:32000], 4000)), 400, "sample_rate_hertz"),
    "unknown language": (lambda b: _http(b, language="xx-XX"), 400, "unknown language"),
    "empty": (lambda b: _http(b, file=b""), 400, "empty"),
    "not audio": (lambda b: _http(b, file=b"RIFF this is not a wav"), 400, "cannot decode"),
    "oversized": (lambda b: _http(b, file=b"\0" * 1_200_000), 413, "max_request_bytes"),
    "unknown model": (lambda b: _http(b, model="gpt-4o-transcribe-x"), 404, "not served"),
    "bad response_format": (lambda b: _http(b, response_format="srt"), 400, "response_format"),
    "wrong key": (lambda b: _http(b, key="nope"), 401, "invalid API key"),
}


@pytest.mark.parametrize("case", list(HTTP_BAD))
def test_openai_bad_input_gets_its_named_error_and_the_gateway_stays_up(front, bad, case):
    import openai

    fn, status, words = HTTP_BAD[case]
    with pytest.raises(openai.APIStatusError) as e:
        fn(bad)
    assert e.value.status_code == status and words in str(e.value.body), (e.value.status_code, e.value.body)
    _still_up(front)


def test_openai_missing_key_is_refused_and_a_good_request_still_works(front, bad):
    import httpx  # the SDK refuses to send no key at all: a plain multipart POST without one

    r = httpx.post(
        f"http://127.0.0.1:{PORTS['http']}/v1/audio/transcriptions",
        files={"file": ("a.wav", _wav(bad["pcm"]))},
        data={"model": "asr_offline", "language": bad["lang"]},
    )
    assert r.status_code == 401 and "missing API key" in r.json()["error"]["message"]
    _still_up(front)
    assert _http(bad).text


def test_per_key_concurrent_stream_limit(front):
    """A key holding max_streams_per_key open streams gets RESOURCE_EXHAUSTED for the next; other keys don't."""
    import grpc
    import riva.client
    from riva.client.proto import riva_asr_pb2 as rasr

    _, audio, lang = front["clips"][0]
    _, pcm = _pcm16(audio)
    release = threading.Event()
    scfg = riva.client.StreamingRecognitionConfig(config=_riva_config(lang))

    def held():
        yield rasr.StreamingRecognizeRequest(streaming_config=scfg)
        yield rasr.StreamingRecognizeRequest(audio_content=pcm[:3200])
        release.wait(60)

    def run_held(out):
        try:
            out.append(
                list(
                    _riva().stub.StreamingRecognize(held(), metadata=[("authorization", f"Bearer {KEYS[0]}")])
                )
            )
        except grpc.RpcError as e:
            out.append(e.code().name)

    outs: list = [[] for _ in range(MAX_STREAMS)]
    threads = [threading.Thread(target=run_held, args=(o,)) for o in outs]
    for t in threads:
        t.start()
    try:
        _wait(
            lambda: "asr_gateway_active_streams " + f"{MAX_STREAMS}.0" in _get("/metrics")[1],
            30,
            f"{MAX_STREAMS} active streams",
        )
        code, msg = _grpc_status(lambda: list(_riva().streaming_response_generator(iter([pcm[:3200]]), scfg)))
        assert code == "RESOURCE_EXHAUSTED" and "max_streams_per_key" in msg
        other = list(_riva(KEYS[1]).streaming_response_generator(iter([pcm[:32000]]), scfg))
        assert other[-1].results[0].is_final
    finally:
        release.set()
        for t in threads:
            t.join(60)
    assert all(o and isinstance(o[0], list) for o in outs), outs  # the held streams finished normally


def _binomial_ok(k: int, n: int, p: float, z: float = 4.0) -> bool:
    sd = math.sqrt(n * p * (1 - p))
    return abs(k - n * p) <= z * sd


def test_canary_share_counts_and_rollback_returns_it_to_zero(front):
    """N new sessions at share p: the challenger answers k of them, |k - Np| <= 4 sd; every answer is labelled
    with its version and its text is that version's in-process text; after rollback every session is v1."""
    from registry.rollout import load_state, plan_canary, plan_rollback, save_state

    _, audio, lang = front["clips"][0]
    audio_q, pcm = _pcm16(audio)
    expected = {
        v: m.transcribe([audio_q], [lang], att_context_size=ATT)[0] for v, m in front["models"].items()
    }
    assert expected["1"] != expected["2"], "the two versions must differ for the labels to be checkable"
    client, path = _openai(), front["rollout"]
    share, n = 0.3, 60
    save_state(path, plan_canary(load_state(path), "tiny", "7", "2", share, "test", "canary"))

    def session() -> str:
        raw = client.audio.transcriptions.with_raw_response.create(
            model="asr_offline", file=("a.wav", _wav(pcm)), language=lang
        )
        version, text = raw.headers["x-model-version"], raw.parse().text
        assert text == expected[version], (version, text)
        return version

    _wait(lambda: session() == "2", 30, "the gateway following the rollout file")
    versions = [session() for _ in range(n)]
    k = versions.count("2")
    assert _binomial_ok(k, n, share), f"challenger answered {k}/{n} at share {share}"
    # streaming sessions are labelled too (gRPC trailing metadata)
    import riva.client

    scfg_stream = riva.client.StreamingRecognitionConfig(config=_riva_config(lang))
    from riva.client.proto import riva_asr_pb2 as rasr

    reqs = [
        rasr.StreamingRecognizeRequest(streaming_config=scfg_stream),
        rasr.StreamingRecognizeRequest(audio_content=pcm),
    ]
    call = _riva().stub.StreamingRecognize(iter(reqs), metadata=[("authorization", f"Bearer {KEYS[0]}")])
    list(call)
    assert dict(call.trailing_metadata())["x-model-version"] in ("1", "2")

    save_state(path, plan_rollback(load_state(path), "test", "canary regressed"))
    state = json.loads(Path(path).read_text())
    assert state["canary_share"] == 0.0 and state["history"][-1]["action"] == "rollback"
    time.sleep(2.5)  # the gateway re-reads the file every second
    assert {session() for _ in range(20)} == {"1"}


def test_post_deploy_parity_refuses_a_version_whose_text_differs(front, tmp_path):
    """The sidecar's check (sync_champion.verify_parity): the golden set stored at gate time for v1 replays
    exactly through Triton's v1; v2 (another checkpoint swapped in) is refused with the differing texts."""
    from components.evaluate_wer.golden import write_golden_set
    from tests.unit.test_infra import sync  # infra/k8s/base/triton/sync_champion.py, loaded as a module

    m1 = front["models"]["1"]
    clips = front["clips"]
    golden = write_golden_set(
        tmp_path,
        [a for _, a, _ in clips],
        [lg for _, _, lg in clips],
        lambda a, lg: m1.transcribe(a, lg, att_context_size=ATT),
        ATT,
    )
    ok = sync.verify_parity(front["triton_http"], golden, 1)
    assert ok["passed"] and ok["checked"] == len(clips), ok
    bad = sync.verify_parity(front["triton_http"], golden, 2)
    assert bad["passed"] is False and bad["mismatches"], bad
    assert all(m["expected"] != m["got"] for m in bad["mismatches"])


def test_a_long_message_is_cut_so_other_streams_interleave(front):
    """Issue 15 #13 through the front door: one client sends 15 s in ONE message; the gateway cuts it into
    160 ms requests, so a second stream that starts after it is served in between and finishes first (with
    the in-process text), instead of waiting for one 15 s execute()."""
    import riva.client

    (_, a0, lang0), (_, a1, lang1) = front["clips"][0], front["clips"][1]
    long_audio = np.tile(a0, int(np.ceil(15.0 * 16000 / a0.size)))[: 15 * 16000]
    _, long_pcm = _pcm16(long_audio)
    short_q, short_pcm = _pcm16(a1[: 16000 * 2])
    done: list[tuple[str, str]] = []

    def run(name: str, chunks: list[bytes], lang: str) -> None:
        cfg = riva.client.StreamingRecognitionConfig(config=_riva_config(lang))
        results = [
            r for resp in _riva(KEYS[1]).streaming_response_generator(iter(chunks), cfg) for r in resp.results
        ]
        done.append((name, results[-1].alternatives[0].transcript))

    t_long = threading.Thread(target=run, args=("long", [long_pcm], lang0))
    t_long.start()
    _wait(lambda: "asr_gateway_active_streams 1.0" in _get("/metrics")[1], 30, "the long stream running")
    time.sleep(0.3)  # let it get going: the short stream starts while the long one is mid-way
    run("short", [short_pcm[i : i + 3200] for i in range(0, len(short_pcm), 3200)], lang1)
    t_long.join(300)
    assert [n for n, _ in done] == ["short", "long"], done
    assert dict(done)["short"] == _stream_final(front["models"]["1"], short_q, lang1)
