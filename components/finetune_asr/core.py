"""Fine-tune a NeMo prompt-RNNT `.nemo` (Nemotron 3.5 ASR class) on target languages, with replay.

The recipe (NVIDIA's notebook / Baseten port, docs/FINETUNE.md): a full fine-tune
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
from components.finetune_asr.settings import (
    CONF_DIR,
    FREEZE_CHOICES,
    FinetuneSettings,
    apply,
    parse_att_context_size,
    peak_lr,
)
from components.finetune_asr.tracking import FinetuneTracker, tracking_uri

log = logging.getLogger(__name__)


TINY_CONFIG = CONF_DIR / "tiny_prompt_rnnt.yaml"  # the tiny demo model's architecture (bootstrap)
# Freeze policies (FREEZE_CHOICES): "encoder" trains prompt_kernel + decoder + joint; "all_but_prompt_decoder"
# trains only the prompt projection and the prediction network (a new domain's vocabulary/LM behaviour).
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
    replay_rows_distilled: int = 0  # replay rows the distillation term covered (found by language, any prompt)

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
    replay_rows_distilled: int = 0


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


# --------------------------------------------------------------------------------------------- training
def set_threads(threads: int | None) -> int:
    """torch threads = `threads`, else $ASR_THREADS, else the CPU count (the documented default)."""
    import torch

    n = threads or int(os.environ.get("ASR_THREADS") or 0) or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def _callbacks(label: str, max_steps: int, every: int = 50, tracker=None):
    """Lightning callbacks: per-step loss recorder with progress lines on stderr, and the resume marker."""
    import lightning.pytorch as pl

    class LossRecorder(pl.Callback):
        """Records (step, loss) and prints step / loss / s/step / ETA every `every` steps (why: an 800-step
        CPU run takes minutes; a silent job looks hung)."""

        def __init__(self) -> None:
            self.curve: list[tuple[int, float]] = []
            self.lr_curve: list[tuple[int, float]] = []
            self.kd_curve: list[tuple[int, float]] = []  # the replay distillation term, when it is on
            self.replay_rows = 0  # rows the distillation term covered
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
                self.replay_rows += int(trainer.callback_metrics.get("train_replay_rows", 0))
            if tracker is not None:  # live in MLflow while it trains
                live = {"train_loss": self.curve[-1][1]}
                if self.lr_curve:
                    live["lr"] = self.lr_curve[-1][1]
                if kd is not None:
                    live["train_replay_kd"] = float(kd)
                tracker.log_step(step, **live)
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
    tracker=None,
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
    recorder = _callbacks(label, max_steps, tracker=tracker)
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
        replay_rows_distilled=recorder.replay_rows,
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


def build_train_ds(recipe_ds: dict, manifest_path: str | os.PathLike, model_cfg, seed: int) -> dict:
    """The recipe's dataset section plus what must come from the model (prompt dictionary, sample rate)."""
    ds = dict(recipe_ds)
    ds.update(
        manifest_filepath=str(manifest_path),
        use_lhotse=True,
        is_tarred=False,
        tarred_audio_filepaths=None,
        sample_rate=int(model_cfg.sample_rate),
        prompt_dictionary=dict(model_cfg.model_defaults.prompt_dictionary),
        num_prompts=int(model_cfg.model_defaults.get("num_prompts", 128)),
        seed=seed,
        shard_seed=seed,  # NeMo's default "trng" draws a fresh seed every run (docs/REPRODUCE.md)
    )
    ds.setdefault("default_prompt_mode", "langID")
    return ds


