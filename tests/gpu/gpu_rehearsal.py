"""The full-size rehearsal's GPU half, for a machine with one CUDA GPU (the `device` tool; never CI).

Repeats, at Nemotron 3.5's shape (components/finetune_asr/nemotron_shape.py), what the CPU rehearsal cannot
say about a GPU:
1. the base model: the released architecture (638 M parameters, 13,087 pieces), built on the GPU;
2. training: seconds per optimizer step of the nemotron35 recipe's step (AdamW, bf16-mixed autocast, fused
   joint, a lookahead drawn per step, replay distillation against a frozen bf16 teacher on half the rows);
3. serving: how many concurrent streams one GPU serves in real time at [56,0] (80 ms chunks) and [56,3]
   (320 ms): `AsrModel.stream_step_batch` (what the Triton streaming model runs per batched step) for
   1..N streams; a stream count is real-time when one step of that batch takes less than one chunk of audio.

Prints one JSON document (and writes it to $OUT/gpu_rehearsal.json when OUT is set). Budget: <= 8 min on one
GPU after the install (tests/gpu/run_on_device.sh does both). `--smoke` runs the same code on CPU with a
narrow model, in a few seconds, to keep the script working where no GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _sync(torch) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def build(smoke: bool):
    """The Nemotron-shaped model on the device (narrowed with --smoke), blank bias calibrated."""
    import numpy as np
    import torch
    from omegaconf import OmegaConf, open_dict

    from components.finetune_asr import nemotron_shape as ns

    texts = ["Включи светлината в кухнята.", "Άναψε το φως στην κουζίνα.", "Enciende la luz en la cocina."]
    tok = ns.build_tokenizer_of_size(
        texts,
        Path(os.environ.get("TMPDIR", "/tmp")) / "gpu_rehearsal_tok",
        size=1024 if smoke else ns.VOCAB_SIZE,
    )
    if smoke:  # same code path, a narrow encoder: seconds on a CPU
        cfg = OmegaConf.load(ns.SHAPE_CONFIG)
        with open_dict(cfg):
            cfg.model.encoder.n_layers, cfg.model.encoder.d_model, cfg.model.encoder.n_heads = 2, 128, 4
            cfg.model.model_defaults.pred_hidden = cfg.model.model_defaults.joint_hidden = 64
        path = Path(os.environ.get("TMPDIR", "/tmp")) / "gpu_rehearsal_smoke.yaml"
        OmegaConf.save(cfg, path)
        ns.SHAPE_CONFIG = path
    t0 = time.monotonic()
    model = ns.build_model(tok)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device)
    rng = np.random.default_rng(0)
    ns.calibrate_blank_bias(model, (0.1 * rng.standard_normal(48000)).astype("float32"))
    return model, device, time.monotonic() - t0, ns.parameter_breakdown(model)["total"], tok


def train_steps(model, tok, device: str, steps: int, batch: int, seconds: float) -> dict:
    """s/step of the recipe's training step: bf16-mixed autocast, AdamW, fused joint, replay distillation."""
    import torch

    from components.finetune_asr import nemotron_shape as ns
    from components.finetune_asr.distill import _pick_att_context, fixed_att_context, replay_kd

    teacher = ns.build_model(tok)  # a NeMo model does not deep-copy: a second one with the same weights
    teacher.load_state_dict(model.state_dict())
    teacher = teacher.eval().to(device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.98), weight_decay=1e-3)
    n = int(16000 * seconds)
    g = torch.Generator(device="cpu").manual_seed(0)
    signal = (0.1 * torch.randn(batch, n, generator=g)).to(device)
    sig_len = torch.full((batch,), n, device=device)
    u = int(seconds * 10)  # ~10 tokens per second of speech
    tokens = torch.randint(1, model.tokenizer.vocab_size, (batch, u), generator=g).to(device)
    tok_len = torch.full((batch,), u, device=device)
    prompts = torch.tensor(
        [30 if i % 2 else 101 for i in range(batch)], device=device
    )  # half `auto` (unified)
    langs = torch.tensor([30 if i % 2 else 21 for i in range(batch)], device=device)  # odd rows: replay (el)
    replay_ids = torch.tensor([21])
    times, peak = [], 0.0
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    for _ in range(steps):
        _sync(torch)
        t0 = time.monotonic()
        att = _pick_att_context(model.encoder)
        with torch.autocast(device_type=device, dtype=dtype, enabled=device == "cuda"):
            with fixed_att_context(model.encoder, att):
                enc, enc_len = model.forward(
                    input_signal=signal, input_signal_length=sig_len, prompt_indices=prompts
                )
            dec, _, _ = model.decoder(targets=tokens, target_length=tok_len)
            loss, _, _, _ = model.joint(
                encoder_outputs=enc,
                decoder_outputs=dec,
                encoder_lengths=enc_len,
                transcripts=tokens,
                transcript_lengths=tok_len,
                compute_wer=False,
            )
            batch_t = (signal, sig_len, tokens, tok_len, prompts, langs)
            kd = replay_kd(model, teacher, replay_ids, att, 2, batch_t, enc, enc_len, dec)
            total = loss + (kd if kd is not None else 0.0)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(torch)
        times.append(time.monotonic() - t0)
        if device == "cuda":
            peak = max(peak, torch.cuda.max_memory_allocated() / 1e9)
    steady = times[1:] or times
    return {
        "batch": batch,
        "seconds_audio_per_row": seconds,
        "s_per_step": round(sum(steady) / len(steady), 3),
        "first_step_s": round(times[0], 2),
        "peak_gpu_memory_gb": round(peak, 2),
        "replay_kd": float(kd.detach()) if kd is not None else None,
    }


