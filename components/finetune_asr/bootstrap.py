"""Pre-train the tiny base model: the local stand-in for Nemotron 3.5's released checkpoint.

Why: no pretrained weights can be downloaded here, and a fine-tune demo needs a base that already knows some
languages (el, es) but not the target (bg) — just as Nemotron needs fine-tuning for its "adaptation-ready"
languages. The tokenizer is trained on every language's text, the target's included, so the fine-tune keeps it
(as the recipe keeps Nemotron's). Measured here: 800 steps on el+es (~500 clips each) reach ~50-64 % held-out WER
on those languages and >100 % on bg (reference/tiny-model-learning.md §5). Results are cached by content.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from components.common.io import sha256_file
from components.common.manifest import write_manifest
from components.finetune_asr import core
from components.finetune_asr.settings import load_recipe
from components.finetune_asr.tokenizer import build_tokenizer

log = logging.getLogger(__name__)

BOOTSTRAP_VERSION = 1  # bump when the training code changes what a given key produces


def cache_key(
    config: str | os.PathLike,
    rows: Sequence[dict],
    tokenizer_texts: Sequence[str],
    max_steps: int,
    seed: int,
    vocab_size: int,
    batch_size: int | None,
    lr: float | None,
) -> str:
    """Hash of everything that decides the weights: config, selected data (text + audio bytes), steps, seed."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "v": BOOTSTRAP_VERSION,
                "steps": max_steps,
                "seed": seed,
                "vocab": vocab_size,
                "bs": batch_size,
                "lr": lr,
            },
            sort_keys=True,
        ).encode()
    )
    h.update(Path(config).read_bytes())
    for r in rows:
        h.update(json.dumps([r["text"], r["lang"], r["duration"]], ensure_ascii=False).encode())
        h.update(_file_digest(r["audio_filepath"]))
    for t in tokenizer_texts:
        h.update(t.encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


def _file_digest(path: str) -> bytes:
    return bytes.fromhex(sha256_file(path))


def bootstrap_base_model(
    train_manifest: str | os.PathLike,
    cache_dir: str | os.PathLike,
    langs: Sequence[str] = ("el-GR", "es-ES"),
    tokenizer_texts: Sequence[str] | None = None,
    max_steps: int = 800,
    seed: int = 0,
    config: str | os.PathLike | None = None,
    vocab_size: int = 256,
    batch_size: int | None = None,
    lr: float | None = None,
    threads: int | None = None,
) -> str:
    """Train the tiny EncDecRNNTBPEModelWithPrompt from scratch on `langs` rows; returns the path of
    <cache_dir>/<key>/base.nemo (model.json sidecar beside it: sha256, languages, train_steps, loss).

    `tokenizer_texts`: all languages' training text (default: every row of `train_manifest`, the target
    language's included). If `<cache_dir>/<key>/base.nemo` and its sidecar exist, it is returned untrained.
    """
    t_start = time.monotonic()
    config = Path(config) if config else core.TINY_CONFIG
    out_dir = Path(cache_dir)
    langs = list(langs)
    rows = core.select_rows(train_manifest, langs, seed=seed, prompt_dictionary=_prompt_dictionary(config))
    if tokenizer_texts is None:
        tokenizer_texts = [r["text"] for r in core._read(train_manifest)]
    tokenizer_texts = list(tokenizer_texts)
    key = cache_key(config, rows, tokenizer_texts, max_steps, seed, vocab_size, batch_size, lr)
    final_dir = out_dir / key
    model_path, sidecar_path = final_dir / "base.nemo", final_dir / "model.json"
    if model_path.is_file() and sidecar_path.is_file():
        log.info("bootstrap: cached base model %s", model_path)
        return str(model_path)

    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{key}."))
    try:
        model, outcome, hyper = _train_from_scratch(
            config, rows, tokenizer_texts, work, max_steps, seed, vocab_size, batch_size, lr, threads
        )
        stage = work / "final"
        stage.mkdir()
        core.save_model_atomic(model, stage / "base.nemo")
        core.write_sidecar(
            stage / "base.nemo",
            core.model_card(
                model,
                base_model_uri=None,
                base_model_sha256=None,
                languages=langs,
                train_steps=outcome.steps_done,
                rows_per_lang=core.count_langs(rows),
                config=config.name,
                bootstrap_key=key,
                final_train_loss=_tail_mean(outcome.loss_curve),
                train_seconds=round(outcome.seconds, 1),
                hyperparameters=hyper,
            ),
        )
        if final_dir.exists():
            shutil.rmtree(final_dir)  # an incomplete earlier attempt (complete ones returned above)
        os.replace(stage, final_dir)  # the key directory appears complete or not at all
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("bootstrap: base model %s (%.0f s)", model_path, time.monotonic() - t_start)
    return str(model_path)


def _train_from_scratch(
    config: Path,
    rows: list[dict],
    tokenizer_texts: list[str],
    work: Path,
    max_steps: int,
    seed: int,
    vocab_size: int,
    batch_size: int | None,
    lr: float | None,
    threads: int | None,
):
    """A tokenizer from `tokenizer_texts`, the model built from `config` around it, trained on `rows` in
    `work` -> (model, TrainOutcome, the hyper-parameters for the sidecar)."""
    import lightning.pytorch as pl
    from nemo.collections.asr.models import EncDecRNNTBPEModelWithPrompt
    from omegaconf import OmegaConf, open_dict

    core.set_threads(threads)
    pl.seed_everything(seed, workers=True, verbose=False)
    tok_dir = build_tokenizer(tokenizer_texts, work / "tokenizer", vocab_size=vocab_size)
    manifest = work / "train_manifest.jsonl"
    write_manifest(manifest, rows)

    cfg = OmegaConf.load(config)
    with open_dict(cfg):
        cfg.model.tokenizer.dir = str(tok_dir)
        cfg.model.train_ds.manifest_filepath = str(manifest)
        # No validation during training (standalone evaluation is the gate); NeMo still builds the loader.
        cfg.model.validation_ds.manifest_filepath = str(manifest)
    sections = load_recipe(config)  # the tiny YAML carries train_ds / optim / trainer too
    model = EncDecRNNTBPEModelWithPrompt(cfg=cfg.model)
    train_ds = core.build_train_ds(sections.train_ds, manifest, model.cfg, seed)
    if batch_size:
        train_ds.update(batch_size=int(batch_size))
    optim = dict(sections.optim, **({"lr": float(lr)} if lr else {}))
    outcome = core.train(
        model, train_ds, optim, sections.trainer, max_steps, work, checkpoint_every=0, label="bootstrap"
    )
    hyper = {
        "lr": optim.get("lr"),
        "batch_size": train_ds.get("batch_size"),
        "seed": seed,
        "vocab_size": vocab_size,
    }
    return model, outcome, hyper


def _prompt_dictionary(config: Path) -> dict[str, int]:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(config)
    return dict(OmegaConf.to_container(cfg.model.model_defaults.prompt_dictionary))


def _tail_mean(curve: list[tuple[int, float]], n: int = 10) -> float | None:
    tail = [loss for _, loss in curve[-n:]]
    return sum(tail) / len(tail) if tail else None
