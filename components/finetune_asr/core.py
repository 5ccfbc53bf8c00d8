"""Fine-tune a NeMo prompt-RNNT `.nemo` (Nemotron 3.5 ASR class) on target languages, with replay.

The recipe (NVIDIA's notebook / Baseten port, docs/FINETUNE.md): a full fine-tune
initialised from the `.nemo`, the base tokenizer kept, lhotse data whose every line carries `lang`/`target_lang`,
AdamW with a fixed `max_steps`, and a slice of the other languages mixed in ("replay") so they are not forgotten.
The architecture always comes from the `.nemo`; a NeMo-native YAML (`conf/`) supplies only train_ds / optim /
trainer: the tiny YAML on CPU, `nemotron35_finetune.yaml` on GPU. On CPU the RNNT loss is swapped for the
vectorised one in fastloss.py (NeMo's is pure Python there).

This module is the orchestration (`finetune`, the pipeline step); its parts live beside it: data.py (which rows),
configure.py (the recipe fitted to this host, the run's fingerprint), prepare.py (freezing, distillation, the
training lookahead), trainer.py (Lightning wiring: callbacks, atomic checkpoint IO, SIGTERM), tracking.py
(MLflow), validation.py (tokenizer coverage, validation loss/WER) and artifact.py (model.nemo + model.json).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from components.common.manifest import write_manifest
from components.finetune_asr.artifact import (
    model_card,
    save_artifact,
    save_model_atomic,
    sidecar_fields,
    write_sidecar,
)
from components.finetune_asr.configure import RunConfig, resolve_config, resolve_recipe, run_fingerprint
from components.finetune_asr.data import _read, count_langs, langs_of, select_rows
from components.finetune_asr.prepare import apply_freeze, prepare_for_training, restore_after_training
from components.finetune_asr.settings import CONF_DIR, FinetuneSettings
from components.finetune_asr.tracking import FinetuneTracker, tracking_uri
from components.finetune_asr.trainer import (
    TrainOutcome,
    _callbacks,
    build_train_ds,
    cpu_has_bf16,
    fit_to_host,
    newest_checkpoint,
    set_threads,
    train,
)
from components.finetune_asr.validation import tokenizer_coverage, validation_loss, validation_wer
from registry.resolve import resolve_model  # the one model-reference rule; MLflow only for a URI

log = logging.getLogger(__name__)

__all__ = [  # what callers import from here (the parts' names re-exported for them)
    "FinetuneResult",
    "TrainOutcome",
    "apply_freeze",
    "build_train_ds",
    "count_langs",
    "cpu_has_bf16",
    "finetune",
    "fit_to_host",
    "langs_of",
    "model_card",
    "newest_checkpoint",
    "preflight_step",
    "result_dict",
    "run_finetune_step",
    "save_model_atomic",
    "select_rows",
    "set_threads",
    "tokenizer_coverage",
    "train",
    "validation_loss",
    "validation_wer",
    "work_key",
    "write_sidecar",
    "_callbacks",
    "_read",
]


TINY_CONFIG = CONF_DIR / "tiny_prompt_rnnt.yaml"  # the tiny demo model's architecture (bootstrap)


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
    replay_rows_distilled: int = (
        0  # replay rows the distillation term covered (found by language, any prompt)
    )

    @property
    def final_loss(self) -> float:
        """Mean loss of the last (up to) 10 recorded steps: one step's loss is too noisy to report."""
        tail = [loss for _, loss in self.train_loss_curve[-10:]]
        return float(sum(tail) / len(tail)) if tail else float("nan")


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
    t_start = time.monotonic()
    s = settings
    base_model = Path(base_model)
    if not base_model.is_file():
        raise FileNotFoundError(f"base model not found: {base_model}")
    out_dir = Path(out_dir)
    work_dir = Path(work_dir) if work_dir else out_dir / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    recipe, trainer_cfg = resolve_recipe(s, devices, strategy)
    model = _load_base(base_model, s.seed, threads)
    rows, coverage, manifest_path = _training_rows(model, s, train_manifest, replay_manifest, work_dir)
    cfg = resolve_config(
        s, recipe, trainer_cfg, rows, train_manifest, manifest_path, model.cfg, base_model, work_dir, coverage
    )
    saved_probs = prepare_for_training(model, s, recipe.freeze, base_model, cfg.att_context_size)
    outcome = train(
        model,
        cfg.train_ds,
        cfg.optim,
        cfg.trainer_cfg,
        s.max_steps,
        work_dir,
        checkpoint_every=s.checkpoint_every,
        resume=True,
        label="finetune",
        tracker=tracker,
    )
    restore_after_training(model, recipe.freeze, saved_probs, coverage)
    langs = langs_of(s.targets, s.replays)
    val_wer = validation_wer(model, val_manifest, langs, val_max_per_lang)

    card = sidecar_fields(s, cfg, base_model_uri or str(base_model), langs, outcome, rows, val_wer, coverage)
    model_path, sidecar = save_artifact(model, out_dir, card)
    return _result(model_path, sidecar, outcome, cfg, rows, val_wer, time.monotonic() - t_start)