def realtime_streams(model, device: str, att: list[int], max_streams: int, steps: int = 12) -> dict:
    """Per-step latency of stream_step_batch for doubling stream counts; real time while step < chunk."""
    import numpy as np

    from components.common.asr_infer import AsrModel

    asr = AsrModel(model.eval(), device)
    chunk_s = 0.08 * (1 + att[1])  # one encoder step: (1 + right context) frames of 80 ms
    piece = int(16000 * chunk_s)
    rng = np.random.default_rng(1)
    out, n = [], 1
    while n <= max_streams:
        states = [asr.new_stream("bg-BG", att) for _ in range(n)]
        audio = [(0.1 * rng.standard_normal(piece)).astype("float32") for _ in range(n)]
        asr.stream_step_batch(states, audio, [False] * n)  # warm-up (cache allocation, kernels)
        t0 = time.monotonic()
        for _ in range(steps):
            asr.stream_step_batch(states, audio, [False] * n)
        step_s = (time.monotonic() - t0) / steps
        out.append({"streams": n, "step_ms": round(step_s * 1e3, 1), "real_time": step_s < chunk_s})
        if step_s >= chunk_s:
            break
        n *= 2
    served = max([p["streams"] for p in out if p["real_time"]] or [0])
    return {
        "att_context_size": att,
        "chunk_ms": round(chunk_s * 1e3),
        "curve": out,
        "streams_in_real_time": served,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--smoke", action="store_true", help="CPU, narrow model: checks the script, measures nothing"
    )
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of audio per training row")
    ap.add_argument("--max-streams", type=int, default=256)
    a = ap.parse_args(argv)
    import torch

    if not a.smoke and not torch.cuda.is_available():
        print(
            "no CUDA device: this script is for a GPU machine (use --smoke to check it on CPU)",
            file=sys.stderr,
        )
        return 2
    t0 = time.monotonic()
    model, device, build_s, params, tok = build(a.smoke)
    res = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke)",
        "torch": torch.__version__,
        "parameters": params,
        "build_s": round(build_s, 1),
        "bf16_supported": bool(device == "cuda" and torch.cuda.is_bf16_supported()),
    }
    res["train"] = train_steps(
        model,
        tok,
        device,
        2 if a.smoke else a.steps,
        2 if a.smoke else a.batch,
        1.0 if a.smoke else a.seconds,
    )
    res["serving"] = [
        realtime_streams(model, device, att, 2 if a.smoke else a.max_streams, 2 if a.smoke else 12)
        for att in ([56, 0], [56, 3])
    ]
    res["seconds"] = round(time.monotonic() - t0, 1)
    text = json.dumps(res, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_rehearsal.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