def fit_to_host(trainer_cfg: dict, train_ds: dict) -> list[str]:
    """Adapt a GPU recipe to the machine it runs on, and say what changed (printed by the caller).

    A recipe written for GPU nodes (accelerator gpu, every device, DDP, 8 loader workers, bf16) must still run
    on a CPU box (the rehearsal, a laptop): without CUDA it trains on one CPU device, with no loader workers,
    and in bf16-mixed only where the CPU has native bf16 (else fp32).
    """
    import torch

    notes = []
    if torch.cuda.is_available() or trainer_cfg.get("accelerator") == "cpu":
        return notes
    trainer_cfg.update(accelerator="cpu", devices=1)
    trainer_cfg.pop("strategy", None)
    notes.append("no CUDA device: training on 1 CPU device")
    if train_ds.get("num_workers") or train_ds.get("pin_memory"):
        train_ds.update(num_workers=0, pin_memory=False)
        notes.append("CPU: no dataloader workers, no pinned memory")
    precision = str(trainer_cfg.get("precision"))
    if precision.startswith("bf16"):
        if cpu_has_bf16():
            trainer_cfg["precision"] = "bf16-mixed"
            notes.append("CPU with native bf16 (AVX512-BF16/AMX): precision bf16-mixed")
        else:
            trainer_cfg["precision"] = 32
            notes.append("this CPU has no native bf16 (no AVX512-BF16/AMX): precision fp32")
    elif precision.startswith("16"):
        trainer_cfg["precision"] = 32
        notes.append("fp16 needs CUDA: precision fp32")
    return notes


