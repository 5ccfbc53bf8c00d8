"""A Nemotron-shaped base model: the released checkpoint's architecture with random weights.

Why: the real 600 M `.nemo` cannot be downloaded here, yet every stage must run at its size (2.4 GB through
MLflow, export and Triton; a 13,087-piece joint; the fused loss; five lookaheads). The shape is in
conf/nemotron35_shape.yaml (sources in docs/REHEARSAL.md). The tokenizer is a real SentencePiece model of
exactly 13,087 pieces: BPE trained on the given text (so that text is spelled without <unk>) together with
seeded pseudo-words that give it enough n-grams to reach the real vocabulary size. The result is cached by content (config, text, seed, code
version) and never committed: `.cache/nemotron_shape/<key>/model.nemo` + model.json.

CLI: `python -m components.finetune_asr nemotron-shape --text data/metadata.csv --out .cache/nemotron_shape`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from components.finetune_asr import core
from components.finetune_asr.settings import CONF_DIR

log = logging.getLogger(__name__)

SHAPE_CONFIG = CONF_DIR / "nemotron35_shape.yaml"
VOCAB_SIZE = 13_087  # SentencePiece pieces of the released tokenizer (13,088 joint outputs with blank)
RELEASED_PARAMS = 600e6  # "0.6b" in the model card
BUILDER_VERSION = "3"  # bump when the construction changes (part of the cache key)
# Letters of the seeded pseudo-words that give BPE enough n-grams to reach VOCAB_SIZE merges.
_PAD_ALPHABET = "abcdefghijklmnopqrstuvwxyzαβγδεζηθικλμνξοπρστυφχψωабвгдежзийклмнопрстуфхцчшщъьюя"


def build_tokenizer_of_size(texts: Iterable[str], out_dir: str | os.PathLike, size: int = VOCAB_SIZE) -> Path:
    """A SentencePiece BPE tokenizer of exactly `size` pieces that spells `texts` without <unk>.

    The given text alone is far too small for 13,087 merges, so it is trained together with seeded
    pseudo-words over Latin, Greek and Cyrillic letters (enough distinct n-grams to reach the real vocabulary
    size; SentencePiece's hard vocabulary limit makes the size exact or fails). Writes tokenizer.model /
    tokenizer.vocab / vocab.txt as NeMo's `bpe` tokenizer dir expects."""
    import random

    import sentencepiece as spm

    lines = sorted({t.strip() for t in texts if t and t.strip()})
    if not lines:
        raise ValueError("nemotron shape: no text to train the tokenizer on")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    filler = [
        " ".join("".join(rng.choice(_PAD_ALPHABET) for _ in range(rng.randint(3, 9))) for _ in range(12))
        for _ in range(20_000)
    ]
    corpus = out_dir / "text.txt"
    corpus.write_text("\n".join(lines * 20 + filler) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.Train(
        input=str(corpus),
        model_prefix=str(out_dir / "tokenizer"),
        vocab_size=size,
        model_type="bpe",
        character_coverage=1.0,
        bos_id=-1,
        eos_id=-1,
        minloglevel=2,
        num_threads=2,
    )
    corpus.unlink()
    sp = spm.SentencePieceProcessor(model_file=str(out_dir / "tokenizer.model"))
    if sp.get_piece_size() != size:
        raise RuntimeError(f"nemotron shape: tokenizer has {sp.get_piece_size()} pieces, expected {size}")
    special = {"<unk>", "<s>", "</s>", "<pad>"}
    pieces = [sp.id_to_piece(i) for i in range(size)]
    vocab = [
        (p[1:] if p.startswith("▁") and len(p) > 1 else p if p.startswith("▁") else f"##{p}")
        for p in pieces
        if p not in special
    ]
    (out_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return out_dir


def read_texts(sources: Sequence[str | os.PathLike]) -> list[str]:
    """The `text` column of metadata.csv files and/or the `text` field of JSON-lines manifests."""
    import csv
    import json

    texts: list[str] = []
    for src in sources:
        path = Path(src)
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                texts += [row["text"] for row in csv.DictReader(f)]
        else:
            texts += [
                json.loads(line)["text"]
                for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
    return texts


def parameter_breakdown(model) -> dict[str, int]:
    """Parameters per top-level module (encoder, prompt_kernel, decoder, joint, ...) and the total."""
    out: dict[str, int] = {}
    for name, p in model.named_parameters():
        top = name.split(".")[0]
        out[top] = out.get(top, 0) + p.numel()
    out = dict(sorted(out.items(), key=lambda kv: -kv[1]))
    out["total"] = sum(v for k, v in out.items())
    return out


def format_breakdown(counts: dict[str, int]) -> str:
    total = counts["total"]
    rows = [
        f"  {name:16s} {n / 1e6:9.2f} M  {n / total:6.1%}" for name, n in counts.items() if name != "total"
    ]
    return "\n".join(
        [*rows, f"  {'total':16s} {total / 1e6:9.2f} M  ({total / RELEASED_PARAMS:.0%} of 600 M)"]
    )


def calibrate_blank_bias(
    model, audio, prompt: str = "auto", lo_rate: float = 1.0, hi_rate: float = 3.0, margin: float = 1.0
) -> float:
    """Lower the joint's blank logit until greedy decoding emits text on any clip, even after a few steps.

    A randomly initialised RNNT has nearly flat logits: it emits only blanks, or, a fraction of a logit lower,
    `max_symbols` tokens at every frame. Measured on the 638 M shape: the whole band lies within ~0.5 of bias,
    and three fine-tuning steps moved it by ~0.3, so a model calibrated inside the band served empty text.
    So the bias is bisected to the band's edge (`lo_rate`-`hi_rate` tokens per frame on `audio`) and then
    lowered by `margin` more: the model emits text on every clip, prompt and lookahead, and "served text ==
    in-process text" compares real strings. Returns the shift."""
    import torch

    x = torch.as_tensor(audio, dtype=torch.float32)[None]
    bias = model.joint.joint_net[-1].bias
    base = float(bias[-1].detach())
    prompt_id = int(model.cfg.model_defaults.prompt_dictionary[prompt])
    model.eval()
    with torch.inference_mode():
        enc, enc_len = model.forward(
            input_signal=x,
            input_signal_length=torch.tensor([x.shape[1]]),
            prompt_indices=torch.tensor([prompt_id]),
        )
    lo, hi = -40.0, 40.0
    for _ in range(24):
        mid = (lo + hi) / 2
        with torch.no_grad():
            bias[-1] = base + mid
        with torch.inference_mode():
            hyp = model.decoding.rnnt_decoder_predictions_tensor(encoder_output=enc, encoded_lengths=enc_len)[
                0
            ]
        rate = len(hyp.y_sequence) / max(1, int(enc_len[0]))
        if lo_rate <= rate <= hi_rate:
            with torch.no_grad():
                bias[-1] = base + mid - margin
            return mid - margin
        lo, hi = (mid, hi) if rate > hi_rate else (lo, mid)
    raise RuntimeError(
        "nemotron shape: could not calibrate the blank bias (no bias gives a usable token rate)"
    )


def cache_key(texts: Sequence[str], seed: int, calibrate_audio: str | os.PathLike | None = None) -> str:
    h = hashlib.sha256()
    if calibrate_audio:
        h.update(Path(calibrate_audio).read_bytes())
    h.update(SHAPE_CONFIG.read_bytes())
    h.update(BUILDER_VERSION.encode())
    h.update(str(seed).encode())
    for t in sorted(set(texts)):
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


def build_model(tokenizer_dir: str | os.PathLike, seed: int = 0):
    """The EncDecRNNTBPEModelWithPrompt of the released shape, randomly initialised (no data loaders)."""
    import lightning.pytorch as pl
    from nemo.collections.asr.models import EncDecRNNTBPEModelWithPrompt
    from omegaconf import OmegaConf, open_dict

    pl.seed_everything(seed, verbose=False)
    cfg = OmegaConf.load(SHAPE_CONFIG)
    with open_dict(cfg):
        cfg.model.tokenizer.dir = str(tokenizer_dir)
        # no data, so no loaders: built without the dataset sections, which the saved config keeps (resolved)
        sections = {
            k: OmegaConf.to_container(cfg.model[k], resolve=True) for k in ("train_ds", "validation_ds")
        }
        for k in sections:
            cfg.model.pop(k)
    model = EncDecRNNTBPEModelWithPrompt(cfg=cfg.model)
    with open_dict(model.cfg):
        for k, v in sections.items():
            model.cfg[k] = OmegaConf.create({**v, "manifest_filepath": None})
    return model


def build_nemotron_shaped(
    texts: Sequence[str],
    cache_dir: str | os.PathLike,
    seed: int = 0,
    calibrate_audio: str | os.PathLike | None = None,
) -> str:
    """<cache_dir>/<key>/model.nemo (+ model.json): built once per (shape, text, seed, calibration clip), then
    reused. With `calibrate_audio`, the blank bias is calibrated on it (calibrate_blank_bias)."""
    texts = list(texts)
    key = cache_key(texts, seed, calibrate_audio)
    final = Path(cache_dir) / key
    model_path = final / "model.nemo"
    if model_path.is_file() and (final / "model.json").is_file():
        log.info("nemotron-shape: cached %s (%.2f GB)", model_path, model_path.stat().st_size / 1e9)
        return str(model_path)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{key}."))
    try:
        t0 = time.monotonic()
        tok = build_tokenizer_of_size(texts, work / "tokenizer")
        model = build_model(tok, seed)
        counts = parameter_breakdown(model)
        shift = None
        if calibrate_audio:
            from components.common.audio import load_audio

            shift = calibrate_blank_bias(model, load_audio(str(calibrate_audio)))
        log.info(
            f"nemotron-shape: {type(model).__name__}, {model.tokenizer.vocab_size} pieces, "
            f"{model.encoder.att_context_size_all} lookaheads, built in {time.monotonic() - t0:.0f} s:\n"
            + format_breakdown(counts)
        )
        stage = work / "final"
        t1 = time.monotonic()
        core.save_model_atomic(model, stage / "model.nemo")
        core.write_sidecar(
            stage / "model.nemo",
            core.model_card(
                model,
                base_model_uri=None,
                base_model_sha256=None,
                languages=[],
                role="nemotron-shaped rehearsal base",
                parameters=counts,
                shape_config=SHAPE_CONFIG.name,
                cache_key=key,
                blank_bias_shift=shift,
            ),
        )
        log.info(
            "nemotron-shape: saved %.2f GB in %.0f s",
            (stage / "model.nemo").stat().st_size / 1e9,
            time.monotonic() - t1,
        )
        del model
        if final.exists():
            shutil.rmtree(final)
        os.replace(stage, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return str(model_path)
