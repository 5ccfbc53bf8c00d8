"""Trainer wiring for a NeMo fine-tune: Lightning callbacks (progress, resume), atomic checkpoint IO, SIGTERM
handling, and fitting a GPU recipe to the host it runs on. Shared by finetune (core.py) and bootstrap."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


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


def set_threads(threads: int | None) -> int:
    """torch threads = `threads`, else $ASR_THREADS, else the CPU count (the documented default)."""
    import torch

    n = threads or int(os.environ.get("ASR_THREADS") or 0) or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def progress_every(max_steps: int) -> int:
    """Steps between two progress lines: about six a run on round steps (multiples of 50), at most 1000 apart
    (a long GPU run still says it is alive). 300 steps -> 50, 800 -> 150, 3000 -> 500."""
    return min(1000, 50 * max(1, math.ceil(max_steps / 6 / 50)))


def _callbacks(label: str, max_steps: int, every: int | None = None, tracker=None):
    """Lightning callbacks: per-step loss recorder with progress lines (logged), and the resume marker."""
    import lightning.pytorch as pl

    every = every or progress_every(max_steps)

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
                log.info("%s: resumed at step %d/%d", label, self.start_step, max_steps)
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
                log.info(
                    f"{label}: step {step}/{max_steps} loss {sum(window) / len(window):.3f}{kd_text} "
                    f"{s_per_step:.2f} s/step ETA {_fmt_s(eta)}"
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
    if max_steps <= 0:
        raise ValueError(f"max_steps must be > 0, got {max_steps}")
    work_dir = Path(work_dir)
    ckpt_dir = work_dir / "checkpoints"
    recorder = _callbacks(label, max_steps, tracker=tracker)
    trainer = _make_trainer(trainer_cfg, max_steps, work_dir, checkpoint_every, recorder)
    _attach(model, trainer, train_ds, optim, cpu=trainer_cfg.get("accelerator") == "cpu")

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


def _checkpoint_callbacks(ckpt_dir: Path, checkpoint_every: int) -> list:
    """Every `checkpoint_every` steps a `step=N.ckpt` + `last.ckpt`, and last.ckpt on SIGTERM."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    class SaveOnSigterm(pl.Callback):
        """On SIGTERM (raised at a step boundary), write last.ckpt atomically so a rerun loses nothing."""

        def on_exception(self, trainer, pl_module, exception) -> None:
            if isinstance(exception, SIGTERMException):
                tmp = ckpt_dir / ".last.ckpt.tmp"
                trainer.save_checkpoint(str(tmp))
                os.replace(tmp, ckpt_dir / "last.ckpt")

    return [
        SaveOnSigterm(),
        ModelCheckpoint(
            dirpath=str(ckpt_dir),
            filename="{step}",
            every_n_train_steps=checkpoint_every,
            save_last=True,
            save_top_k=1,
            save_on_train_epoch_end=False,
        ),
    ]


def _make_trainer(trainer_cfg: dict, max_steps: int, work_dir: Path, checkpoint_every: int, recorder):
    """A Lightning Trainer from the recipe's trainer section: no logger, progress bar or validation."""
    import lightning.pytorch as pl

    callbacks: list = [recorder]
    if checkpoint_every > 0:
        callbacks += _checkpoint_callbacks(work_dir / "checkpoints", checkpoint_every)
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
    tcfg.update(_discarded_work_off(max_steps))
    return pl.Trainer(callbacks=callbacks, plugins=plugins, **tcfg)


def _discarded_work_off(max_steps: int) -> dict:
    """Trainer settings that skip work whose result is thrown away: NeMo's RNNT `training_step` greedy-decodes
    the whole batch for a training WER every `log_every_n_steps` steps. With the logger off nothing reads that
    WER (our callbacks record the loss). On the tiny model on CPU the first decodes of an untrained model,
    which emits up to `max_symbols` per frame, cost ~2 training steps each; later ones ~0.05-0.25 of a step
    (docs/FINETUNE.md "Speed of the training loop"). An interval past `max_steps` never fires. Decoding draws
    no random number and changes no weight: the run learns the same, bit for bit
    (tests/unit/test_train_speed.py)."""
    return {"log_every_n_steps": max_steps + 1}


def _attach(model, trainer, train_ds: dict, optim: dict, cpu: bool) -> None:
    """Give `model` the trainer, its training data and optimiser config; on CPU, the vectorised RNNT loss."""
    import torch
    from omegaconf import DictConfig, open_dict

    from components.finetune_asr.fastloss import patch_rnnt_loss

    model.set_trainer(trainer)
    with open_dict(model.cfg):
        model.cfg.train_ds = DictConfig(train_ds)
        model.cfg.optim = DictConfig(optim)
    model.setup_training_data(
        model.cfg.train_ds
    )  # the optimiser is built by configure_optimizers from cfg.optim
    if (cpu or not torch.cuda.is_available()) and patch_rnnt_loss(model):
        log.info("RNNT loss: vectorised CPU loss (fastloss.FastRNNTLoss)")


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