def cpu_has_bf16() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


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
    settings: FinetuneSettings,
    *,
    replay_manifest: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    threads: int | None = None,
    devices: int | str | None = None,
    strategy: str | None = None,
    base_model_uri: str | None = None,
    val_manifest: str | os.PathLike | None = None,
    val_max_per_lang: int = 200,
    tracker=None,
) -> FinetuneResult:
    """Full fine-tune of a local `.nemo` per `settings` -> out_dir/model.nemo + model.json.

    The recipe (`settings.recipe`) supplies train_ds/optim/trainer; the knobs that are set override it
    (settings.apply). A GPU recipe on a CPU-only host is fitted to it (fit_to_host: one CPU device, bf16 only
    with native support), and each change is printed. `settings.train_att_context_size` trains at one
    lookahead only; the saved model keeps all. `work_dir` (default out_dir/work) holds the NeMo manifest and
    checkpoints; an unfinished run in the same work_dir resumes from its last checkpoint. `devices`/`strategy`
    override the recipe's trainer. With `val_manifest`, the saved model is scored offline on up to
    `val_max_per_lang` rows per trained language (normalised WER, in the result and the sidecar).
    Before training, every transcript goes through the base tokenizer: a language whose share of <unk>
    tokens exceeds `max_unk_rate` stops the run with the offending characters named. `text_maps` (e.g.
    "el_final_sigma") rewrites training text for a tokenizer that lacks a character; the maps are stored in
    the saved model's config and undone on every transcript (components.common.asr_infer).
    `replay_distill` > 0 adds that weight times the KL from the frozen base model's RNNT lattice on the
    replay rows (components.finetune_asr.distill): the replay languages keep the base's alignment.
    `tracker` (FinetuneTracker) receives loss, lr and the distillation term while training.
    """
    import lightning.pytorch as pl
    from nemo.collections.asr.models import ASRModel

    from components.finetune_asr.determinism import make_deterministic
    from components.finetune_asr.distill import distill_replay_from_base
    from components.finetune_asr.shards import use_shards

    t_start = time.monotonic()
    s = settings
    base_model = Path(base_model)
    if not base_model.is_file():
        raise FileNotFoundError(f"base model not found: {base_model}")
    out_dir = Path(out_dir)
    work_dir = Path(work_dir) if work_dir else out_dir / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    recipe = apply(s)
    trainer_cfg = dict(recipe.trainer)
    for key, value in (("devices", devices), ("strategy", strategy)):
        if value not in (None, ""):
            trainer_cfg[key] = value
    set_threads(threads)
    pl.seed_everything(s.seed, workers=True, verbose=False)
    make_deterministic(s.seed)  # components/finetune_asr/determinism.py (reproduce: docs/REPRODUCE.md)

    model = ASRModel.restore_from(str(base_model), map_location="cpu")
    if not hasattr(model, "prompt_kernel"):
        log.warning("%s is a %s without a language prompt; lang is ignored", base_model, type(model).__name__)
    prompt_dictionary = dict(model.cfg.model_defaults.get("prompt_dictionary", {})) or None
    rows = select_rows(
        train_manifest,
        s.targets,
        replay_manifest,
        s.replays,
        s.replay_per_lang,
        s.seed,
        prompt_dictionary,
        replay_ratio=s.replay_ratio,
    )
    coverage = tokenizer_coverage(model, rows, s.max_unk_rate, s.text_maps or None)  # fails before training
    if s.text_maps:
        from components.common.text import map_for_tokenizer

        rows = [{**r, "text": map_for_tokenizer(r["text"], r["lang"], s.text_maps)} for r in rows]
    manifest_path = work_dir / "train_manifest.jsonl"
    write_manifest(manifest_path, rows)

    train_ds = build_train_ds(recipe.train_ds, manifest_path, model.cfg, s.seed)
    train_ds = use_shards(train_ds, rows, train_manifest, work_dir, s.seed)  # tarred shards at scale (issue 16)
    optim = recipe.optim
    for note in fit_to_host(trainer_cfg, train_ds):
        print(f"[finetune] {note}", file=sys.stderr, flush=True)
    trainer_cfg["use_distributed_sampler"] = False  # lhotse shards the data per rank itself
    att_context_size = parse_att_context_size(s.train_att_context_size)
    base_sha = sha256_file(base_model)
    fingerprint = _run_fingerprint(
        base=base_sha,
        rows=sha256_file(manifest_path),
        recipe=sha256_file(recipe.path),
        optim=optim,
        batch_size=train_ds.get("batch_size"),
        batch_duration=train_ds.get("batch_duration"),
        prompt_mode=train_ds.get("default_prompt_mode"),
        precision=trainer_cfg.get("precision"),
        freeze=s.freeze,
        att=att_context_size,
        text_maps=coverage["text_maps"],
        seed=s.seed,
        replay_distill=s.replay_distill,
    )
    _check_resume(work_dir, fingerprint)
    print(
        f"[finetune] recipe {s.recipe}: {optim.get('name')} lr {optim.get('lr')} "
        f"({optim.get('sched', {}).get('name')}, peak {peak_lr(optim):.3g}), "
        + (f"batch {train_ds['batch_size']}" if train_ds.get("batch_size") else
           f"batch_duration {train_ds.get('batch_duration')} s")
        + f", precision {trainer_cfg.get('precision')}, prompt mode {train_ds.get('default_prompt_mode')}"
        + (f"; overrides {s.overrides()}" if s.overrides() else ""),
        file=sys.stderr,
        flush=True,
    )

    apply_freeze(model, s.freeze)
    distill_replay_from_base(model, base_model, s.replays, s.replay_distill)
    saved_probs = None
    if att_context_size is not None:
        if att_context_size not in model.encoder.att_context_size_all:
            raise ValueError(
                f"train_att_context_size {att_context_size} is not one of the model's "
                f"{model.encoder.att_context_size_all}"
            )
        saved_probs = list(model.encoder.att_context_probs)
        model.encoder.att_context_probs = [
            1.0 if a == att_context_size else 0.0 for a in model.encoder.att_context_size_all
        ]

    outcome = train(
        model,
        train_ds,
        optim,
        trainer_cfg,
        s.max_steps,
        work_dir,
        checkpoint_every=s.checkpoint_every,
        resume=True,
        label="finetune",
        tracker=tracker,
    )
    if saved_probs is not None:
        model.encoder.att_context_probs = saved_probs
    if s.freeze != "none":
        for p in model.parameters():
            p.requires_grad_(True)  # the saved model must be trainable again for the next fine-tune
    if coverage["text_maps"]:
        from omegaconf import open_dict

        with open_dict(model.cfg):
            model.cfg.text_maps = list(coverage["text_maps"])
    model.eval()
    langs = langs_of(s.targets, s.replays)
    val_wer = validation_wer(model, val_manifest, langs, val_max_per_lang)

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
                target_languages=s.targets,
                replay_languages=s.replays,
                train_steps=outcome.steps_done,
                rows_per_lang=count_langs(rows),
                config=recipe.path.name,
                recipe=s.recipe,
                overrides=s.overrides(),
                hyperparameters={
                    "lr": optim.get("lr"),
                    "peak_lr": peak_lr(optim),
                    "scheduler": optim.get("sched", {}).get("name"),
                    "warmup_steps": optim.get("sched", {}).get("warmup_steps"),
                    "batch_size": train_ds.get("batch_size"),
                    "batch_duration": train_ds.get("batch_duration"),
                    "prompt_mode": train_ds.get("default_prompt_mode"),
                    "precision": trainer_cfg.get("precision"),
                    "freeze": s.freeze,
                    "att_context_size": att_context_size,
                    "seed": s.seed,
                    "replay_per_lang": s.replay_per_lang,
                    "replay_ratio": s.replay_ratio,
                    "replay_distill": s.replay_distill,
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
        replay_rows_distilled=outcome.replay_rows_distilled,
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
                    audio = [torch.from_numpy(load_audio(r["audio_filepath"], strict_rate=True)) for r in batch]
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
        hyps = asr.transcribe([load_audio(r["audio_filepath"], strict_rate=True) for r in part], [lang] * len(part))
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


def result_dict(result: FinetuneResult) -> dict:
    d = dataclasses.asdict(result)
    d["final_loss"] = result.final_loss
    return d


# ------------------------------------------------------------------------------------- the pipeline step
def run_finetune_step(
    manifest_dir: str | os.PathLike,
    base_model_uri: str,
    out_dir: str | os.PathLike,
    settings: FinetuneSettings | str,
    *,
    mlflow_tracking_uri: str = "",
    devices: int = 0,
    strategy: str = "",
    work_root: str = "",
    pipeline_run_id: str = "",
    replay_manifest: str = "",
    threads: int | None = None,
) -> tuple[FinetuneResult, str]:
    """What the kfp component does, testable without kfp: resolve the base, fine-tune, log to MLflow.

    `settings` is the step's record (or its `name=value` text from the pipeline). Checkpoints live in
    `work_root` (else $ASR_WORK_DIR)/finetune_asr/<run key> (a PVC on the cluster: a retried or re-run task
    resumes, and continues the same MLflow run) or a temp dir, never in the model artifact, and are deleted
    after success. A deterministic failure (settings, data, tokenizer coverage) is remembered there, so a
    retry of the same task fails at once instead of loading the model again. devices <= 0 keeps the recipe's;
    strategy applies only when devices > 1. Returns (result, MLflow run id or '').
    """
    import shutil

    from components.common.errors import remember_deterministic_failure

    if isinstance(settings, str):
        from components.common.settings import decode

        settings = decode(FinetuneSettings, settings, "finetune_asr.")
    params = _step_params(manifest_dir, base_model_uri, settings, replay_manifest, devices, strategy)
    root = work_root or os.environ.get("ASR_WORK_DIR")
    lock = None
    if root:
        work = Path(root) / "finetune_asr" / work_key(manifest_dir, base_model_uri, settings, replay_manifest,
                                                      devices, strategy)
        work.mkdir(parents=True, exist_ok=True)
        lock = _try_lock(work)
        if lock is None:  # the same inputs are training right now (another run): never share its checkpoints
            work = Path(tempfile.mkdtemp(dir=work.parent, prefix=f"{work.name}."))
            print(f"[finetune] another fine-tune of the same inputs holds {work.parent / work.name.split('.')[0]}; "
                  f"this one works in {work} (no resume across the two)", file=sys.stderr, flush=True)
            lock = _try_lock(work)
    else:
        work = Path(tempfile.mkdtemp(prefix="finetune_asr."))
    with remember_deterministic_failure(work / "failed.json"):
        uri = tracking_uri(mlflow_tracking_uri)
        tracker = FinetuneTracker(uri, params, pipeline_run_id, work / "mlflow_run.json") if uri else None
        base = resolve_base_model(base_model_uri, work / "base_model")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        val = Path(manifest_dir) / "val.jsonl"
        if tracker:
            tracker.start()
        try:
            result = finetune(
                base,
                Path(manifest_dir) / "train.jsonl",
                out_dir,
                settings,
                replay_manifest=replay_manifest or None,
                work_dir=work,
                threads=threads,
                devices=devices if devices > 0 else None,
                strategy=strategy if strategy and devices > 1 else None,  # one device: no DDP
                base_model_uri=base_model_uri,
                val_manifest=val if val.is_file() else None,
                tracker=tracker,
            )
        except BaseException as e:
            if tracker and not isinstance(e, (KeyboardInterrupt, SystemExit)):
                tracker.fail(f"{type(e).__name__}: {e}")
            raise
    if int(os.environ.get("LOCAL_RANK", 0)) or int(os.environ.get("NODE_RANK", 0)):
        return result, ""  # a DDP worker re-running this body: rank 0 logs and cleans up
    run_id = tracker.finish(result) if tracker else ""
    shutil.rmtree(work, ignore_errors=True)
    if lock is not None:
        lock.close()
    return result, run_id


def _step_params(manifest_dir, base_model_uri: str, settings: FinetuneSettings, replay_manifest: str = "",
                 devices: int = 0, strategy: str = "") -> dict:
    """The step's inputs as logged (MLflow params) and keyed (work dir)."""
    return {
        "base_model_uri": base_model_uri,
        "manifests": str(manifest_dir),
        "replay_manifest": replay_manifest,
        "devices": devices,
        "strategy": strategy,
        **dataclasses.asdict(settings),
        "overrides": json.dumps(settings.overrides(), sort_keys=True),
    }


def work_key(manifest_dir, base_model_uri: str, settings: FinetuneSettings | str, replay_manifest: str = "",
             devices: int = 0, strategy: str = "") -> str:
    """The work dir's name: the step's inputs without max_steps, so raising the budget of a finished-or-killed
    run continues it (finetune() itself refuses checkpoints whose data or hyper-parameters differ)."""
    if isinstance(settings, str):
        from components.common.settings import decode

        settings = decode(FinetuneSettings, settings, "finetune_asr.")
    params = _step_params(manifest_dir, base_model_uri, settings, replay_manifest, devices, strategy)
    return _run_fingerprint(**{k: v for k, v in params.items() if k not in ("max_steps", "overrides")})[:16]


def _try_lock(work: Path):
    """An exclusive lock on `work/.lock` held while this fine-tune runs (None when another process holds it).
    The lock dies with the process, so a killed run's work dir is free for its retry."""
    import fcntl

    f = open(work / ".lock", "w")  # noqa: SIM115 (held open for the run)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f


def preflight_step(
    manifest_dir: str | os.PathLike,
    base_model_uri: str,
    settings: FinetuneSettings | str,
    att_context_size: str = "",
    report_path: str | os.PathLike | None = None,
    work_root: str = "",
):
    """What the preflight component does: resolve the base (a models:/ URI is downloaded once into
    work_root's cache), then check settings and data against its config and tokenizer (no weights read)."""
    from components.common.settings import decode
    from components.finetune_asr.preflight import run_preflight

    if isinstance(settings, str):
        settings = decode(FinetuneSettings, settings, "finetune_asr.")
    root = Path(work_root or os.environ.get("ASR_WORK_DIR") or tempfile.gettempdir())
    base = resolve_base_model(base_model_uri, root / "preflight_base")
    rep = run_preflight(base, manifest_dir, settings, att_context_size or None, report_path)
    lines = "\n".join(rep.lines())
    print(f"[preflight] passed in {rep.seconds:.1f} s:\n{lines}", file=sys.stderr, flush=True)
    return rep