def _result(
    model_path,
    sidecar,
    outcome: TrainOutcome,
    cfg: RunConfig,
    rows: list[dict],
    val_wer: dict,
    seconds: float,
) -> FinetuneResult:
    """The fine-tune's result: where the artifact is, what training did, and on what."""
    return FinetuneResult(
        model_path=str(model_path),
        sidecar_path=str(sidecar),
        steps_done=outcome.steps_done,
        train_loss_curve=outcome.loss_curve,
        seconds=seconds,
        resumed_from_step=outcome.resumed_from_step,
        n_train_rows=len(rows),
        rows_per_lang=count_langs(rows),
        lr_curve=outcome.lr_curve,
        val_wer=val_wer,
        resolved_config={"train_ds": cfg.train_ds, "optim": cfg.optim, "trainer": cfg.trainer_cfg},
        replay_kd_curve=outcome.replay_kd_curve,
        replay_rows_distilled=outcome.replay_rows_distilled,
    )


def _load_base(base_model: Path, seed: int, threads: int | None):
    """Threads and seeds set, then the base `.nemo` restored on CPU (the trainer moves it)."""
    import lightning.pytorch as pl
    from nemo.collections.asr.models import ASRModel

    from components.finetune_asr.determinism import make_deterministic

    set_threads(threads)
    pl.seed_everything(seed, workers=True, verbose=False)
    make_deterministic(seed)  # components/finetune_asr/determinism.py (reproduce: docs/REPRODUCE.md)
    model = ASRModel.restore_from(str(base_model), map_location="cpu")
    if not hasattr(model, "prompt_kernel"):
        log.warning("%s is a %s without a language prompt; lang is ignored", base_model, type(model).__name__)
    return model


def _training_rows(model, s: FinetuneSettings, train_manifest, replay_manifest, work_dir: Path):
    """The rows to train on, checked against the base tokenizer (fails before training), text-mapped, and
    written as the NeMo manifest in `work_dir` -> (rows, coverage report dict, manifest path)."""
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
    return rows, coverage, manifest_path


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
    key = work_key(manifest_dir, base_model_uri, settings, replay_manifest, devices, strategy) if root else ""
    work, lock = _claim_work_dir(Path(root) / "finetune_asr" / key if root else None)
    with remember_deterministic_failure(work / "failed.json"):
        uri = tracking_uri(mlflow_tracking_uri)
        tracker = FinetuneTracker(uri, params, pipeline_run_id, work / "mlflow_run.json") if uri else None
        base = resolve_model(base_model_uri, work / "base_model", tracking_uri=uri)
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


def _step_params(
    manifest_dir,
    base_model_uri: str,
    settings: FinetuneSettings,
    replay_manifest: str = "",
    devices: int = 0,
    strategy: str = "",
) -> dict:
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


def work_key(
    manifest_dir,
    base_model_uri: str,
    settings: FinetuneSettings | str,
    replay_manifest: str = "",
    devices: int = 0,
    strategy: str = "",
) -> str:
    """The work dir's name: the step's inputs without max_steps, so raising the budget of a finished-or-killed
    run continues it (finetune() itself refuses checkpoints whose data or hyper-parameters differ)."""
    if isinstance(settings, str):
        from components.common.settings import decode

        settings = decode(FinetuneSettings, settings, "finetune_asr.")
    params = _step_params(manifest_dir, base_model_uri, settings, replay_manifest, devices, strategy)
    return run_fingerprint(**{k: v for k, v in params.items() if k not in ("max_steps", "overrides")})[:16]


def _claim_work_dir(work: Path | None):
    """-> (the work dir, its lock or None). `work` is locked for this run; when another run of the same
    inputs holds it, a sibling temp dir (no resume across the two); None: a temp dir."""
    if work is None:
        return Path(tempfile.mkdtemp(prefix="finetune_asr.")), None
    work.mkdir(parents=True, exist_ok=True)
    lock = _try_lock(work)
    if lock is None:  # the same inputs are training right now (another run): never share its checkpoints
        work = Path(tempfile.mkdtemp(dir=work.parent, prefix=f"{work.name}."))
        log.warning(
            "finetune: another fine-tune of the same inputs holds %s; this one works in %s "
            "(no resume across the two)",
            work.parent / work.name.split(".")[0],
            work,
        )
        lock = _try_lock(work)
    return work, lock


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
    mlflow_tracking_uri: str = "",
):
    """What the preflight component does: resolve the base (a models:/ URI is downloaded once into
    work_root's cache, from the registry at `mlflow_tracking_uri`, as every step resolves it), then check
    settings and data against its config and tokenizer (no weights read)."""
    from components.common.settings import decode
    from components.finetune_asr.preflight import run_preflight

    if isinstance(settings, str):
        settings = decode(FinetuneSettings, settings, "finetune_asr.")
    root = Path(work_root or os.environ.get("ASR_WORK_DIR") or tempfile.gettempdir())
    base = resolve_model(base_model_uri, root / "preflight_base", tracking_uri=mlflow_tracking_uri)
    rep = run_preflight(base, manifest_dir, settings, att_context_size or None, report_path)
    lines = "\n".join(rep.lines())
    log.info("preflight passed in %.1f s:\n%s", rep.seconds, lines)
    return rep
