"""Fine-tune a NeMo prompt-RNNT `.nemo` (Nemotron 3.5 ASR class) on target languages, with replay.

The recipe (NVIDIA's notebook / Baseten port, shared/reference/nemotron-recipe-and-anchors.md): a full fine-tune
initialised from the `.nemo`, the base tokenizer kept, lhotse data whose every line carries `lang`/`target_lang`,
AdamW with a fixed `max_steps`, and a slice of the other languages mixed in ("replay") so they are not forgotten.
The architecture always comes from the `.nemo`; a NeMo-native YAML (`conf/`) supplies only train_ds / optim /
trainer: the tiny YAML on CPU, `nemotron35_finetune.yaml` on GPU. On CPU the RNNT loss is swapped for the
vectorised one in fastloss.py (NeMo's is pure Python there).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.common.io import atomic_write_text, sha256_file
from components.common.manifest import ManifestError, read_manifest, write_manifest

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parent / "conf"
TINY_CONFIG = CONF_DIR / "tiny_prompt_rnnt.yaml"
NEMOTRON_CONFIG = CONF_DIR / "nemotron35_finetune.yaml"
# Freeze policies: "encoder" trains prompt_kernel + decoder + joint; "all_but_prompt_decoder" trains only the
# prompt projection and the prediction network (the cheapest adaptation: a new domain's vocabulary/LM behaviour).
FREEZE_CHOICES = ("none", "encoder", "all_but_prompt_decoder")
SCHEDULERS = {"noam": "NoamAnnealing", "cosine": "CosineAnnealing"}
# Manifest fields we pass on to NeMo (lhotse reads audio_filepath/duration/text/lang; the rest is provenance).
_KEEP_FIELDS = ("audio_filepath", "duration", "text", "lang", "target_lang", "speaker", "id")


@dataclass
class FinetuneResult:
    model_path: str  # out_dir/model.nemo
    sidecar_path: str  # out_dir/model.json
    steps_done: int  # trainer.global_step at the end (counts resumed steps too)
    train_loss_curve: list[tuple[int, float]]  # (global step, train loss) for the steps run in this call
    seconds: float  # wall time of this call
    resumed_from_step: int = 0  # > 0 when training continued from a checkpoint
    n_train_rows: int = 0
    rows_per_lang: dict[str, int] = field(default_factory=dict)
    lr_curve: list[tuple[int, float]] = field(default_factory=list)  # (global step, learning rate)
    val_wer: dict[str, float] = field(default_factory=dict)  # normalised WER per language on the val manifest
    resolved_config: dict = field(default_factory=dict)  # train_ds / optim / trainer as used
    replay_kd_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, replay distillation KL)

    @property
    def final_loss(self) -> float:
        """Mean loss of the last (up to) 10 recorded steps: one step's loss is too noisy to report."""
        tail = [loss for _, loss in self.train_loss_curve[-10:]]
        return float(sum(tail) / len(tail)) if tail else float("nan")


