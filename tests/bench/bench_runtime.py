"""Runtime choice for the Triton python backend, by measurement: torch (NeMo) vs onnxruntime.

The served per-chunk cost is dominated by the cache-aware encoder step *with the language prompt*. NeMo's own ONNX
export drops the prompt (docs/SERVING.md), so this exports a prompt-aware wrapper:
`encoder.forward_for_export` (batch-first caches, drop_extra_pre_encoded applied) followed by the one-hot prompt
and `prompt_kernel`, with a 6th input `prompt_index` [B]. On one model, one steady-state streaming chunk
(caches filled by the chunks before it) and the same thread count, it times:

* torch: `encoder.cache_aware_stream_step` + the per-row prompt (exactly what `AsrModel.stream_step_batch` runs);
* onnxruntime (CPUExecutionProvider): the exported graph;

at batch 1 and batch 16 (16 streams stepped together), checks that both give the same encoder output, and prints
the ratios. The RNNT greedy decoder stays in torch/NeMo in either case (its loop is Python either way).

    python tests/bench/bench_runtime.py [--model X.nemo] [--threads 1] [--repeats 200]

Writes outputs/bench/runtime.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def build_scaled_model(work: Path, d_model: int, layers: int) -> Path:
    """A random-weight model of the same class and config as the demo's, widened/deepened (encoder d_model,
    layers; heads d_model/64): how the runtime ratio moves towards the 600 M-parameter Nemotron size."""
    import torch
    from nemo.collections.asr.models import EncDecRNNTBPEModelWithPrompt
    from omegaconf import OmegaConf, open_dict

    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from test_asr_infer import write_tiny_tokenizer

    write_tiny_tokenizer(work)
    cfg = OmegaConf.load(ROOT / "components" / "finetune_asr" / "conf" / "tiny_prompt_rnnt.yaml")
    with open_dict(cfg):
        cfg.model.tokenizer.dir = str(work / "tokenizer")
        del cfg.model.train_ds
        del cfg.model.validation_ds
        cfg.model.encoder.d_model = d_model
        cfg.model.encoder.n_layers = layers
        cfg.model.encoder.n_heads = max(1, d_model // 64)
        cfg.model.encoder.subsampling_conv_channels = d_model
    torch.manual_seed(0)
    path = work / f"scaled-{d_model}x{layers}.nemo"
    EncDecRNNTBPEModelWithPrompt(cfg=cfg.model).save_to(str(path))
    return path


def _timeit(fn, repeats: int) -> list[float]:
    for _ in range(5):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help=".nemo (default: cached base model, else the tiny fixture)")
    p.add_argument("--att-context-size", default="[56,1]")
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime intra-op threads")
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--batches", default="1,16")
    p.add_argument("--d-model", type=int, help="instead of --model: a random model this wide (e.g. 256)")
    p.add_argument("--layers", type=int, default=8, help="with --d-model: encoder layers")
    p.add_argument("--out", default=str(ROOT / "outputs" / "bench"))
    return p.parse_args(argv)


@dataclass
class Step:
    """One steady-state streaming chunk of one clip: the encoder input and the caches the chunks before it
    filled, with the streaming geometry (frames) it was cut with."""

    x: object  # [1, feat, pre + chunk] features
    caches: tuple  # cache_last_channel, cache_last_time, cache_last_channel_len (NeMo layout)
    chunk: int
    shift: int
    pre: int
    drop: int
    audio: np.ndarray
    lang: str


def _steady_step(asr, att: list[int]) -> Step:
    """Features of one clip, cut in streaming chunks; the caches filled with every chunk but the last."""
    import torch

    from tests.bench.serve.model import load_clips

    m, enc = asr.model, asr.model.encoder
    enc.set_default_att_context_size(att)
    cfg = enc.streaming_cfg

    def pick(v, first: bool = False) -> int:
        return int(v[0] if first else v[1]) if isinstance(v, (list, tuple)) else int(v)

    chunk, shift, pre = pick(cfg.chunk_size), pick(cfg.shift_size), pick(cfg.pre_encode_cache_size)
    drop = int(cfg.drop_extra_pre_encoded)
    _, audio, lang = load_clips(set(asr.prompt_dictionary), 4, 6.0)[0]
    with torch.inference_mode():
        feats, _ = m.preprocessor(
            input_signal=torch.from_numpy(audio)[None], length=torch.tensor([audio.size])
        )
    # steady-state chunks: [pre-encode cache | chunk], advanced by `shift` frames (not the first chunk)
    starts = list(range(pre, feats.shape[-1] - chunk, shift))
    windows = [feats[:, :, s - pre : s + chunk] for s in starts]
    c1, c2, c3 = enc.get_initial_cache_state(batch_size=1)
    with torch.inference_mode():
        for w in windows[:-1]:  # fill the caches with real history
            _, _, c1, c2, c3 = enc.cache_aware_stream_step(
                processed_signal=w,
                processed_signal_length=torch.tensor([w.shape[-1]]),
                cache_last_channel=c1,
                cache_last_time=c2,
                cache_last_channel_len=c3,
                keep_all_outputs=False,
                drop_extra_pre_encoded=drop,
            )
    return Step(windows[-1], (c1, c2, c3), chunk, shift, pre, drop, audio, lang)


def _prompt_encoder(asr):
    """forward_for_export + language prompt: the streaming encoder step NeMo's export lacks."""
    import torch

    m = asr.model

    class PromptEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.prompt_kernel, self.num_prompts = (
                m.encoder,
                m.prompt_kernel,
                int(m.num_prompts),
            )

        def forward(
            self, audio_signal, length, cache_last_channel, cache_last_time, cache_last_channel_len, idx
        ):
            out, out_len, n1, n2, n3 = self.encoder.forward_for_export(
                audio_signal=audio_signal,
                length=length,
                cache_last_channel=cache_last_channel,
                cache_last_time=cache_last_time,
                cache_last_channel_len=cache_last_channel_len,
            )
            h = out.transpose(1, 2)
            onehot = torch.nn.functional.one_hot(idx, self.num_prompts).to(h.dtype)
            h = torch.cat([h, onehot[:, None, :].expand(-1, h.shape[1], -1)], dim=-1)
            return self.prompt_kernel(h).transpose(1, 2), out_len, n1, n2, n3

    return PromptEncoder().eval()


