"""What training changes on the model, and what is undone before it is saved: frozen parameters, the replay
distillation term, one training lookahead; the text maps are stored in its config."""

from __future__ import annotations

from pathlib import Path

from components.finetune_asr.settings import FREEZE_CHOICES, FinetuneSettings

# Freeze policies (FREEZE_CHOICES): "encoder" trains prompt_kernel + decoder + joint; "all_but_prompt_decoder"
# trains only the prompt projection and the prediction network (a new domain's vocabulary/LM behaviour).


def prepare_for_training(
    model, s: FinetuneSettings, freeze: str, base_model: Path, att_context_size
) -> list | None:
    """Freeze per `freeze` (the recipe's, or the run's setting), add the replay distillation term, and with a
    training lookahead give it all the sampling probability; returns the probabilities to restore after
    training (None: nothing to restore)."""
    from components.finetune_asr.distill import distill_replay_from_base

    apply_freeze(model, freeze)
    distill_replay_from_base(model, base_model, s.replays, s.replay_distill)
    if att_context_size is None:
        return None
    if att_context_size not in model.encoder.att_context_size_all:
        raise ValueError(
            f"train_att_context_size {att_context_size} is not one of the model's "
            f"{model.encoder.att_context_size_all}"
        )
    saved_probs = list(model.encoder.att_context_probs)
    model.encoder.att_context_probs = [
        1.0 if a == att_context_size else 0.0 for a in model.encoder.att_context_size_all
    ]
    return saved_probs


def restore_after_training(model, freeze: str, saved_probs, coverage: dict) -> None:
    """Undo what training needed (one lookahead, frozen parameters); store the text maps in the config."""
    if saved_probs is not None:
        model.encoder.att_context_probs = saved_probs
    if freeze != "none":
        for p in model.parameters():
            p.requires_grad_(True)  # the saved model must be trainable again for the next fine-tune
    if coverage["text_maps"]:
        from omegaconf import open_dict

        with open_dict(model.cfg):
            model.cfg.text_maps = list(coverage["text_maps"])
    model.eval()


def apply_freeze(model, policy: str) -> None:
    """Freeze parameters per FREEZE_CHOICES (requires_grad only: Lightning's train() keeps dropout active)."""
    if policy == "none":
        return
    if policy == "encoder":
        frozen = [model.encoder, model.preprocessor]
    elif policy == "all_but_prompt_decoder":
        trainable = {
            id(p)
            for m in (model.decoder, getattr(model, "prompt_kernel", None))
            if m is not None
            for p in m.parameters()
        }
        frozen = [p for p in model.parameters() if id(p) not in trainable]
        for p in frozen:
            p.requires_grad_(False)
        return
    else:
        raise ValueError(f"freeze must be one of {FREEZE_CHOICES}, got {policy!r}")
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