@dataclass
class TrainOutcome:
    """What one `trainer.fit` produced (shared by finetune and bootstrap)."""

    steps_done: int
    resumed_from_step: int
    loss_curve: list[tuple[int, float]]
    seconds: float
    lr_curve: list[tuple[int, float]] = field(default_factory=list)
    replay_kd_curve: list[tuple[int, float]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- data selection
def select_rows(
    train_manifest: str | os.PathLike,
    target_langs: Sequence[str],
    replay_manifest: str | os.PathLike | None = None,
    replay_langs: Sequence[str] = (),
    replay_per_lang: int = 150,
    seed: int = 0,
    prompt_dictionary: dict[str, int] | None = None,
    replay_ratio: float | None = None,
) -> list[dict]:
    """All target-language rows + `replay_per_lang` seeded random rows per replay language.

    `replay_ratio` (0 <= r < 1), when given, replaces `replay_per_lang`: replay rows make up that fraction of
    the training mix, split evenly over the replay languages (r=0.3 with 500 target rows -> 214 replay rows).

    Every row gets absolute `audio_filepath` and `lang` = `target_lang` (the prompt key lhotse reads; the
    Nemotron recipe reads `target_lang`). Fails naming the file and language when a language has no rows, is
    not a prompt-dictionary key, or an audio file is missing.
    """
    target_langs = list(target_langs)
    replay_langs = [lang for lang in replay_langs if lang not in target_langs]
    if not target_langs:
        raise ValueError("finetune: target_langs is empty")
    if replay_per_lang < 0:
        raise ValueError(f"finetune: replay_per_lang must be >= 0, got {replay_per_lang}")
    if replay_ratio is not None and not 0.0 <= replay_ratio < 1.0:
        raise ValueError(f"finetune: replay_ratio must be in [0, 1), got {replay_ratio}")
    if prompt_dictionary is not None:
        unknown = [lang for lang in [*target_langs, *replay_langs] if lang not in prompt_dictionary]
        if unknown:
            raise ValueError(
                f"finetune: languages {unknown} are not keys of the model's prompt_dictionary "
                f"(known: {sorted(prompt_dictionary)})"
            )

    train_rows = _read(train_manifest)
    rows = [r for r in train_rows if _lang(r) in target_langs]
    for lang in target_langs:
        if not any(_lang(r) == lang for r in rows):
            found = sorted({_lang(r) for r in train_rows})
            raise ValueError(f"{train_manifest}: no rows with lang '{lang}' (languages present: {found})")

    if replay_ratio is not None and replay_langs:
        total = round(replay_ratio / (1.0 - replay_ratio) * len(rows))
        replay_per_lang = math.ceil(total / len(replay_langs)) if total else 0
    if replay_langs and replay_per_lang > 0:
        src = replay_manifest or train_manifest
        src_rows = train_rows if src == train_manifest else _read(src)
        rng = random.Random(seed)
        for lang in replay_langs:
            pool = [r for r in src_rows if _lang(r) == lang]
            if not pool:
                found = sorted({_lang(r) for r in src_rows})
                raise ValueError(f"{src}: no rows with lang '{lang}' for replay (languages present: {found})")
            rows += rng.sample(pool, min(replay_per_lang, len(pool)))

    out = []
    for r in rows:
        if not os.path.isfile(r["audio_filepath"]):
            raise ManifestError(
                f"{train_manifest}: audio file not found: {r['audio_filepath']} (id {r.get('id')})"
            )
        row = {k: r[k] for k in _KEEP_FIELDS if k in r}
        row["lang"] = row["target_lang"] = _lang(r)
        row["duration"] = float(r["duration"])
        out.append(row)
    return out


def _read(path: str | os.PathLike) -> list[dict]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"manifest not found: {path}")
    return read_manifest(path, absolute=True)


def _lang(row: dict) -> str:
    return row.get("target_lang") or row["lang"]


def count_langs(rows: Sequence[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["lang"]] = counts.get(r["lang"], 0) + 1
    return dict(sorted(counts.items()))


# ----------------------------------------------------------------------------------------------- config
def default_config() -> Path:
    """The tiny YAML on a CPU box, the Nemotron fine-tune YAML where CUDA is available."""
    import torch

    return NEMOTRON_CONFIG if torch.cuda.is_available() else TINY_CONFIG


def load_train_sections(config: str | os.PathLike) -> tuple[dict, dict, dict]:
    """(train_ds, optim, trainer) from a NeMo-native YAML, interpolations resolved, `???` left as None."""
    from omegaconf import OmegaConf

    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"finetune config not found: {path}")
    cfg = OmegaConf.load(path)
    for key in ("model.train_ds", "model.optim", "trainer"):
        if OmegaConf.select(cfg, key) is None:
            raise ValueError(f"{path}: missing section '{key}'")

    def section(key: str) -> dict:
        node = OmegaConf.select(cfg, key)
        out = OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
        return {k: (None if v == "???" else v) for k, v in out.items()}

    return section("model.train_ds"), section("model.optim"), section("trainer")


def config_sha256(config: str | os.PathLike) -> str:
    return sha256_file(config)


# --------------------------------------------------------------------------------------------- training
def set_threads(threads: int | None) -> int:
    """torch threads = `threads`, else $ASR_THREADS, else the CPU count (the documented default)."""
    import torch

    n = threads or int(os.environ.get("ASR_THREADS") or 0) or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def _callbacks(label: str, max_steps: int, every: int = 50):
    """Lightning callbacks: per-step loss recorder with progress lines on stderr, and the resume marker."""
    import lightning.pytorch as pl

    class LossRecorder(pl.Callback):
        """Records (step, loss) and prints step / loss / s/step / ETA every `every` steps (why: an 800-step
        CPU run takes minutes; a silent job looks hung)."""

        def __init__(self) -> None:
            self.curve: list[tuple[int, float]] = []
            self.lr_curve: list[tuple[int, float]] = []
            self.kd_curve: list[tuple[int, float]] = []  # the replay distillation term, when it is on
            self.start_step = 0
            self._t0 = 0.0
            self._last_t = 0.0
            self._last_step = 0

        def on_train_start(self, trainer, pl_module) -> None:
            self.start_step = int(trainer.global_step)  # > 0 after a checkpoint restore
            self._t0 = self._last_t = time.monotonic()
            self._last_step = self.start_step
            if self.start_step:
                print(f"[{label}] resumed at step {self.start_step}/{max_steps}", file=sys.stderr, flush=True)
                # A restored NeMo scheduler keeps the interrupted run's horizon; follow this run's max_steps.
                for sc in trainer.lr_scheduler_configs:
                    sched = sc.scheduler
                    if getattr(sched, "max_steps", None) not in (None, max_steps) and not getattr(
                        sched, "constant_steps", 0
                    ):
                        sched.max_steps = max_steps

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            step = int(trainer.global_step)
            self.curve.append((step, float(loss.detach().cpu()) if hasattr(loss, "detach") else float(loss)))
            if trainer.optimizers:
                self.lr_curve.append((step, float(trainer.optimizers[0].param_groups[0]["lr"])))
            kd = trainer.callback_metrics.get("train_replay_kd")  # logged by distill.py's training step
            if kd is not None:
                self.kd_curve.append((step, float(kd)))
            if step % every == 0 or step == max_steps or step == self.start_step + 1:
                now = time.monotonic()
                s_per_step = (now - self._last_t) / max(1, step - self._last_step)
                window = [v for _, v in self.curve[-every:]]
                kd_window = [v for _, v in self.kd_curve[-every:]]
                kd_text = f" (replay KD {sum(kd_window) / len(kd_window):.3f})" if kd_window else ""
                eta = s_per_step * (max_steps - step)
                print(
                    f"[{label}] step {step}/{max_steps} loss {sum(window) / len(window):.3f}{kd_text} "
                    f"{s_per_step:.2f} s/step ETA {_fmt_s(eta)}",
                    file=sys.stderr,
                    flush=True,
                )
                self._last_t, self._last_step = now, step

    return LossRecorder()