def _export_session(asr, st: Step, prompt: int, work: Path, threads: int):
    """The prompt-aware encoder exported to ONNX and loaded in onnxruntime -> (session, export seconds)."""
    import onnxruntime as ort
    import torch

    c1, c2, c3 = st.caches
    onnx_path = work / "encoder_prompt.onnx"
    names_in = ["audio_signal", "length", "cache_last_channel", "cache_last_time", "cache_last_channel_len"]
    names_in.append("prompt_index")
    names_out = [
        "encoded",
        "encoded_len",
        "cache_last_channel_next",
        "cache_last_time_next",
        "cache_len_next",
    ]
    b_first = (st.x, torch.tensor([st.x.shape[-1]]), c1.transpose(0, 1), c2.transpose(0, 1), c3)
    t0 = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(
            _prompt_encoder(asr),
            (*b_first, torch.tensor([prompt])),
            str(onnx_path),
            input_names=names_in,
            output_names=names_out,
            dynamic_axes={n: {0: "B"} for n in names_in + names_out},
            opset_version=17,
            dynamo=False,
        )
    export_s = time.perf_counter() - t0
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"]), export_s


def _time_batch(asr, sess, st: Step, prompt: int, b: int, repeats: int) -> dict:
    """torch vs onnxruntime, the same step for `b` streams: p50/p95 and the largest output difference."""
    import torch

    enc, x = asr.model.encoder, st.x
    c1, c2, c3 = st.caches
    xb = x.repeat(b, 1, 1)
    lb = torch.full((b,), x.shape[-1], dtype=torch.long)
    c1b, c2b, c3b = c1.repeat(1, b, 1, 1), c2.repeat(1, b, 1, 1), c3.repeat(b)
    idx = [prompt] * b

    def run_torch():
        with torch.inference_mode():
            e, _, *_ = enc.cache_aware_stream_step(
                processed_signal=xb,
                processed_signal_length=lb,
                cache_last_channel=c1b,
                cache_last_time=c2b,
                cache_last_channel_len=c3b,
                keep_all_outputs=False,
                drop_extra_pre_encoded=st.drop,
            )
            return asr._apply_prompts(e, idx)

    feed = {
        "audio_signal": xb.numpy(),
        "length": lb.numpy(),
        "cache_last_channel": c1b.transpose(0, 1).contiguous().numpy(),
        "cache_last_time": c2b.transpose(0, 1).contiguous().numpy(),
        "cache_last_channel_len": c3b.numpy(),
        "prompt_index": np.array(idx, dtype=np.int64),
    }

    def run_ort():
        return sess.run(["encoded"], feed)[0]

    diff = float(np.abs(run_torch().numpy() - run_ort()).max())
    tt, to = _timeit(run_torch, repeats), _timeit(run_ort, repeats)
    r = {
        "torch_p50_ms": 1000 * float(np.median(tt)),
        "ort_p50_ms": 1000 * float(np.median(to)),
        "torch_p95_ms": 1000 * float(np.percentile(tt, 95)),
        "ort_p95_ms": 1000 * float(np.percentile(to, 95)),
        "max_abs_diff": diff,
    }
    r["ort_over_torch"] = r["ort_p50_ms"] / r["torch_p50_ms"]
    return r


