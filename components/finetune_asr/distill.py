"""Replay distillation: keep the replay languages' RNNT lattice close to the base model's.

Why: replay rows alone (hard labels) do not stop a small prompt-RNNT from forgetting how to *align* the old
languages. After a fine-tune on a new language the tiny demo model emits an old-language sentence prefix in
the first frames, then blanks (truncated transcripts), and more replay rows did not fix it (issue 4 notes).
Distillation adds, on the replay rows of each batch only, the KL divergence from the frozen base model's
output distribution to the student's at every node (t, u) of the RNNT lattice. This is the full-distribution
form; Panchapagesan et al. ("Efficient knowledge distillation for RNN-Transducer models", ICASSP 2021)
collapse it to blank / correct label / rest to save memory at large vocabularies. The blank probabilities
are part of the distribution, so the base's timing is kept, not just its labels. Target-language rows are
trained on their labels only.

The teacher is the base model itself (frozen, eval mode, same prompt, same att_context_size as the
student's step), run on the replay rows only; `make bench` prints the cost per step (docs/FINETUNE.md).

Replay rows are found by their *language*, not their prompt: under the recipe's unified prompt mode half the
rows carry the `auto` prompt, which says nothing about the language. So while distillation is attached, the
training loader adds each row's language prompt index to the batch (LangIndexedPromptDataset), and the
teacher sees the same prompt as the student (`auto` or the language).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import types
from collections.abc import Sequence

import torch
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)


def lattice_kl(
    student_logp: torch.Tensor, teacher_logp: torch.Tensor, enc_lens: torch.Tensor, label_lens: torch.Tensor
) -> torch.Tensor:
    """Per-sample KL(teacher || student) summed over the valid lattice nodes, divided by the frame count.

    student_logp, teacher_logp: [B, T, U+1, V+1] log-probabilities; enc_lens [B]; label_lens [B].
    Dividing by frames (not nodes) keeps a long utterance from weighing U times more than a short one while
    still counting every label position of a frame. Returns [B].
    """
    kl = (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)  # [B, T, U+1]
    b, t_max, u_max = kl.shape
    t_ok = torch.arange(t_max, device=kl.device)[None, :] < enc_lens[:, None]
    u_ok = torch.arange(u_max, device=kl.device)[None, :] <= label_lens[:, None]
    mask = t_ok[:, :, None] & u_ok[:, None, :]
    return (kl * mask).sum((1, 2)) / enc_lens.clamp(min=1).to(kl.dtype)


@contextlib.contextmanager
def fixed_att_context(encoder, att_context_size: Sequence[int]):
    """Make a cache-aware encoder use one att_context_size in this forward, in train and eval mode alike."""
    saved = encoder.att_context_size_all, encoder.att_context_size
    encoder.att_context_size_all, encoder.att_context_size = [list(att_context_size)], list(att_context_size)
    try:
        yield
    finally:
        encoder.att_context_size_all, encoder.att_context_size = saved


def _pick_att_context(encoder) -> list[int]:
    """The training-time draw NeMo's ConformerEncoder makes per step (att_context_probs weights)."""
    options = encoder.att_context_size_all
    if len(options) == 1:
        return list(options[0])
    return list(random.choices(options, weights=encoder.att_context_probs)[0])


def _chunk_kl(student_joint, teacher_joint, s_enc, s_dec, t_enc, t_dec, enc_lens, label_lens) -> torch.Tensor:
    """lattice_kl for a few rows; encoder outputs [b, T, D], decoder outputs [b, U+1, H] (joint layout)."""
    # log_softmax is idempotent where NeMo's joint already returned log-probabilities (on CPU)
    student = student_joint.joint(s_enc, s_dec).float().log_softmax(-1)
    with torch.no_grad():
        teacher = teacher_joint.joint(t_enc, t_dec).float().log_softmax(-1)
    return lattice_kl(student, teacher, enc_lens, label_lens)


