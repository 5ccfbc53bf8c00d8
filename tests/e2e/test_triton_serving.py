"""The real tritonserver serving an exported tiny model of the Nemotron class: token parity and robustness.

One server per module (starting it means two python-backend stubs importing NeMo: about a minute here). The
tiny model is untrained; its joint's blank bias is lowered so it emits tokens, which makes "server text ==
in-process AsrModel text" a real check rather than "" == "".
"""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from serving.server import TritonServer, tritonserver_available
from tests.e2e.triton_helpers import (  # noqa: F401 (ATT, CHUNK_S, build_tiny_model, test_clips: reused elsewhere)
    ATT,
    CHUNK_S,
    IDLE_S,
    LATENCY,
    MAX_AUDIO_S,
    MAX_CHUNK_S,
    MAX_STREAM_S,
    _expect_error,
    _grpc,
    _in_process_stream,
    _offline_inputs,
    _still_up_and_correct,
    _stream_req,
    _stream_request,
    _stream_unary,
    _timed,
    build_tiny_model,
    test_clips,
)

pytestmark = [
    pytest.mark.triton,
    pytest.mark.slow,
    pytest.mark.e2e,
    pytest.mark.skipif(
        not tritonserver_available(), reason="nvidia-pytriton's tritonserver is not installed"
    ),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(server, in-process AsrModel, clips): export a fresh tiny model and serve it."""
    from components.common.asr_infer import AsrModel
    from components.export_triton.core import ServingConfig, export_model

    work = tmp_path_factory.mktemp("serving")
    nemo = build_tiny_model(work / "model")
    repo = work / "triton_repo"
    # a short max_audio_s makes "very long audio" cheap to send (the limit is what is tested, not its value)
    res = export_model(
        nemo,
        repo,
        None,
        {"name": "tiny-e2e"},
        ATT,
        serving=ServingConfig(
            max_audio_s=MAX_AUDIO_S,
            max_sequence_idle_us=int(IDLE_S * 1e6),
            max_chunk_s=MAX_CHUNK_S,
            max_stream_s=MAX_STREAM_S,
        ),
    )
    assert res.version == 1
    server = TritonServer(repo, state_dir=work / "state", startup_timeout_s=600)
    server.start()
    print(f"\ntritonserver + 2 models ready in {server.start_seconds:.1f}s (log {server.log_file})")
    try:
        yield server, AsrModel.load(str(nemo)), test_clips()
    finally:
        t0 = time.perf_counter()
        server.stop()
        print(f"\ntritonserver stopped in {time.perf_counter() - t0:.1f}s")
        for key, vals in LATENCY.items():
            print(
                f"latency {key}: n={len(vals)} median {1000 * float(np.median(vals)):.0f} ms "
                f"max {1000 * max(vals):.0f} ms"
            )


def test_offline_http_and_grpc_match_in_process(served):
    from serving.client import transcribe_offline

    server, asr, clips = served
    for name, audio, lang in clips:
        expected = asr.transcribe([audio], [lang], att_context_size=ATT)[0]
        assert expected, f"{name}: the tiny model emitted nothing; parity would be vacuous"
        assert _timed("offline http", transcribe_offline, server.http_url, audio, lang) == expected, name
        assert _timed("offline grpc", transcribe_offline, server.grpc_url, audio, lang) == expected, name


def test_offline_concurrent_requests_are_batched_and_stay_in_order(served):
    """Several utterances of different lengths/languages in flight at once come back to the right caller."""
    server, asr, clips = served
    tc, client = _grpc(server)
    jobs = [(a[: int(s * 16000)], lang) for s in (1.0, 2.0, 3.0) for _, a, lang in clips]
    expected = asr.transcribe([a for a, _ in jobs], [lang for _, lang in jobs], att_context_size=ATT)
    results = {}
    try:
        for i, (a, lang) in enumerate(jobs):
            client.async_infer(
                "asr_offline",
                _offline_inputs(tc, a, lang),
                request_id=str(i),
                callback=lambda result, error, i=i: results.__setitem__(i, (result, error)),
            )
        deadline = time.time() + 120
        while len(results) < len(jobs) and time.time() < deadline:
            time.sleep(0.05)
    finally:
        client.close()
    assert len(results) == len(jobs)
    for i, exp in enumerate(expected):
        r, e = results[i]
        assert e is None, e
        assert r.as_numpy("TEXT").reshape(-1)[0].decode() == exp


def test_streaming_matches_in_process_stream(served):
    from serving.client import transcribe_streaming

    server, asr, clips = served
    for name, audio, lang in clips:
        partials, expected = _in_process_stream(asr, audio, lang)
        assert expected, f"{name}: the tiny model emitted nothing; parity would be vacuous"
        seen: list[str] = []
        t0 = time.perf_counter()
        got = transcribe_streaming(
            server.grpc_url, audio, lang, CHUNK_S, on_partial=lambda i, t, s=seen: s.append(t)
        )
        LATENCY.setdefault("streaming chunk (lock-step)", []).append(
            (time.perf_counter() - t0) / len(partials)
        )
        assert got == expected, name
        assert seen == partials, name  # every partial, not just the final text


def _two_streams(asr, clips, step: int) -> list[dict]:
    """The first two clips as live streams: a sequence id, `step`-sample pieces, and the in-process partials."""
    return [
        {
            "id": random.randrange(1, 2**63),
            "lang": lang,
            "pieces": [audio[i : i + step] for i in range(0, audio.size, step)],
            "texts": [],
            "expected": _in_process_stream(asr, audio, lang)[0],
        }
        for _, audio, lang in clips[:2]
    ]


def test_interleaved_sequences_keep_their_own_state(served):
    """Two streams in different languages, chunks alternating: each equals its own in-process stream."""
    server, asr, clips = served
    tc, client = _grpc(server)
    step = int(CHUNK_S * 16000)
    streams = _two_streams(asr, clips, step)
    try:
        for i in range(max(len(s["pieces"]) for s in streams)):
            for s in streams:
                if i < len(s["pieces"]):
                    r = _timed(
                        "streaming chunk (unary)",
                        client.infer,
                        "asr_streaming",
                        _stream_request(tc, s["pieces"][i], s["lang"] if i == 0 else None),
                        sequence_id=s["id"],
                        sequence_start=i == 0,
                        sequence_end=i == len(s["pieces"]) - 1,
                    )
                    s["texts"].append(r.as_numpy("TEXT").reshape(-1)[0].decode())
    finally:
        client.close()
    for s in streams:
        assert s["texts"] == s["expected"]


def test_abandoned_stream_is_freed_after_max_sequence_idle(served):
    """A client that vanishes mid-stream: after max_sequence_idle its sequence is gone (a late chunk is
    refused, not appended to stale state), other streams are unaffected, and the id can start afresh."""
    server, asr, clips = served
    (_, audio, lang), (_, other, other_lang) = clips[0], clips[1]
    tc, client = _grpc(server)
    step = int(CHUNK_S * 16000)
    sid = random.randrange(1, 2**63)
    try:
        client.infer(
            "asr_streaming", _stream_request(tc, audio[:step], lang), sequence_id=sid, sequence_start=True
        )
        time.sleep(IDLE_S + 2.0)
        # any request runs the model's expiry sweep; this whole stream must still be served exactly
        texts = _stream_unary(tc, client, other, other_lang, random.randrange(1, 2**63))
        assert texts == _in_process_stream(asr, other, other_lang)[0]
        # the abandoned stream's next chunk is refused (by Triton's sequence batcher, which freed the slot,
        # or by model.py, which dropped the state on the same clock), never decoded onto the old state
        _expect_error(
            client.infer,
            "asr_streaming",
            _stream_request(tc, audio[step : 2 * step], None),
            sequence_id=sid,
            match="sequence",
        )
        # the same id starts afresh and is served like any new stream
        assert _stream_unary(tc, client, audio, lang, sid) == _in_process_stream(asr, audio, lang)[0]
    finally:
        client.close()


def test_malformed_offline_requests_get_errors_and_the_server_stays_up(served):
    server, asr, clips = served
    _, audio, lang = clips[0]
    tc, client = _grpc(server)
    try:
        # offline: wrong dtype (Triton's own input check), empty audio, NaN, unknown language
        _expect_error(
            client.infer,
            "asr_offline",
            _offline_inputs(tc, audio.astype(np.float64), lang),
            match="data-type",
        )
        _expect_error(
            client.infer,
            "asr_offline",
            _offline_inputs(tc, np.zeros(0, np.float32), lang),
            match="AUDIO: empty",
        )
        bad = audio.copy()
        bad[100] = np.nan
        _expect_error(client.infer, "asr_offline", _offline_inputs(tc, bad, lang), match="NaN")
        _expect_error(
            client.infer, "asr_offline", _offline_inputs(tc, audio, "xx-XX"), match="unknown language"
        )
    finally:
        client.close()
    _still_up_and_correct(server, asr, audio, lang)


def test_malformed_streaming_requests_get_errors_and_the_server_stays_up(served):
    server, asr, clips = served
    _, audio, lang = clips[0]
    tc, client = _grpc(server)
    try:
        # streaming: unknown language on START, a chunk for a sequence that never started, a chunk after END
        sid = random.randrange(1, 2**63)
        # (START+END in one request: a refused stream left open holds a sequence slot until it idles out, and
        # tritonserver waits for open sequences on shutdown)
        _expect_error(
            client.infer,
            "asr_streaming",
            _stream_request(tc, audio[:2560], "xx-XX"),
            sequence_id=sid,
            sequence_start=True,
            sequence_end=True,
            match="unknown language",
        )
        msg = _expect_error(
            client.infer,
            "asr_streaming",
            _stream_request(tc, audio[:2560], None),
            sequence_id=random.randrange(1, 2**63),
            sequence_start=False,
            match="sequence",
        )
        print(f"\nchunk for an unknown sequence -> {msg}")
        sid = random.randrange(1, 2**63)
        client.infer(
            "asr_streaming",
            _stream_request(tc, audio[:2560], lang),
            sequence_id=sid,
            sequence_start=True,
            sequence_end=True,
        )
        msg = _expect_error(
            client.infer,
            "asr_streaming",
            _stream_request(tc, audio[:2560], None),
            sequence_id=sid,
            match="sequence",
        )
        print(f"chunk after END -> {msg}")
        _expect_error(
            client.infer,
            "asr_streaming",
            _stream_request(tc, np.full(2560, np.inf), lang),
            sequence_id=random.randrange(1, 2**63),
            sequence_start=True,
            sequence_end=True,
            match="NaN or Inf",
        )
    finally:
        client.close()
    _still_up_and_correct(server, asr, audio, lang)  # still up, still correct


def test_wrong_shape_dtype_and_too_long_audio_are_refused(served):
    """The cases test_malformed_requests... does not send: wrong shape and dtype on both models, audio longer
    than the exported max_audio_s on both, an empty offline utterance among valid ones."""
    server, asr, clips = served
    _, audio, lang = clips[0]
    tc, client = _grpc(server)
    too_long = np.zeros(int((MAX_AUDIO_S + 1) * 16000), np.float32)
    try:
        # offline: [1, 1, N] (three dimensions) is refused by Triton's shape check
        a = audio[None, None, :]
        inputs = [tc.InferInput("AUDIO", list(a.shape), "FP32"), tc.InferInput("LANG", [1, 1], "BYTES")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(np.array([[lang.encode()]], dtype=np.object_))
        msg = _expect_error(client.infer, "asr_offline", inputs, match="shape")
        print(f"\noffline [1,1,N] -> {msg}")
        _expect_error(
            client.infer, "asr_offline", _offline_inputs(tc, too_long, lang), match="longer than max_audio_s"
        )
        _expect_error(
            client.infer,
            "asr_offline",
            _offline_inputs(tc, audio.astype(np.int16), lang),
            match="data-type",
        )

        # streaming: FP64 chunk, a [2, N] chunk, a chunk longer than max_audio_s
        c = np.zeros((1, 2560), np.float64)
        inputs = [tc.InferInput("AUDIO_CHUNK", list(c.shape), "FP64")]
        inputs[0].set_data_from_numpy(c)
        _expect_error(
            client.infer,
            "asr_streaming",
            inputs,
            sequence_id=random.randrange(1, 2**63),
            sequence_start=True,
            sequence_end=True,
            match="data-type",
        )
        c = np.zeros((2, 2560), np.float32)
        inputs = [tc.InferInput("AUDIO_CHUNK", list(c.shape), "FP32"), tc.InferInput("LANG", [1, 1], "BYTES")]
        inputs[0].set_data_from_numpy(c)
        inputs[1].set_data_from_numpy(np.array([[lang.encode()]], dtype=np.object_))
        with pytest.raises(
            Exception
        ) as e:  # Triton's sequence batcher or model.py: both name the batch/shape
            client.infer(
                "asr_streaming",
                inputs,
                sequence_id=random.randrange(1, 2**63),
                sequence_start=True,
                sequence_end=True,
            )
        msg = e.value.message() if hasattr(e.value, "message") else str(e.value)
        print(f"streaming [2,N] -> {msg}")
        assert "batch" in msg.lower() or "shape" in msg.lower(), msg
        _expect_error(
            client.infer,
            "asr_streaming",
            _stream_request(tc, too_long, lang),
            sequence_id=random.randrange(1, 2**63),
            sequence_start=True,
            sequence_end=True,
            match="longer than max_audio_s",
        )
    finally:
        client.close()
    from serving.server import is_ready

    assert is_ready(server.http_url)


def test_malformed_requests_between_chunks_leave_live_streams_intact(served):
    """Two live streams; between their chunks, malformed requests arrive: on a stream itself (NaN chunk, wrong
    dtype), for unknown and ended sequences, with an unknown language. Every valid chunk's answer still equals
    the in-process partial of its own stream: bad requests neither advance nor corrupt any stream's state."""
    from tritonclient.utils import InferenceServerException

    server, asr, clips = served
    tc, client = _grpc(server)
    step = int(CHUNK_S * 16000)
    ended = random.randrange(1, 2**63)
    client.infer(
        "asr_streaming",
        _stream_request(tc, clips[0][1][:step], clips[0][2]),
        sequence_id=ended,
        sequence_start=True,
        sequence_end=True,
    )
    streams = _two_streams(asr, clips, step)
    nan = np.zeros(step, np.float32)
    nan[5] = np.nan
    f64 = np.zeros((1, step), np.float64)
    f64_in = [tc.InferInput("AUDIO_CHUNK", list(f64.shape), "FP64")]
    f64_in[0].set_data_from_numpy(f64)
    refused = 0
    try:
        for i in range(max(len(s["pieces"]) for s in streams)):
            for s in streams:
                if i >= len(s["pieces"]):
                    continue
                last = i == len(s["pieces"]) - 1
                if 0 < i and not last:
                    bad = [
                        (_stream_request(tc, nan, None), {"sequence_id": s["id"]}),
                        (f64_in, {"sequence_id": s["id"]}),
                        (_stream_request(tc, nan[:0], None), {"sequence_id": ended}),
                        (
                            _stream_request(tc, s["pieces"][i], None),
                            {"sequence_id": random.randrange(1, 2**63)},
                        ),
                        (
                            _stream_request(tc, s["pieces"][i], "xx-XX"),
                            {
                                "sequence_id": random.randrange(1, 2**63),
                                "sequence_start": True,
                                "sequence_end": True,
                            },
                        ),
                    ][i % 5]
                    with pytest.raises(InferenceServerException):
                        client.infer("asr_streaming", bad[0], **bad[1])
                    refused += 1
                r = client.infer(
                    "asr_streaming",
                    _stream_request(tc, s["pieces"][i], s["lang"] if i == 0 else None),
                    sequence_id=s["id"],
                    sequence_start=i == 0,
                    sequence_end=last,
                )
                s["texts"].append(r.as_numpy("TEXT").reshape(-1)[0].decode())
    finally:
        client.close()
    assert refused >= 10
    for s in streams:
        assert s["texts"] == s["expected"]


def test_cli_streams_a_file_in_real_time_and_prints_partial_and_final_text(served, tmp_path, capsys):
    """`python -m serving transcribe --streaming --realtime FILE`: one line per chunk (the text so far), then
    the final text, paced like a microphone (a 3 s clip takes about 3 s)."""
    import soundfile as sf

    from serving.__main__ import main

    server, asr, clips = served
    name, audio, lang = clips[0]
    wav = tmp_path / "clip.wav"
    sf.write(wav, audio, 16000, subtype="FLOAT")
    partials, final = _in_process_stream(asr, audio, lang)
    t0 = time.perf_counter()
    rc = main(
        ["transcribe", str(wav), "--lang", lang, "--url", server.grpc_url, "--streaming", "--realtime"]
        + ["--chunk-ms", str(1000 * CHUNK_S)]
    )
    wall = time.perf_counter() - t0
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    shown = [line.split("] ", 1)[1] if "] " in line else "" for line in out if line.startswith(f"  [{wav} #")]
    assert shown == partials
    assert out[-1].startswith(f"{wav}\t{final}\t")
    assert wall >= 0.9 * audio.size / 16000  # paced at the audio rate, not as fast as the server answers


def test_auto_language_is_served_with_tags_stripped(served):
    """LANG "auto" (the prompt model's language-detection mode) works on both models; the export's default
    strip_lang_tags option removes the <xx-XX> tags auto mode writes, and nothing else."""
    from components.common.text import strip_lang_tags
    from serving.client import transcribe_offline, transcribe_streaming

    server, asr, clips = served
    _, audio, _ = clips[0]

    def served_form(text: str) -> str:
        return strip_lang_tags(text) if "<" in text else text

    expected = served_form(asr.transcribe([audio], ["auto"], att_context_size=ATT)[0])
    assert transcribe_offline(server.grpc_url, audio, "auto") == expected
    partials, final = _in_process_stream(asr, audio, "auto")
    seen: list[str] = []
    got = transcribe_streaming(
        server.grpc_url, audio, "auto", CHUNK_S, on_partial=lambda i, t: seen.append(t)
    )
    assert got == served_form(final)
    assert seen == [served_form(p) for p in partials]


def test_long_chunks_and_the_stream_budget_are_refused_by_name_and_state_survives(served):
    """Issue 15 #13: a chunk longer than max_chunk_s would monopolise execute() (every other stream waits for
    its encoder steps): it is refused by name and the stream goes on untouched; a stream that sends more than
    max_stream_s of audio in all is refused and ended (it no longer grows without bound)."""
    server, asr, clips = served
    _, audio, lang = clips[0]
    tc, client = _grpc(server)
    step = int(CHUNK_S * 16000)
    sid = random.randrange(1, 2**63)
    try:
        expected = _in_process_stream(asr, audio, lang)[0]
        pieces = [audio[i : i + step] for i in range(0, audio.size, step)]
        texts = []
        for i, piece in enumerate(pieces):
            if i == 2:
                _expect_error(
                    client.infer,
                    "asr_streaming",
                    _stream_req(tc, np.zeros(int((MAX_CHUNK_S + 0.5) * 16000), np.float32)),
                    sequence_id=sid,
                    match="max_chunk_s",
                )
            r = client.infer(
                "asr_streaming",
                _stream_req(tc, piece, lang if i == 0 else None),
                sequence_id=sid,
                sequence_start=i == 0,
                sequence_end=i == len(pieces) - 1,
            )
            texts.append(r.as_numpy("TEXT").reshape(-1)[0].decode())
        assert texts == expected
        # the budget: max_stream_s of audio is served, the next chunk is refused and the stream is gone
        sid = random.randrange(1, 2**63)
        big = np.zeros(int(MAX_CHUNK_S * 16000), np.float32)
        for i in range(int(MAX_STREAM_S / MAX_CHUNK_S)):
            client.infer(
                "asr_streaming",
                _stream_req(tc, big, lang if i == 0 else None),
                sequence_id=sid,
                sequence_start=i == 0,
            )
        _expect_error(
            client.infer, "asr_streaming", _stream_req(tc, big[:step]), sequence_id=sid, match="max_stream_s"
        )
        _expect_error(
            client.infer, "asr_streaming", _stream_req(tc, big[:step]), sequence_id=sid, match="max_stream_s"
        )  # ended: the refusal says why
    finally:
        client.close()


def test_sample_rate_input_resamples_or_refuses_by_name(served):
    """SAMPLE_RATE (optional, 16 kHz default) on START: 8 kHz audio is resampled per stream (soxr's streaming
    resampler, as in-process below), an unsupported rate is refused by name."""
    import soxr

    server, asr, clips = served
    _, audio, lang = clips[0]
    a8 = soxr.resample(audio, 16000, 8000).astype(np.float32)
    step8 = int(CHUNK_S * 8000)
    pieces = [a8[i : i + step8] for i in range(0, a8.size, step8)]
    rs = soxr.ResampleStream(8000, 16000, 1, dtype="float32")
    state = asr.new_stream(lang, ATT)
    expected = [
        asr.stream_step(state, rs.resample_chunk(p, last=i == len(pieces) - 1), last=i == len(pieces) - 1)
        for i, p in enumerate(pieces)
    ]
    tc, client = _grpc(server)
    sid = random.randrange(1, 2**63)
    try:
        texts = []
        for i, p in enumerate(pieces):
            r = client.infer(
                "asr_streaming",
                _stream_req(tc, p, lang if i == 0 else None, 8000 if i == 0 else None),
                sequence_id=sid,
                sequence_start=i == 0,
                sequence_end=i == len(pieces) - 1,
            )
            texts.append(r.as_numpy("TEXT").reshape(-1)[0].decode())
        assert texts == expected
        _expect_error(
            client.infer,
            "asr_streaming",
            _stream_req(tc, a8[:step8], lang, 4000),
            sequence_id=random.randrange(1, 2**63),
            sequence_start=True,
            match="SAMPLE_RATE: 4000 Hz",
        )
    finally:
        client.close()