def _whole_step_p50_ms(asr, st: Step, att: list[int]) -> float:
    """The whole served step (features + encoder + prompt + RNNT greedy decoding) for the same stream in
    torch: what share of it the runtime choice can touch."""
    hop = int(asr.model.preprocessor.featurizer.hop_length)
    n = st.shift * hop
    pieces = [st.audio[i : i + n] for i in range(0, st.audio.size - n, n)]
    steps = []
    for _ in range(3):
        state = asr.new_stream(st.lang, att)
        for piece in pieces:
            t0 = time.perf_counter()
            asr.stream_step(state, piece, last=False)
            steps.append(time.perf_counter() - t0)
    return 1000 * float(np.median(steps[len(pieces) :]))


def main(argv: list[str] | None = None) -> int:
    a = _parse(argv)
    os.environ["ASR_THREADS"] = str(a.threads)
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime is not installed (pip install onnxruntime==1.32.0): runtime comparison skipped")
        return 0
    import torch
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(nemo_logging.ERROR)
    from components.common.asr_infer import AsrModel
    from components.export_triton.core import parse_att_context_size
    from tests.bench.serve.model import pick_model

    torch.set_num_threads(a.threads)
    att = parse_att_context_size(a.att_context_size)
    work = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    if a.d_model:
        nemo, source = (
            build_scaled_model(work, a.d_model, a.layers),
            f"random, d_model {a.d_model} x {a.layers}",
        )
    else:
        nemo, source = pick_model(work, a.model)
    asr = AsrModel.load(str(nemo))
    st = _steady_step(asr, att)
    prompt = asr.prompt_dictionary[st.lang]
    sess, export_s = _export_session(asr, st, prompt, work, a.threads)
    res: dict = {
        "model": str(nemo),
        "model_source": source,
        "params": int(sum(p.numel() for p in asr.model.parameters())),
        "att_context_size": att,
        "chunk_frames": st.chunk,
        "pre_encode_cache_frames": st.pre,
        "threads": a.threads,
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "export_s": export_s,
        "batches": {},
    }
    print(
        f"model {nemo} ({source}, {res['params'] / 1e6:.2f} M params); att {att}; chunk {st.chunk} frames "
        f"(+{st.pre} cache); threads {a.threads}; onnx export {export_s:.1f}s",
        flush=True,
    )
    res["stream_step_p50_ms"] = _whole_step_p50_ms(asr, st, att)
    for b in [int(v) for v in a.batches.split(",")]:
        r = res["batches"][str(b)] = _time_batch(asr, sess, st, prompt, b, a.repeats)
        print(
            f"batch {b:>2}: encoder+prompt per step  torch p50 {r['torch_p50_ms']:.2f} ms  onnxruntime p50 "
            f"{r['ort_p50_ms']:.2f} ms  -> ort/torch {r['ort_over_torch']:.2f}  (max |diff| {r['max_abs_diff']:.1e})",
            flush=True,
        )
    b1 = res["batches"].get("1")
    if b1:
        step_ms = res["stream_step_p50_ms"]
        projected = step_ms - b1["torch_p50_ms"] + b1["ort_p50_ms"]
        res["encoder_share_of_step"] = b1["torch_p50_ms"] / step_ms
        res["projected_step_with_ort_ms"] = projected
        print(
            f"whole stream_step (torch) p50 {step_ms:.2f} ms; encoder+prompt share {100 * b1['torch_p50_ms'] / step_ms:.0f}%;"
            f" with the onnxruntime encoder it would be ~{projected:.2f} ms ({projected / step_ms:.2f}x)"
        )
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "runtime.json" if not a.d_model else f"runtime-d{a.d_model}x{a.layers}.json"
    (out / name).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out / name}")
    shutil.rmtree(work, ignore_errors=True)  # the exported graph (and a scaled model) are large
    return 0


if __name__ == "__main__":
    sys.exit(main())