def replay_kd(
    model,
    teacher,
    replay_ids: torch.Tensor,
    att: Sequence[int],
    fused: int,
    batch,
    encoded,
    encoded_len,
    decoder,
) -> torch.Tensor | None:
    """Mean lattice KL(teacher || model) over the batch's replay rows, or None when the batch has none.

    `encoded` [B, D, T] / `decoder` [B, H, U+1] are the student's outputs for the whole batch (already computed
    for the RNNT loss, so only the joint is recomputed for the replay rows); the teacher runs on those rows at
    the same att_context_size `att`, without gradients.
    """
    signal, signal_len, transcript, transcript_len, prompt_indices, *extra = batch
    lang_indices = extra[0] if extra else prompt_indices  # the row's language, whatever its prompt
    is_replay = torch.isin(lang_indices.long(), replay_ids.to(lang_indices.device))
    if not bool(is_replay.any()):
        return None
    idx = is_replay.nonzero().squeeze(1)
    if next(teacher.parameters()).device != signal.device:
        teacher.to(signal.device)
    u_max = int(transcript_len[idx].max())
    with torch.no_grad(), fixed_att_context(teacher.encoder, att):
        t_enc, _ = teacher.forward(
            input_signal=signal[idx], input_signal_length=signal_len[idx], prompt_indices=prompt_indices[idx]
        )
        t_dec, _, _ = teacher.decoder(targets=transcript[idx, :u_max], target_length=transcript_len[idx])
    s_enc, s_dec = encoded[idx].transpose(1, 2), decoder[idx, :, : u_max + 1].transpose(1, 2)
    t_enc, t_dec = t_enc.transpose(1, 2), t_dec.transpose(1, 2)
    enc_lens, label_lens = encoded_len[idx], transcript_len[idx]
    # The [b, T, U+1, V+1] lattices are built `fused` rows at a time and rebuilt in the backward pass
    # (activation checkpointing), so memory stays at one sub-batch's lattice, as in NeMo's fused joint.
    kls = []
    for i in range(0, len(idx), max(1, fused)):
        rows = slice(i, i + max(1, fused))
        kls.append(
            checkpoint(
                _chunk_kl,
                model.joint,
                teacher.joint,
                s_enc[rows],
                s_dec[rows],
                t_enc[rows],
                t_dec[rows],
                enc_lens[rows],
                label_lens[rows],
                use_reentrant=False,
            )
        )
    return torch.cat(kls).mean()


def attach_replay_distillation(model, teacher, replay_prompt_ids: Sequence[int], weight: float) -> None:
    """Replace `model.training_step` (this instance only) with NeMo's prompt-RNNT step + replay distillation.

    The RNNT part is NeMo's own (EncDecRNNTBPEModelWithPrompt.training_step: fused or plain joint, auxiliary
    losses); the step adds `weight` * mean lattice KL over the batch's replay rows, and logs both terms.
    `teacher` is never registered on the model, so it is neither optimised nor saved in the .nemo.
    """
    if weight <= 0:
        return
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    replay_ids = torch.tensor(sorted(set(int(i) for i in replay_prompt_ids)), dtype=torch.long)
    fused = int(getattr(model.joint, "_fused_batch_size", None) or 0) or 4

    def training_step(self, batch, batch_nb):
        signal, signal_len, transcript, transcript_len, prompt_indices, *extra = batch
        lang_indices = extra[0] if extra else prompt_indices
        att = _pick_att_context(self.encoder)
        with fixed_att_context(self.encoder, att):
            encoded, encoded_len = self.forward(
                input_signal=signal, input_signal_length=signal_len, prompt_indices=prompt_indices
            )
        decoder, target_length, _ = self.decoder(targets=transcript, target_length=transcript_len)
        if self.joint.fuse_loss_wer:
            loss_value, _, _, _ = self.joint(
                encoder_outputs=encoded,
                decoder_outputs=decoder,
                encoder_lengths=encoded_len,
                transcripts=transcript,
                transcript_lengths=transcript_len,
                compute_wer=False,
            )
        else:
            joint = self.joint(encoder_outputs=encoded, decoder_outputs=decoder)
            loss_value = self.loss(
                log_probs=joint, targets=transcript, input_lengths=encoded_len, target_lengths=target_length
            )
        loss_value = self.add_auxiliary_losses(loss_value)
        rnnt_loss = loss_value

        kd = replay_kd(self, teacher, replay_ids, att, fused, batch, encoded, encoded_len, decoder)
        if kd is not None:
            loss_value = loss_value + weight * kd
        self.log_dict(
            {
                "train_loss": loss_value,
                "train_rnnt_loss": rnnt_loss,
                "train_replay_kd": kd if kd is not None else 0.0,
                "train_replay_rows": float(torch.isin(lang_indices.long(), replay_ids).sum()),
                "learning_rate": self._optimizer.param_groups[0]["lr"],
                "global_step": torch.tensor(self.trainer.global_step, dtype=torch.float32),
            }
        )
        if getattr(self, "_optim_normalize_joint_txu", False):
            self._optim_normalize_txu = [encoded_len.max(), transcript_len.max()]
        return {"loss": loss_value}

    model.training_step = types.MethodType(training_step, model)
    _index_languages_in_training_batches(model)