def _fmt_s(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def train(
    model,
    train_ds: dict,
    optim: dict,
    trainer_cfg: dict,
    max_steps: int,
    work_dir: str | os.PathLike,
    checkpoint_every: int = 0,
    resume: bool = False,
    label: str = "train",
) -> TrainOutcome:
    """Attach a Lightning trainer, set up lhotse training data and the optimiser, fit for `max_steps`.

    Checkpoints go to `<work_dir>/checkpoints` every `checkpoint_every` steps (`last.ckpt` = newest); with
    `resume`, an existing `last.ckpt` is restored (weights, optimiser, scheduler, step). Validation is off: the
    gate is a standalone evaluation (in-training val WER differs from it, NeMo #7224).
    """
    import lightning.pytorch as pl
    import torch
    from omegaconf import DictConfig, open_dict

    from components.finetune_asr.fastloss import patch_rnnt_loss

    if max_steps <= 0:
        raise ValueError(f"max_steps must be > 0, got {max_steps}")
    work_dir = Path(work_dir)
    ckpt_dir = work_dir / "checkpoints"
    callbacks: list = []
    recorder = _callbacks(label, max_steps)
    callbacks.append(recorder)
    if checkpoint_every > 0:
        from lightning.pytorch.callbacks import ModelCheckpoint
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        class SaveOnSigterm(pl.Callback):
            """On SIGTERM (raised at a step boundary), write last.ckpt atomically so a rerun loses nothing."""

            def on_exception(self, trainer, pl_module, exception) -> None:
                if isinstance(exception, SIGTERMException):
                    tmp = ckpt_dir / ".last.ckpt.tmp"
                    trainer.save_checkpoint(str(tmp))
                    os.replace(tmp, ckpt_dir / "last.ckpt")

        callbacks.append(SaveOnSigterm())

        callbacks.append(
            ModelCheckpoint(
                dirpath=str(ckpt_dir),
                filename="{step}",
                every_n_train_steps=checkpoint_every,
                save_last=True,
                save_top_k=1,
                save_on_train_epoch_end=False,
            )
        )
    plugins = [_atomic_checkpoint_io()] if checkpoint_every > 0 else []
    tcfg = {k: v for k, v in trainer_cfg.items() if k not in ("max_steps", "callbacks", "logger", "plugins")}
    tcfg.update(
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=checkpoint_every > 0,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=str(work_dir),
    )
    if tcfg.get("max_epochs") is None:
        tcfg["max_epochs"] = -1  # max_steps decides; a finite lhotse epoch just restarts
    trainer = pl.Trainer(callbacks=callbacks, plugins=plugins, **tcfg)

    model.set_trainer(trainer)
    with open_dict(model.cfg):
        model.cfg.train_ds = DictConfig(train_ds)
        model.cfg.optim = DictConfig(optim)
    model.setup_training_data(
        model.cfg.train_ds
    )  # the optimiser is built by configure_optimizers from cfg.optim
    on_cpu = tcfg.get("accelerator") == "cpu" or not torch.cuda.is_available()
    if on_cpu and patch_rnnt_loss(model):
        log.info("RNNT loss: vectorised CPU loss (fastloss.FastRNNTLoss)")

    ckpt_path = newest_checkpoint(ckpt_dir) if resume else None
    t0 = time.monotonic()
    try:
        trainer.fit(model, ckpt_path=ckpt_path)
    except SystemExit as e:
        # Lightning turns SIGTERM (pod eviction, kill) into SIGTERMException, a SystemExit with status 0: the
        # process would "succeed" without a model. Fail loudly instead; the checkpoint saved on SIGTERM resumes.
        if trainer.received_sigterm:
            raise RuntimeError(
                f"{label}: interrupted by SIGTERM at step {trainer.global_step}/{max_steps}; "
                + (
                    f"rerun with the same work_dir to resume from {ckpt_dir / 'last.ckpt'}"
                    if checkpoint_every > 0
                    else "checkpointing was off, nothing to resume"
                )
            ) from e
        raise
    seconds = time.monotonic() - t0
    model.eval()
    return TrainOutcome(
        steps_done=int(trainer.global_step),
        resumed_from_step=recorder.start_step,
        loss_curve=recorder.curve,
        seconds=seconds,
        lr_curve=recorder.lr_curve,
        replay_kd_curve=recorder.kd_curve,
    )


def newest_checkpoint(ckpt_dir: str | os.PathLike) -> str | None:
    """The most recently written complete checkpoint: `last.ckpt` or a `step=N.ckpt`, by mtime.

    ModelCheckpoint writes `step=N.ckpt` first and `last.ckpt` after it, so a kill in between leaves the
    step file newer; both are complete (atomic writes), temp files are ignored.
    """
    files = [p for p in Path(ckpt_dir).glob("*.ckpt") if p.is_file()]
    return str(max(files, key=lambda p: p.stat().st_mtime_ns)) if files else None


def _atomic_checkpoint_io():
    """Lightning's checkpoint writer, but each file is written aside and renamed into place: a SIGKILL (OOM
    killer, node loss) mid-write leaves the previous `last.ckpt` intact instead of a truncated one."""
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
            path = Path(path)
            tmp = path.with_name(f".{path.name}.tmp")
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)

    return AtomicCheckpointIO()


