"""Helpers of the Triton serving tests (test_triton_serving.py; test_gateway.py and the container test reuse
them): the tiny prompt model, the clips, the limits the test export is configured with, request builders."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF = REPO_ROOT / "components" / "finetune_asr" / "conf" / "tiny_prompt_rnnt.yaml"
EVAL_AUDIO = REPO_ROOT.parent / "shared" / "eval-audio"
ATT = [56, 1]  # the deployment lookahead the export is configured with
CHUNK_S = 0.16
MAX_AUDIO_S = 20.0  # the served models refuse longer requests
IDLE_S = 5.0  # max_sequence_idle of the served streaming model (production: 60 s), so expiry can be tested
MAX_CHUNK_S = 1.0  # the streaming model refuses longer chunks (the gateway cuts them into CHUNK_S pieces)
MAX_STREAM_S = 12.0  # per-stream audio budget of the test export (production: 3600 s)
CLIP_S = 3.0  # real clips are cropped: the point is parity, not accuracy, and the box has 2 cores
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Guten Morgen, wie geht es Ihnen heute?",
    "Bonjour à tous, comment allez-vous ?",
    "Hola, buenos días a todos.",
    "Bom dia a todos os presentes.",
    "Καλημέρα σας, τι κάνετε;",
    "Добро утро, как сте днес?",
]
LATENCY: dict[str, list[float]] = {}


def _timed(key: str, fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    LATENCY.setdefault(key, []).append(time.perf_counter() - t0)
    return out


def build_tiny_model(out_dir: Path) -> Path:
    """A tiny EncDecRNNTBPEModelWithPrompt from the project config, with a fixture SentencePiece tokenizer."""
    import torch
    from nemo.collections.asr.models import EncDecRNNTBPEModelWithPrompt
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model
    from omegaconf import OmegaConf, open_dict

    tok = out_dir / "tokenizer"
    tok.mkdir(parents=True)
    text = tok / "text.txt"
    text.write_text("\n".join(SENTENCES * 20) + "\n", encoding="utf-8")
    create_spt_model(
        str(text),
        vocab_size=96,
        sample_size=-1,
        do_lower_case=False,
        tokenizer_type="bpe",
        output_dir=str(tok),
    )
    cfg = OmegaConf.load(CONF)
    with open_dict(cfg):
        cfg.model.tokenizer.dir = str(tok)
        cfg.model.train_ds = None
        cfg.model.validation_ds = None
    torch.manual_seed(0)
    model = EncDecRNNTBPEModelWithPrompt(cfg=cfg.model)
    with torch.no_grad():  # untrained RNNTs emit only blanks; make it talk
        model.joint.joint_net[-1].bias[-1] -= 3.0
    path = out_dir / "model.nemo"
    model.save_to(str(path))
    return path


def test_clips() -> list[tuple[str, np.ndarray, str]]:
    """(name, 16 kHz audio, lang): real recordings when ../shared is there, else synthetic signals."""
    from components.common.audio import load_audio

    clips = []
    manifest = EVAL_AUDIO / "manifest.jsonl"
    if manifest.is_file():
        rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
        for lang in ("en-US", "de-DE"):
            row = next((r for r in rows if r["lang"] == lang), None)
            if row:
                audio = load_audio(EVAL_AUDIO / row["audio_filepath"])[: int(CLIP_S * 16000)]
                clips.append((Path(row["audio_filepath"]).name, audio, lang))
    if len(clips) < 2:
        t = np.arange(int(2.5 * 16000)) / 16000
        rng = np.random.RandomState(0)
        clips = [
            ("chirp", (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32), "en-US"),
            ("noise", (0.1 * rng.randn(t.size)).astype(np.float32), "de-DE"),
        ]
    return clips


test_clips.__test__ = False  # a helper, not a test


def _grpc(server):
    import tritonclient.grpc as grpcclient

    return grpcclient, grpcclient.InferenceServerClient(server.grpc_url.removeprefix("grpc://"))


def _offline_inputs(tc, audio: np.ndarray, lang: str):
    a = np.asarray(audio)[None, :] if np.asarray(audio).ndim == 1 else np.asarray(audio)
    dtype = {np.float32: "FP32", np.float64: "FP64", np.int16: "INT16"}[a.dtype.type]
    inputs = [tc.InferInput("AUDIO", list(a.shape), dtype), tc.InferInput("LANG", [1, 1], "BYTES")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(np.array([[lang.encode()]], dtype=np.object_))
    return inputs


def _stream_request(tc, chunk: np.ndarray, lang: str | None):
    c = np.ascontiguousarray(chunk, dtype=np.float32)[None, :]
    inputs = [tc.InferInput("AUDIO_CHUNK", list(c.shape), "FP32")]
    inputs[0].set_data_from_numpy(c)
    if lang is not None:
        inputs.append(tc.InferInput("LANG", [1, 1], "BYTES"))
        inputs[1].set_data_from_numpy(np.array([[lang.encode()]], dtype=np.object_))
    return inputs


def _in_process_stream(asr, audio: np.ndarray, lang: str) -> tuple[list[str], str]:
    step = int(CHUNK_S * 16000)
    state = asr.new_stream(lang, ATT)
    pieces = [audio[i : i + step] for i in range(0, audio.size, step)]
    partials = [asr.stream_step(state, p, last=i == len(pieces) - 1) for i, p in enumerate(pieces)]
    return partials, partials[-1]


def _stream_unary(tc, client, audio: np.ndarray, lang: str, sid: int) -> list[str]:
    """One whole stream over unary requests (CHUNK_S pieces) -> the text after every chunk."""
    step = int(CHUNK_S * 16000)
    pieces = [audio[i : i + step] for i in range(0, audio.size, step)]
    texts = []
    for i, piece in enumerate(pieces):
        r = client.infer(
            "asr_streaming",
            _stream_request(tc, piece, lang if i == 0 else None),
            sequence_id=sid,
            sequence_start=i == 0,
            sequence_end=i == len(pieces) - 1,
        )
        texts.append(r.as_numpy("TEXT").reshape(-1)[0].decode())
    return texts


def _expect_error(fn, *args, match: str, **kw):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as e:
        fn(*args, **kw)
    assert match.lower() in e.value.message().lower(), e.value.message()
    return e.value.message()


def _stream_req(tc, chunk: np.ndarray, lang: str | None = None, rate: int | None = None):
    inputs = _stream_request(tc, chunk, lang)
    if rate is not None:
        r = tc.InferInput("SAMPLE_RATE", [1, 1], "INT32")
        r.set_data_from_numpy(np.array([[rate]], dtype=np.int32))
        inputs.append(r)
    return inputs


def _still_up_and_correct(server, asr, audio, lang) -> None:
    from serving.client import transcribe_offline, transcribe_streaming
    from serving.server import is_ready

    assert is_ready(server.http_url)
    assert (
        transcribe_offline(server.http_url, audio, lang)
        == asr.transcribe([audio], [lang], att_context_size=ATT)[0]
    )
    assert (
        transcribe_streaming(server.grpc_url, audio, lang, CHUNK_S) == _in_process_stream(asr, audio, lang)[1]
    )
