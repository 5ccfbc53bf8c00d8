"""A fine-tune's configuration: the recipe with the set knobs applied, fitted to this host, and the run's
fingerprint (checkpoints of a different run are never resumed)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.common.io import atomic_write_text, sha256_file
from components.finetune_asr.settings import FinetuneSettings, apply, parse_att_context_size, peak_lr
from components.finetune_asr.trainer import build_train_ds, fit_to_host

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """A fine-tune's resolved configuration: the recipe with the settings applied, fitted to this host."""

    recipe: Any  # settings.Recipe
    train_ds: dict
    optim: dict
    trainer_cfg: dict
    att_context_size: list[int] | None
    base_sha: str


def run_fingerprint(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def check_resume(work_dir: Path, fingerprint: str) -> None:
    """Refuse to resume from checkpoints of a different run (other data, base model or hyper-parameters)."""
    marker = work_dir / "run.json"
    ckpts = work_dir / "checkpoints"
    if marker.is_file():
        previous = json.loads(marker.read_text(encoding="utf-8")).get("fingerprint")
        if previous != fingerprint and ckpts.exists() and any(ckpts.iterdir()):
            raise RuntimeError(
                f"{ckpts} holds checkpoints of a different fine-tune (data, base model or hyper-parameters "
                f"differ; see {marker}); delete them or use another work_dir"
            )
    atomic_write_text(marker, json.dumps({"fingerprint": fingerprint}) + "\n")


def resolve_recipe(s: FinetuneSettings, devices: int | str | None, strategy: str | None) -> tuple[Any, dict]:
    """The recipe (`s.recipe`) with the set knobs applied, and its trainer section with `devices`/`strategy`."""
    recipe = apply(s)
    trainer_cfg = dict(recipe.trainer)
    for key, value in (("devices", devices), ("strategy", strategy)):
        if value not in (None, ""):
            trainer_cfg[key] = value
    return recipe, trainer_cfg


def resolve_config(
    s: FinetuneSettings,
    recipe,
    trainer_cfg: dict,
    rows: list[dict],
    train_manifest,
    manifest_path: Path,
    model_cfg,
    base_model: Path,
    work_dir: Path,
    coverage: dict,
) -> RunConfig:
    """Resolve train_ds / optim / trainer for this host, refuse another run's checkpoints, print the recipe."""
    from components.finetune_asr.shards import use_shards

    train_ds = build_train_ds(recipe.train_ds, manifest_path, model_cfg, s.seed)
    train_ds = use_shards(
        train_ds, rows, train_manifest, work_dir, s.seed
    )  # tarred shards at scale (issue 16)
    optim = recipe.optim
    for note in fit_to_host(trainer_cfg, train_ds):
        log.info("finetune: %s", note)
    trainer_cfg["use_distributed_sampler"] = False  # lhotse shards the data per rank itself
    att_context_size = parse_att_context_size(s.train_att_context_size)
    base_sha = sha256_file(base_model)
    fingerprint = run_fingerprint(
        base=base_sha,
        rows=sha256_file(manifest_path),
        recipe=sha256_file(recipe.path),
        optim=optim,
        batch_size=train_ds.get("batch_size"),
        batch_duration=train_ds.get("batch_duration"),
        prompt_mode=train_ds.get("default_prompt_mode"),
        precision=trainer_cfg.get("precision"),
        freeze=recipe.freeze,
        att=att_context_size,
        text_maps=coverage["text_maps"],
        seed=s.seed,
        replay_distill=s.replay_distill,
    )
    check_resume(work_dir, fingerprint)
    log.info(
        f"finetune: recipe {s.recipe}: {optim.get('name')} lr {optim.get('lr')} "
        f"({optim.get('sched', {}).get('name')}, peak {peak_lr(optim):.3g}), "
        + (
            f"batch {train_ds['batch_size']}"
            if train_ds.get("batch_size")
            else f"batch_duration {train_ds.get('batch_duration')} s"
        )
        + f", precision {trainer_cfg.get('precision')}, prompt mode {train_ds.get('default_prompt_mode')}"
        + f", frozen: {recipe.freeze}"
        + (f"; overrides {s.overrides()}" if s.overrides() else "")
    )
    return RunConfig(recipe, train_ds, optim, trainer_cfg, att_context_size, base_sha)