def build_train_ds(
    base: dict,
    manifest_path: str | os.PathLike,
    model_cfg,
    seed: int,
    batch_size: int | None,
    batch_duration: float | None = None,
) -> dict:
    """The dataset section: the YAML's, plus what must come from the model (prompt dictionary, sample rate)."""
    ds = dict(base)
    ds.update(
        manifest_filepath=str(manifest_path),
        use_lhotse=True,
        is_tarred=False,
        tarred_audio_filepaths=None,
        sample_rate=int(model_cfg.sample_rate),
        prompt_dictionary=dict(model_cfg.model_defaults.prompt_dictionary),
        num_prompts=int(model_cfg.model_defaults.get("num_prompts", 128)),
        seed=seed,
    )
    ds.setdefault("default_prompt_mode", "langID")
    if batch_size and batch_duration:
        raise ValueError("finetune: give batch_size or batch_duration, not both")
    if batch_size:
        ds["batch_size"] = int(batch_size)
        ds.pop("batch_duration", None)
    elif batch_duration:
        ds["batch_duration"] = float(batch_duration)  # lhotse dynamic batching: seconds of audio per batch
        ds["batch_size"] = None
    return ds


def build_optim(base: dict, lr: float | None, warmup_steps: int | None, scheduler: str | None) -> dict:
    optim = json.loads(json.dumps(base))  # deep copy of plain data
    sched = optim.setdefault("sched", {})
    if scheduler:
        sched["name"] = SCHEDULERS.get(scheduler.lower(), scheduler)
        if sched["name"] not in SCHEDULERS.values():
            raise ValueError(f"finetune: scheduler must be one of {sorted(SCHEDULERS)}, got {scheduler!r}")
    if lr is not None:
        optim["lr"] = float(lr)
    if warmup_steps is not None:
        sched["warmup_steps"] = int(warmup_steps)
    if sched.get("name") != "NoamAnnealing":
        sched.pop("d_model", None)
    if sched.get("name") == "NoamAnnealing":
        sched.setdefault("d_model", 1024)
        sched.pop("max_steps", None)
    sched.pop("max_steps", None)  # NeMo derives it from trainer.max_steps
    return optim


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


