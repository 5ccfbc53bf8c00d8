"""The fine-tune's artifact: model.nemo written atomically, and its model.json sidecar (the model card)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.common.io import atomic_write_text, sha256_file
from components.finetune_asr.data import count_langs
from components.finetune_asr.settings import FinetuneSettings, peak_lr

if TYPE_CHECKING:
    from components.finetune_asr.configure import RunConfig
    from components.finetune_asr.trainer import TrainOutcome


def save_model_atomic(model, path: str | os.PathLike) -> str:
    """model.save_to a temp file next to `path`, then rename: a reader never sees a partial .nemo."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".nemo")
    os.close(fd)
    try:
        model.save_to(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; servers and other users read models
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return str(path)


def model_card(model, **extra: Any) -> dict:
    """The sidecar's model-derived fields (docs/ARCHITECTURE.md, model artifact contract)."""
    enc = model.encoder
    return {
        "model_class": str(model.cfg.get("target") or f"{type(model).__module__}.{type(model).__name__}"),
        "prompt_dictionary": dict(model.cfg.model_defaults.get("prompt_dictionary", {})),
        "att_context_sizes": [list(a) for a in getattr(enc, "att_context_size_all", [])],
        "vocab_size": int(model.tokenizer.vocab_size),
        **extra,
    }


def write_sidecar(model_path: str | os.PathLike, card: dict) -> str:
    """model.json next to model.nemo, written last and atomically: its presence means the .nemo is complete."""
    model_path = Path(model_path)
    doc = {"sha256": sha256_file(model_path), "model_file": model_path.name, **card}
    out = model_path.with_name("model.json")
    atomic_write_text(out, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    os.chmod(out, 0o644)
    return str(out)


def sidecar_fields(
    s: FinetuneSettings,
    cfg: RunConfig,
    base_model_uri: str,
    langs: list[str],
    outcome: TrainOutcome,
    rows: list[dict],
    val_wer: dict,
    coverage: dict,
) -> dict:
    """The sidecar's run fields (model_card adds the model-derived ones)."""
    return dict(
        base_model_uri=base_model_uri,
        base_model_sha256=cfg.base_sha,
        languages=langs,
        target_languages=s.targets,
        replay_languages=s.replays,
        train_steps=outcome.steps_done,
        rows_per_lang=count_langs(rows),
        config=cfg.recipe.path.name,
        recipe=s.recipe,
        overrides=s.overrides(),
        hyperparameters=hyperparameters(s, cfg),
        val_wer=val_wer,
        tokenizer_coverage=coverage,
    )


def hyperparameters(s: FinetuneSettings, cfg: RunConfig) -> dict:
    """The sidecar's `hyperparameters`: what the run trained with, as resolved."""
    optim, train_ds = cfg.optim, cfg.train_ds
    return {
        "lr": optim.get("lr"),
        "peak_lr": peak_lr(optim),
        "scheduler": optim.get("sched", {}).get("name"),
        "warmup_steps": optim.get("sched", {}).get("warmup_steps"),
        "batch_size": train_ds.get("batch_size"),
        "batch_duration": train_ds.get("batch_duration"),
        "prompt_mode": train_ds.get("default_prompt_mode"),
        "precision": cfg.trainer_cfg.get("precision"),
        "freeze": cfg.recipe.freeze,
        "att_context_size": cfg.att_context_size,
        "seed": s.seed,
        "replay_per_lang": s.replay_per_lang,
        "replay_ratio": s.replay_ratio,
        "replay_distill": s.replay_distill,
    }


def save_artifact(model, out_dir: Path, card: dict) -> tuple[Path, Path | str]:
    """On rank zero, out_dir/model.nemo then its model.json sidecar; returns their paths."""
    is_rank_zero = getattr(model, "global_rank", 0) == 0
    model_path = out_dir / "model.nemo"
    sidecar: Path | str = out_dir / "model.json"
    if is_rank_zero:
        save_model_atomic(model, model_path)
        sidecar = write_sidecar(model_path, model_card(model, **card))
    return model_path, sidecar
