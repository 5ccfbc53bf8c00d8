"""Checks of a model against text and audio: tokenizer coverage before training, loss and WER after it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from components.finetune_asr.data import _lang, _read

log = logging.getLogger(__name__)


def validation_loss(model, rows: Sequence[dict], batch_size: int = 8) -> dict[str, float]:
    """Teacher-forced RNNT loss per language of `model` on manifest `rows` (absolute audio paths).

    More sensitive than WER for a small model: it shows forgetting (a replay language's loss rising) long
    before greedy decoding changes, and costs one forward pass.
    """
    import torch

    from components.common.audio import load_audio

    pd = dict(model.cfg.model_defaults.get("prompt_dictionary", {}))
    by_lang: dict[str, list[dict]] = {}
    for r in rows:
        by_lang.setdefault(_lang(r), []).append(r)
    was_training = model.training
    model.eval()
    out = {}
    try:
        with torch.inference_mode():
            for lang, part in sorted(by_lang.items()):
                total, n = 0.0, 0
                for i in range(0, len(part), batch_size):
                    batch = part[i : i + batch_size]
                    audio = [
                        torch.from_numpy(load_audio(r["audio_filepath"], strict_rate=True)) for r in batch
                    ]
                    ids = [model.tokenizer.text_to_ids(r["text"]) for r in batch]
                    sig = torch.nn.utils.rnn.pad_sequence(audio, batch_first=True)
                    sig_len = torch.tensor([a.numel() for a in audio])
                    tgt = torch.nn.utils.rnn.pad_sequence([torch.tensor(t) for t in ids], batch_first=True)
                    tgt_len = torch.tensor([len(t) for t in ids])
                    enc, enc_len = model.forward(
                        input_signal=sig,
                        input_signal_length=sig_len,
                        prompt_indices=torch.full((len(batch),), pd[lang], dtype=torch.long),
                    )
                    dec, _, _ = model.decoder(targets=tgt, target_length=tgt_len)
                    joint = model.joint(encoder_outputs=enc, decoder_outputs=dec)
                    loss = model.loss(
                        log_probs=joint, targets=tgt, input_lengths=enc_len, target_lengths=tgt_len
                    )
                    total += float(loss) * len(batch)
                    n += len(batch)
                out[lang] = total / n
    finally:
        model.train(was_training)
    return out


def validation_wer(model, val_manifest, langs: Sequence[str], max_per_lang: int = 200) -> dict[str, float]:
    """Normalised WER per language of `model` (offline, default lookahead) on up to `max_per_lang` rows each.

    A sanity number for the MLflow run and the sidecar; the gate uses evaluate_wer's streaming evaluation.
    """
    if not val_manifest or not Path(val_manifest).is_file():
        return {}
    from components.common.asr_infer import AsrModel
    from components.common.audio import load_audio
    from components.common.wer import score

    rows = [r for r in _read(val_manifest) if _lang(r) in langs]
    picked: dict[str, list[dict]] = {}
    for r in rows:
        picked.setdefault(_lang(r), [])
        if len(picked[_lang(r)]) < max_per_lang:
            picked[_lang(r)].append(r)
    if not picked:
        return {}
    asr = AsrModel(model, str(next(model.parameters()).device))
    out = {}
    for lang, part in sorted(picked.items()):
        hyps = asr.transcribe(
            [load_audio(r["audio_filepath"], strict_rate=True) for r in part], [lang] * len(part)
        )
        out[lang] = round(score([r["text"] for r in part], hyps, [lang] * len(part)).wer_norm, 4)
    log.info("validation WER (normalised, offline): %s", out)
    return out


def tokenizer_coverage(model, rows: Sequence[dict], max_unk_rate: float, text_maps) -> dict:
    """Round-trip the training text through the base model's tokenizer (components.common.coverage);
    raise CoverageError naming the languages and characters when the <unk> share is above `max_unk_rate`."""
    from components.common.coverage import CoverageError, Tokenizer, check_coverage

    if type(model.tokenizer).__name__ == "AggregateTokenizer":
        raise CoverageError(
            "finetune: the base model has an aggregate tokenizer (one SentencePiece model per language); "
            "this pipeline's coverage check and text maps need one multilingual tokenizer"
        )
    rep = check_coverage(
        [(r["text"], r["lang"]) for r in rows],
        Tokenizer.from_nemo_tokenizer(model.tokenizer),
        max_unk_rate,
        text_maps,
    )
    log.info("%s", rep.summary)
    if not rep.passed:
        raise CoverageError(
            f"finetune: the base tokenizer cannot spell the training text ({rep.summary}); fix the text, or "
            f"pass a text map (text_maps, e.g. el_final_sigma), or raise max_unk_rate knowingly"
        )
    return rep.to_dict()