def _run_fingerprint(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _check_resume(work_dir: Path, fingerprint: str) -> None:
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


# ------------------------------------------------------------------------------------------------ finetune
def finetune(
    base_model: str | os.PathLike,
    train_manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    target_langs: Sequence[str],
    replay_manifest: str | os.PathLike | None = None,
    replay_langs: Sequence[str] = (),
    replay_per_lang: int = 150,
    max_steps: int = 300,
    lr: float | None = 2e-3,
    warmup_steps: int | None = 20,
    batch_size: int | None = 16,
    freeze: str = "none",
    att_context_size: Sequence[int] | None = None,
    seed: int = 0,
    checkpoint_every: int = 100,
    threads: int | None = None,
    config: str | os.PathLike | None = None,
    scheduler: str | None = None,
    work_dir: str | os.PathLike | None = None,
    base_model_uri: str | None = None,
    replay_ratio: float | None = None,
    batch_duration: float | None = None,
    precision: str | None = None,
    devices: int | str | None = None,
    strategy: str | None = None,
    val_manifest: str | os.PathLike | None = None,
    val_max_per_lang: int = 200,
    max_unk_rate: float = 0.001,
    text_maps: str | Sequence[str] | None = None,
    replay_distill: float = 1.0,
) -> FinetuneResult:
    """Full fine-tune of a local `.nemo` on `target_langs` (+ replay) -> out_dir/model.nemo + model.json.

    `config` (default: tiny YAML on CPU, Nemotron YAML on GPU) supplies train_ds/optim/trainer; explicit
    arguments override it (None keeps the YAML's value, e.g. lr=None keeps the Nemotron Noam lr 0.1).
    `att_context_size` trains at one lookahead only (the deployment latency); the saved model keeps all.
    `work_dir` (default out_dir/work) holds the NeMo manifest and checkpoints; an unfinished run in the same
    work_dir resumes from its last checkpoint. `precision`, `devices`, `strategy` override the YAML's trainer
    (e.g. "bf16-mixed", 8, "ddp"). With `val_manifest`, the saved model is scored offline on up to
    `val_max_per_lang` rows per trained language (normalised WER, in the result and the sidecar).
    Before training, every transcript goes through the base tokenizer: a language whose share of <unk>
    tokens exceeds `max_unk_rate` stops the run with the offending characters named. `text_maps` (e.g.
    "el_final_sigma") rewrites training text for a tokenizer that lacks a character; the maps are stored in
    the saved model's config and undone on every transcript (components.common.asr_infer).
    `replay_distill` > 0 adds that weight times the KL from the frozen base model's RNNT lattice on the
    replay rows (components.finetune_asr.distill): the replay languages keep the base's alignment.
    """
    import lightning.pytorch as pl
    from nemo.collections.asr.models import ASRModel

    from components.finetune_asr.distill import distill_replay_from_base

    t_start = time.monotonic()
    base_model = Path(base_model)
    if not base_model.is_file():
        raise FileNotFoundError(f"base model not found: {base_model}")
    if freeze not in FREEZE_CHOICES:
        raise ValueError(f"freeze must be one of {FREEZE_CHOICES}, got {freeze!r}")
    if not replay_distill >= 0:
        raise ValueError(f"finetune: replay_distill must be >= 0, got {replay_distill}")
    out_dir = Path(out_dir)
    work_dir = Path(work_dir) if work_dir else out_dir / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    config = Path(config) if config else default_config()
    ds_base, optim_base, trainer_cfg = load_train_sections(config)
    set_threads(threads)
    pl.seed_everything(seed, workers=True, verbose=False)

    model = ASRModel.restore_from(str(base_model), map_location="cpu")
    if not hasattr(model, "prompt_kernel"):
        log.warning("%s is a %s without a language prompt; lang is ignored", base_model, type(model).__name__)
    prompt_dictionary = dict(model.cfg.model_defaults.get("prompt_dictionary", {})) or None
    rows = select_rows(
        train_manifest,
        target_langs,
        replay_manifest,
        replay_langs,
        replay_per_lang,
        seed,
        prompt_dictionary,
        replay_ratio=replay_ratio,
    )
    coverage = tokenizer_coverage(model, rows, max_unk_rate, text_maps)  # fails before any training
    if text_maps:
        from components.common.text import map_for_tokenizer

        rows = [{**r, "text": map_for_tokenizer(r["text"], r["lang"], text_maps)} for r in rows]
    manifest_path = work_dir / "train_manifest.jsonl"
    write_manifest(manifest_path, rows)

    train_ds = build_train_ds(ds_base, manifest_path, model.cfg, seed, batch_size, batch_duration)
    optim = build_optim(optim_base, lr, warmup_steps, scheduler)
    trainer_cfg = dict(trainer_cfg)
    for key, value in (("precision", precision), ("devices", devices), ("strategy", strategy)):
        if value not in (None, ""):
            trainer_cfg[key] = value
    trainer_cfg["use_distributed_sampler"] = False  # lhotse shards the data per rank itself
    base_sha = sha256_file(base_model)
    fingerprint = _run_fingerprint(
        base=base_sha,
        rows=hashlib.sha256(manifest_path.read_bytes()).hexdigest(),
        config=config_sha256(config),
        optim=optim,
        batch_size=train_ds.get("batch_size"),
        batch_duration=train_ds.get("batch_duration"),
        precision=trainer_cfg.get("precision"),
        freeze=freeze,
        att=att_context_size,
        text_maps=coverage["text_maps"],
        seed=seed,
        replay_distill=replay_distill,
    )
    _check_resume(work_dir, fingerprint)

    apply_freeze(model, freeze)
    distill_replay_from_base(
        model, base_model, [lang for lang in replay_langs if lang not in target_langs], replay_distill
    )
    saved_probs = None
    if att_context_size is not None:
        att = [int(a) for a in att_context_size]
        if att not in model.encoder.att_context_size_all:
            raise ValueError(
                f"att_context_size {att} is not one of the model's {model.encoder.att_context_size_all}"
            )
        saved_probs = list(model.encoder.att_context_probs)
        model.encoder.att_context_probs = [
            1.0 if a == att else 0.0 for a in model.encoder.att_context_size_all
        ]

    outcome = train(
        model,
        train_ds,
        optim,
        trainer_cfg,
        max_steps,
        work_dir,
        checkpoint_every=checkpoint_every,
        resume=True,
        label="finetune",
    )
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
    val_wer = validation_wer(model, val_manifest, langs_of(target_langs, replay_langs), val_max_per_lang)

    langs = langs_of(target_langs, replay_langs)
    is_rank_zero = getattr(model, "global_rank", 0) == 0
    model_path = out_dir / "model.nemo"
    sidecar = out_dir / "model.json"
    if is_rank_zero:
        save_model_atomic(model, model_path)
        sidecar = write_sidecar(
            model_path,
            model_card(
                model,
                base_model_uri=base_model_uri or str(base_model),
                base_model_sha256=base_sha,
                languages=langs,
                target_languages=list(target_langs),
                replay_languages=[lang for lang in replay_langs if lang not in target_langs],
                train_steps=outcome.steps_done,
                rows_per_lang=count_langs(rows),
                config=config.name,
                hyperparameters={
                    "lr": optim.get("lr"),
                    "scheduler": optim.get("sched", {}).get("name"),
                    "warmup_steps": optim.get("sched", {}).get("warmup_steps"),
                    "batch_size": train_ds.get("batch_size"),
                    "batch_duration": train_ds.get("batch_duration"),
                    "precision": trainer_cfg.get("precision"),
                    "freeze": freeze,
                    "att_context_size": list(att_context_size) if att_context_size else None,
                    "seed": seed,
                    "replay_per_lang": replay_per_lang,
                    "replay_ratio": replay_ratio,
                    "replay_distill": replay_distill,
                },
                val_wer=val_wer,
                tokenizer_coverage=coverage,
            ),
        )
    return FinetuneResult(
        model_path=str(model_path),
        sidecar_path=str(sidecar),
        steps_done=outcome.steps_done,
        train_loss_curve=outcome.loss_curve,
        seconds=time.monotonic() - t_start,
        resumed_from_step=outcome.resumed_from_step,
        n_train_rows=len(rows),
        rows_per_lang=count_langs(rows),
        lr_curve=outcome.lr_curve,
        val_wer=val_wer,
        resolved_config={"train_ds": train_ds, "optim": optim, "trainer": trainer_cfg},
        replay_kd_curve=outcome.replay_kd_curve,
    )


def langs_of(target_langs: Sequence[str], replay_langs: Sequence[str]) -> list[str]:
    return [*target_langs, *[lang for lang in replay_langs if lang not in target_langs]]


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


def validation_loss(model, rows: Sequence[dict], batch_size: int = 8) -> dict[str, float]:
    """Teacher-forced RNNT loss per language of `model` on manifest `rows` (absolute audio paths).

    More sensitive than WER for a small model: it shows forgetting (a replay language's loss rising) long
    before greedy decoding changes, and costs one forward pass.
    """
    import torch

    from components.common.asr_infer import load_audio

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
                    audio = [torch.from_numpy(load_audio(r["audio_filepath"])) for r in batch]
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
    from components.common.asr_infer import AsrModel, load_audio
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
        hyps = asr.transcribe([load_audio(r["audio_filepath"]) for r in part], [lang] * len(part))
        out[lang] = round(score([r["text"] for r in part], hyps, [lang] * len(part)).wer_norm, 4)
    log.info("validation WER (normalised, offline): %s", out)
    return out


def tokenizer_coverage(model, rows: Sequence[dict], max_unk_rate: float, text_maps) -> dict:
    """Round-trip the training text through the base model's tokenizer (components.build_manifest.coverage);
    raise CoverageError naming the languages and characters when the <unk> share is above `max_unk_rate`."""
    from components.build_manifest.coverage import CoverageError, Tokenizer, check_coverage

    rep = check_coverage(
        [(r["text"], r["lang"]) for r in rows],
        Tokenizer.from_nemo_tokenizer(model.tokenizer),
        max_unk_rate,
        text_maps,
    )
    print(rep.summary, file=sys.stderr, flush=True)
    if not rep.passed:
        raise CoverageError(
            f"finetune: the base tokenizer cannot spell the training text ({rep.summary}); fix the text, or "
            f"pass a text map (text_maps, e.g. el_final_sigma), or raise max_unk_rate knowingly"
        )
    return rep.to_dict()


# ---------------------------------------------------------------------------------------- base model + mlflow
def resolve_base_model(uri: str, dst_dir: str | os.PathLike) -> str:
    """A local .nemo path as is; an MLflow URI (`models:/name@alias`, `runs:/...`) via the registry adapter."""
    if "://" not in uri and not uri.startswith(("models:/", "runs:/")):
        path = Path(uri)
        if path.is_dir():  # a model artifact directory (finetune_asr output or bootstrap cache entry)
            path = next(
                (path / n for n in ("model.nemo", "base.nemo") if (path / n).is_file()), path / "model.nemo"
            )
        if not path.is_file():
            raise FileNotFoundError(f"base model not found: {uri}")
        return str(path)
    from registry.mlflow_adapter import resolve_model_uri

    return resolve_model_uri(uri, str(dst_dir))


def log_to_mlflow(
    result: FinetuneResult, params: dict, pipeline_run_id: str = "", log_model: bool = True
) -> str | None:
    """Log a run when MLFLOW_TRACKING_URI is set (None when it is not): params, the resolved config, loss and
    learning-rate curves, validation WER, the .nemo and its sidecar, tagged with the pipeline run id.

    register_model later registers the model with its lineage tags; set `log_model=False` to skip the copy here
    when artifact storage is precious (a Nemotron .nemo is ~2.4 GB).
    """
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    import mlflow
    import yaml
    from mlflow.entities import Metric

    from registry.mlflow_adapter import Registry, get_client

    # the project's experiment keeps artifacts next to the tracking store (never ./mlruns in the cwd)
    experiment_id = Registry(
        get_client(), os.environ.get("MLFLOW_EXPERIMENT_NAME") or "nemotron-asr"
    ).experiment_id()
    tags = {"step": "finetune_asr"}
    if pipeline_run_id:
        tags["pipeline_run_id"] = pipeline_run_id
    with mlflow.start_run(run_name="finetune_asr", experiment_id=experiment_id, tags=tags) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        now = int(time.time() * 1000)
        metrics = [
            Metric(name, value, now, step)
            for name, curve in (
                ("train_loss", result.train_loss_curve),
                ("lr", result.lr_curve),
                ("train_replay_kd", result.replay_kd_curve),
            )
            for step, value in curve
            if math.isfinite(value)
        ]
        client = mlflow.MlflowClient()
        for i in range(0, len(metrics), 1000):
            client.log_batch(run.info.run_id, metrics=metrics[i : i + 1000])
        mlflow.log_metrics(
            {
                "final_train_loss": result.final_loss,
                "steps": result.steps_done,
                "train_seconds": result.seconds,
                "resumed_from_step": result.resumed_from_step,
                **{f"val_wer_{lang}": wer for lang, wer in result.val_wer.items()},
            }
        )
        if result.resolved_config:
            mlflow.log_text(
                yaml.safe_dump(result.resolved_config, sort_keys=False, allow_unicode=True),
                "resolved_config.yaml",
            )
        mlflow.log_artifact(result.sidecar_path, "model")
        if log_model:
            mlflow.log_artifact(result.model_path, "model")
        return run.info.run_id


def result_dict(result: FinetuneResult) -> dict:
    d = dataclasses.asdict(result)
    d["final_loss"] = result.final_loss
    return d


# ------------------------------------------------------------------------------------- the pipeline step
def run_finetune_step(
    manifest_dir: str | os.PathLike,
    base_model_uri: str,
    out_dir: str | os.PathLike,
    target_langs: str | Sequence[str],
    replay_langs: str | Sequence[str] = "",
    replay_per_lang: int = 150,
    max_steps: int = 300,
    lr: float = 2e-3,
    batch_size: int = 16,
    seed: int = 0,
    config: str = "",
    *,
    replay_manifest: str = "",
    replay_ratio: float = -1.0,
    scheduler: str = "",
    warmup_steps: int = -1,
    precision: str = "",
    batch_duration: float = 0.0,
    freeze: str = "none",
    train_att_context_size: str = "",
    devices: int = 0,
    strategy: str = "",
    checkpoint_every: int = 100,
    pipeline_run_id: str = "",
    work_root: str = "",
    max_unk_rate: float = 0.001,
    text_maps: str = "",
    replay_distill: float = 1.0,
) -> tuple[FinetuneResult, str]:
    """What the kfp component does, testable without kfp: resolve the base, fine-tune, log to MLflow.

    Pipeline parameters arrive as plain values, and "unset" is spelled as a value the UI can show: languages
    as 'a,b'; lr <= 0 keeps the config's optimiser (the Nemotron YAML's Noam lr 0.1 x warmup 100; lr > 0 uses
    a 20-step warmup unless `warmup_steps` >= 0, the tiny recipe); batch_size <= 0 keeps the config's batching
    (the Nemotron YAML's batch_duration) unless `batch_duration` > 0; replay_ratio < 0 means "use
    replay_per_lang"; replay_distill weighs the KL to the base model on replay rows (0 = labels only); ''
    keeps the config's scheduler / precision / strategy; devices <= 0 keeps the config's; strategy applies only
    when devices > 1;
    train_att_context_size '' trains every lookahead (the recipe), '[56,1]' only that one. Checkpoints live in
    $ASR_WORK_DIR/finetune_asr/<run key> (a PVC on the cluster: a retried or re-run task resumes) or a temp
    dir, never in the model artifact, and are deleted after success. `work_root` overrides $ASR_WORK_DIR. Returns (result, MLflow run id or '').
    """
    import shutil

    from components.common.languages import parse_langs

    targets, replays = parse_langs(target_langs), parse_langs(replay_langs)
    att = parse_att_context_size(train_att_context_size)
    if freeze not in FREEZE_CHOICES:
        raise ValueError(f"finetune: freeze must be one of {FREEZE_CHOICES}, got {freeze!r}")
    params = {
        "base_model_uri": base_model_uri,
        "manifests": str(manifest_dir),
        "target_langs": ",".join(targets),
        "replay_langs": ",".join(replays),
        "replay_manifest": replay_manifest,
        "replay_per_lang": replay_per_lang,
        "replay_ratio": replay_ratio,
        "replay_distill": replay_distill,
        "max_steps": max_steps,
        "lr": lr,
        "scheduler": scheduler,
        "warmup_steps": warmup_steps,
        "batch_size": batch_size,
        "batch_duration": batch_duration,
        "precision": precision,
        "freeze": freeze,
        "train_att_context_size": att,
        "devices": devices,
        "strategy": strategy,
        "seed": seed,
        "config": config,
        "max_unk_rate": max_unk_rate,
        "text_maps": text_maps,
    }
    root = work_root or os.environ.get("ASR_WORK_DIR")
    if root:
        # The key is the step's inputs, without max_steps: raising the budget of a finished-or-killed run
        # continues it; finetune() itself refuses checkpoints whose data or hyper-parameters differ.
        key = _run_fingerprint(**{k: v for k, v in params.items() if k != "max_steps"})[:16]
        work = Path(root) / "finetune_asr" / key
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="finetune_asr."))
    base = resolve_base_model(base_model_uri, work / "base_model")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    val = Path(manifest_dir) / "val.jsonl"
    result = finetune(
        base,
        Path(manifest_dir) / "train.jsonl",
        out_dir,
        targets,
        replay_manifest=replay_manifest or None,
        replay_langs=replays,
        replay_per_lang=replay_per_lang,
        replay_ratio=replay_ratio if replay_ratio >= 0 else None,
        replay_distill=replay_distill,
        max_steps=max_steps,
        lr=lr if lr > 0 else None,
        warmup_steps=warmup_steps if warmup_steps >= 0 else (20 if lr > 0 else None),
        batch_size=batch_size if batch_size > 0 else None,
        batch_duration=batch_duration if batch_duration > 0 and batch_size <= 0 else None,
        freeze=freeze,
        att_context_size=att,
        seed=seed,
        checkpoint_every=checkpoint_every,
        config=config or None,
        scheduler=scheduler or None,
        precision=precision or None,
        devices=devices if devices > 0 else None,
        strategy=strategy
        if strategy and devices > 1
        else None,  # one device: no DDP (the config decides at 0)
        work_dir=work,
        base_model_uri=base_model_uri,
        val_manifest=val if val.is_file() else None,
        max_unk_rate=max_unk_rate,
        text_maps=text_maps or None,
    )
    if int(os.environ.get("LOCAL_RANK", 0)) or int(os.environ.get("NODE_RANK", 0)):
        return result, ""  # a DDP worker re-running this body: rank 0 logs and cleans up
    run_id = log_to_mlflow(result, params, pipeline_run_id=pipeline_run_id) or ""
    shutil.rmtree(work, ignore_errors=True)
    return result, run_id


def parse_att_context_size(value: str | Sequence[int] | None) -> list[int] | None:
    """'' / None -> None (all lookaheads); '[56,1]', '56,1' or [56, 1] -> [56, 1]."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        parts = value.strip().strip("[]").split(",")
        try:
            att = [int(v) for v in parts]
        except ValueError:
            raise ValueError(f"att_context_size must look like '[56,1]', got {value!r}") from None
    else:
        att = [int(v) for v in value]
    if len(att) != 2:
        raise ValueError(f"att_context_size must have two values [left, right], got {value!r}")
    return att
