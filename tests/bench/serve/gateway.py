"""`--via gateway`: the same clips through the gateway's Riva StreamingRecognize, closed loop, and paired
against the same requests straight to Triton."""

from __future__ import annotations

import queue
import random
import threading
import time

import numpy as np

from tests.bench.serve.load import pct
from tests.bench.serve.model import split
from tests.bench.serve.triton import MODEL, request_inputs


def gateway_level(
    addr: str, key: str, clips, step: int, n: int, per_stream: int
) -> tuple[list[float], float]:
    """(per-chunk seconds, chunks/s) of `n` concurrent Riva StreamingRecognize clients through the gateway.
    Closed loop like the Triton clients: a stream sends its next 160 ms chunk when the interim result of the
    previous one arrives (the gateway answers one interim result per chunk). Like `drive`, each client runs
    whole clips, one session per clip (client k starts at clip k), until it has `per_stream` chunks and at
    least one whole clip: the same audio and the same session lengths as the Triton side."""
    import grpc
    from riva.client.proto import riva_asr_pb2 as rasr
    from riva.client.proto import riva_asr_pb2_grpc as rasr_grpc

    channel = grpc.insecure_channel(addr)
    stub = rasr_grpc.RivaSpeechRecognitionStub(channel)
    lats: list[list[float]] = [[] for _ in range(n)]
    stamps: list[list[float]] = [[] for _ in range(n)]

    def session(k: int, audio: np.ndarray, lang: str) -> None:
        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
        pieces = [pcm[i : i + 2 * step] for i in range(0, len(pcm), 2 * step)]
        pieces = [p for p in pieces if len(p) == 2 * step]  # a trailing partial piece waits for the final
        got: queue.Queue = queue.Queue()
        cfg = rasr.StreamingRecognitionConfig(
            config=rasr.RecognitionConfig(encoding=1, sample_rate_hertz=16000, language_code=lang),
            interim_results=True,
        )

        def requests():
            yield rasr.StreamingRecognizeRequest(streaming_config=cfg)
            for p in pieces:
                t0 = time.perf_counter()
                yield rasr.StreamingRecognizeRequest(audio_content=p)
                t1 = got.get(timeout=120)
                lats[k].append(t1 - t0)
                stamps[k].append(t1)

        for resp in stub.StreamingRecognize(requests(), metadata=[("authorization", f"Bearer {key}")]):
            if not resp.results[0].is_final:
                got.put(time.perf_counter())

    def one(k: int) -> None:
        i = k
        while True:
            _, audio, lang = clips[i % len(clips)]
            session(k, audio, lang)
            i += n
            if len(lats[k]) >= per_stream:
                return

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    channel.close()
    lo, hi = max(s[0] for s in stamps), min(s[-1] for s in stamps)
    inside = sum(lo < x <= hi for s in stamps for x in s)
    total = sum(len(s) for s in stamps)
    cps = (
        inside / (hi - lo)
        if hi > lo and inside
        else total / (max(s[-1] for s in stamps) - min(s[0] for s in stamps))
    )
    return [x for lat in lats for x in lat], cps


class OneStream:
    """A lone closed-loop client that alternates with another one session (clip) at a time: `direct` = one
    tritonclient gRPC stream to Triton, else one Riva StreamingRecognize session per clip through the gateway.
    Both send the clip's full `step` pieces (a trailing partial one waits for the final) and time every piece
    after the first (the first carries START and LANG): the same requests on both sides."""

    def __init__(self, addr: str, step: int, key: str = "", direct: bool = True):
        import grpc

        self.step, self.key, self.direct = step, key, direct
        self.answers: queue.Queue = queue.Queue()
        if direct:
            import tritonclient.grpc as tc

            self.tc = tc
            self.client = tc.InferenceServerClient(addr.removeprefix("grpc://"))
            self.client.start_stream(
                callback=lambda result, error: self.answers.put((error, time.perf_counter()))
            )
        else:
            from riva.client.proto import riva_asr_pb2 as rasr
            from riva.client.proto import riva_asr_pb2_grpc as rasr_grpc

            self.rasr = rasr
            self.channel = grpc.insecure_channel(addr)
            self.stub = rasr_grpc.RivaSpeechRecognitionStub(self.channel)

    def session(self, audio: np.ndarray, lang: str) -> list[float]:
        pieces = [p for p in split(audio, self.step) if p.size == self.step]
        return self._direct(pieces, lang) if self.direct else self._gateway(pieces, lang)

    def _direct(self, pieces, lang) -> list[float]:
        seq, lat = random.randrange(1, 2**62), []
        for i, piece in enumerate(pieces):
            t0 = time.perf_counter()
            self.client.async_stream_infer(
                MODEL,
                request_inputs(self.tc, piece, lang if i == 0 else None),
                sequence_id=seq,
                sequence_start=i == 0,
                sequence_end=i == len(pieces) - 1,
            )
            error, t1 = self.answers.get(timeout=120)
            if error is not None:
                raise RuntimeError(f"chunk {i}: {error}")
            if i:
                lat.append(t1 - t0)
        return lat

    def _gateway(self, pieces, lang) -> list[float]:
        rasr, lat = self.rasr, []
        cfg = rasr.StreamingRecognitionConfig(
            config=rasr.RecognitionConfig(encoding=1, sample_rate_hertz=16000, language_code=lang),
            interim_results=True,
        )
        pcm = [(np.clip(p, -1, 1) * 32767).astype("<i2").tobytes() for p in pieces]

        def requests():
            yield rasr.StreamingRecognizeRequest(streaming_config=cfg)
            for i, p in enumerate(pcm):
                t0 = time.perf_counter()
                yield rasr.StreamingRecognizeRequest(audio_content=p)
                t1 = self.answers.get(timeout=120)
                if i:
                    lat.append(t1 - t0)

        meta = [("authorization", f"Bearer {self.key}")]
        for resp in self.stub.StreamingRecognize(requests(), metadata=meta):
            if not resp.results[0].is_final:
                self.answers.put(time.perf_counter())
        return lat

    def close(self) -> None:
        if self.direct:
            self.client.stop_stream()
            self.client.close()
        else:
            self.channel.close()


def gateway_pairs_one_stream(url: str, gw_addr: str, key: str, clips, step: int, pairs: int) -> list[float]:
    """The gateway's added p50 at 1 stream as `pairs` paired sessions: each pair runs one clip straight to
    Triton and the same clip through the gateway, back to back, in alternating order (ABBA); -> per-pair
    (gateway p50 - Triton p50) in ms. Short pairs: the box's load drifts less within a pair than within a
    multi-second pass, which is what made single passes swing by several ms."""
    direct, gw = OneStream(url, step), OneStream(gw_addr, step, key, direct=False)
    added = []
    try:
        for k in range(pairs):
            _, audio, lang = clips[k % len(clips)]
            order = (direct, gw) if k % 2 == 0 else (gw, direct)
            p50 = {id(side): pct(side.session(audio, lang), 50) for side in order}
            added.append(p50[id(gw)] - p50[id(direct)])
    finally:
        direct.close()
        gw.close()
    return added
