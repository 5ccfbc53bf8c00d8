"""Replay distillation: keep the replay languages' RNNT lattice close to the base model's.

Why: replay rows alone (hard labels) do not stop a small prompt-RNNT from forgetting how to *align* the old
languages. After a fine-tune on a new language the tiny demo model emits an old-language sentence prefix in
the first frames, then blanks (truncated transcripts), and more replay rows did not fix it (issue 4 notes).
Distillation adds, on the replay rows of each batch only, the KL divergence from the frozen base model's
output distribution to the student's at every node (t, u) of the RNNT lattice (Panchapagesan et al.,
"Efficient knowledge distillation for RNN-Transducer models", ICASSP 2021, used the full-lattice form
before collapsing it for memory). The blank probabilities are part of that distribution, so the base's
timing is kept, not just its labels. Target-language rows are trained on their labels only.

The teacher is the base model itself (frozen, eval mode, same prompt, same att_context_size as the
student's step), run on the replay rows only: ~+20 % time per step on the demo mix.
"""

from __future__ import annotations

import contextlib
import random
import types
from collections.abc import Sequence

import torch


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


def _joint_logp(joint, encoded: torch.Tensor, decoded: torch.Tensor, fused_batch: int) -> torch.Tensor:
    """Joint log-probabilities [B, T, U+1, V+1] from encoder [B, D, T] and decoder [B, H, U+1] outputs."""
    parts = []
    step = max(1, fused_batch)
    for i in range(0, encoded.shape[0], step):
        logits = joint.joint(encoded[i : i + step].transpose(1, 2), decoded[i : i + step].transpose(1, 2))
        parts.append(logits.float().log_softmax(-1))  # idempotent where NeMo's CPU joint already did it
    return torch.cat(parts)


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
    signal, signal_len, transcript, transcript_len, prompt_indices = batch
    is_replay = torch.isin(prompt_indices.long(), replay_ids.to(prompt_indices.device))
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
        t_logp = _joint_logp(teacher.joint, t_enc, t_dec, fused)
    s_logp = _joint_logp(model.joint, encoded[idx], decoder[idx, :, : u_max + 1], fused)
    return lattice_kl(s_logp, t_logp, encoded_len[idx], transcript_len[idx]).mean()


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
        signal, signal_len, transcript, transcript_len, prompt_indices = batch
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
                "learning_rate": self._optimizer.param_groups[0]["lr"],
                "global_step": torch.tensor(self.trainer.global_step, dtype=torch.float32),
            }
        )
        if getattr(self, "_optim_normalize_joint_txu", False):
            self._optim_normalize_txu = [encoded_len.max(), transcript_len.max()]
        return {"loss": loss_value}

    model.training_step = types.MethodType(training_step, model)