def _index_languages_in_training_batches(model) -> None:
    """The training loader of `model` (this instance) yields a 6th tensor: each row's language prompt index."""
    from nemo.collections.asr.data.audio_to_text_lhotse_prompt_index import (
        LhotseSpeechToTextBpeDatasetWithPromptIndex,
    )
    from nemo.collections.common.data.lhotse import get_lhotse_dataloader_from_config
    from omegaconf import DictConfig, OmegaConf

    class LangIndexedPromptDataset(LhotseSpeechToTextBpeDatasetWithPromptIndex):
        def __getitem__(self, cuts):
            audio, audio_lens, cuts = self.load_audio(cuts)
            langs = [c.supervisions[0].language for c in cuts]
            tokens = [
                torch.as_tensor(self.tokenizer(c.supervisions[0].text, lang))
                for c, lang in zip(cuts, langs, strict=True)
            ]
            prompts = torch.tensor([self._get_prompt_index_for_cut(c) for c in cuts], dtype=torch.long)
            lang_ids = torch.tensor([self._get_prompt_index(lang) for lang in langs], dtype=torch.long)
            token_lens = torch.tensor([t.size(0) for t in tokens], dtype=torch.long)
            tokens = torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True, padding_value=0)
            return audio, audio_lens, tokens, token_lens, prompts, lang_ids

    original = model._setup_dataloader_from_config

    def setup(self, config):
        if not config.get("use_lhotse") or not config.get("initialize_prompt_feature", True):
            return original(config)
        ds_cfg = (
            OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else dict(config)
        )
        return get_lhotse_dataloader_from_config(
            config,
            global_rank=self.global_rank,
            world_size=self.world_size,
            dataset=LangIndexedPromptDataset(tokenizer=self.tokenizer, cfg=ds_cfg),
            tokenizer=self.tokenizer,
        )

    model._setup_dataloader_from_config = types.MethodType(setup, model)


def distill_replay_from_base(
    model, base_model: str | os.PathLike, replay_langs: Sequence[str], weight: float
) -> bool:
    """finetune()'s entry point: load the teacher from the base `.nemo` and attach replay distillation for
    `replay_langs`. False (nothing attached) when the weight is 0, there is no replay language, or the model
    has no prompt dictionary (replay languages are prompt indices)."""
    if weight <= 0 or not replay_langs:
        return False
    prompts = dict(model.cfg.model_defaults.get("prompt_dictionary", {}) or {})
    if not prompts:
        log.warning("replay_distill needs a prompt model (replay languages are prompt indices); off")
        return False
    from nemo.collections.asr.models import ASRModel

    teacher = ASRModel.restore_from(str(base_model), map_location="cpu")
    attach_replay_distillation(model, teacher, [int(prompts[lang]) for lang in replay_langs], weight)
    return True
