"""Training speed, by measurement (a script, not a test: it prints a ratio and asserts nothing about time).

Time per training step of finetune_asr's training loop (`trainer.train`: the vectorised RNNT loss of fastloss.py
on CPU, atomic checkpointing off) divided by a plain Lightning `Trainer.fit` of the same NeMo model, with the
same YAML (train_ds / optim / trainer), the same manifest and batch size, and NeMo's default RNNT loss.
Target on CPU: <= 0.25. Per-step wall times come from a callback; the first steps (warm-up, lhotse start) are
dropped and the median is reported.

Model and data: the cached trained base (.cache/base_model/*/base.nemo) and its train manifest when present
(`make demo` creates them), else a tiny base bootstrapped for 1 step on a synthetic sine corpus.

    python tests/bench/bench_finetune.py [--steps 12] [--baseline-steps 6] [--threads 2]

Writes outputs/bench/finetune.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _step_timer():
    import lightning.pytorch as pl

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self._t = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.times.append(time.perf_counter() - self._t)

    return StepTimer()


def _median_after_warmup(times: list[float], warmup: int) -> float:
    kept = times[warmup:] or times
    return statistics.median(kept)


def _data(tmp: Path) -> tuple[str, Path]:
    cached = sorted((ROOT / ".cache" / "base_model").glob("*/base.nemo"))
    manifest = ROOT / ".cache" / "base_model" / "manifests" / "train.jsonl"
    if cached and manifest.is_file():
        return str(cached[-1]), manifest
    from components.finetune_asr.bootstrap import bootstrap_base_model
    from tests.unit.test_finetune_core import _make_corpus

    corpus = _make_corpus(tmp / "corpus", per_lang=24)
    return bootstrap_base_model(corpus / "train.jsonl", tmp / "cache", ["el-GR", "es-ES"], max_steps=1), (
        corpus / "train.jsonl"
    )


def _setup(base: str, manifest: Path, work: Path, batch_size: int, distill: float = 0.0):
    """The model and the exact sections finetune() would use (same code path: core.select_rows etc.).

    The first language is the target and the others are replayed (all their rows), as in the demo; with
    `distill` > 0 the step also runs finetune()'s replay distillation against the base model.
    """
    from nemo.collections.asr.models import ASRModel

    from components.common.manifest import write_manifest
    from components.finetune_asr import core
    from components.finetune_asr.distill import distill_replay_from_base
    from components.finetune_asr.settings import FinetuneSettings, apply

    model = ASRModel.restore_from(base, map_location="cpu")
    langs = sorted({r["lang"] for r in core._read(manifest)})
    rows = core.select_rows(manifest, langs[:1], replay_langs=langs[1:], replay_per_lang=10**9)
    distill_replay_from_base(model, base, langs[1:], distill)
    work.mkdir(parents=True, exist_ok=True)
    write_manifest(work / "train.jsonl", rows)
    recipe = apply(FinetuneSettings(recipe="tiny-demo", batch_size=batch_size))  # the demo's recipe
    train_ds = core.build_train_ds(recipe.train_ds, work / "train.jsonl", model.cfg, 0)
    return model, train_ds, recipe.optim, recipe.trainer


def run_ours(base, manifest, work, steps, batch_size, distill: float = 0.0) -> list[float]:
    import lightning.pytorch as pl

    from components.finetune_asr import trainer as wiring

    pl.seed_everything(0, verbose=False)
    model, train_ds, optim, trainer_cfg = _setup(base, manifest, work, batch_size, distill)
    timer = _step_timer()
    original = wiring._callbacks

    def with_timer(label, max_steps, every=50, tracker=None):  # the loop under test, plus a stopwatch
        rec = original(label, max_steps, every, tracker)
        on_start, on_end = timer.on_train_batch_start, rec.on_train_batch_end

        def on_train_batch_start(trainer, pl_module, batch, batch_idx):
            on_start(trainer, pl_module, batch, batch_idx)

        def on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx):
            timer.on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            on_end(trainer, pl_module, outputs, batch, batch_idx)

        rec.on_train_batch_start, rec.on_train_batch_end = on_train_batch_start, on_train_batch_end
        return rec

    wiring._callbacks = with_timer
    try:
        wiring.train(model, train_ds, optim, trainer_cfg, steps, work, checkpoint_every=0, label="bench")
    finally:
        wiring._callbacks = original
    return timer.times


def run_plain(base, manifest, work, steps, batch_size) -> list[float]:
    """Plain Lightning: Trainer(**the YAML's trainer section) + trainer.fit, NeMo's loss untouched."""
    import lightning.pytorch as pl
    from omegaconf import DictConfig, open_dict

    pl.seed_everything(0, verbose=False)
    model, train_ds, optim, trainer_cfg = _setup(base, manifest, work, batch_size)
    timer = _step_timer()
    tcfg = {k: v for k, v in trainer_cfg.items() if k not in ("max_steps",)}
    tcfg.update(max_steps=steps, max_epochs=-1, default_root_dir=str(work))
    trainer = pl.Trainer(callbacks=[timer], **tcfg)
    model.set_trainer(trainer)
    with open_dict(model.cfg):
        model.cfg.train_ds = DictConfig(train_ds)
        model.cfg.optim = DictConfig(optim)
    model.setup_training_data(model.cfg.train_ds)
    trainer.fit(model)
    return timer.times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12, help="steps of finetune_asr's loop")
    ap.add_argument(
        "--baseline-steps", type=int, default=6, help="steps of the plain Trainer.fit (slow on CPU)"
    )
    ap.add_argument("--warmup", type=int, default=2, help="first steps dropped from the median")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--replay-distill",
        type=float,
        default=1.0,
        help="finetune_asr's replay distillation weight (the pipeline default); 0 = labels only",
    )
    args = ap.parse_args(argv)

    from components.finetune_asr.core import set_threads

    set_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_finetune.") as tmp:
        tmp = Path(tmp)
        base, manifest = _data(tmp)
        print(f"model {base}\ndata {manifest}, batch {args.batch_size}, {args.threads} threads", flush=True)
        ours = run_ours(base, manifest, tmp / "ours", args.steps, args.batch_size, args.replay_distill)
        labels = (
            run_ours(base, manifest, tmp / "labels", args.steps, args.batch_size)
            if args.replay_distill
            else ours
        )
        plain = run_plain(base, manifest, tmp / "plain", args.baseline_steps, args.batch_size)
    s_ours = _median_after_warmup(ours, args.warmup)
    s_labels = _median_after_warmup(labels, args.warmup)
    s_plain = _median_after_warmup(plain, args.warmup)
    ratio = s_ours / s_plain
    print(
        f"finetune_asr loop (fastloss, replay distillation {args.replay_distill:g}): "
        f"{s_ours:6.3f} s/step (median of {len(ours) - args.warmup})"
    )
    if args.replay_distill:
        print(
            f"  the same loop without distillation: {s_labels:6.3f} s/step -> distillation costs "
            f"{s_ours / s_labels:.2f}x per step"
        )
    print(
        f"plain Trainer.fit (NeMo default loss):  {s_plain:6.3f} s/step (median of {len(plain) - args.warmup})"
    )
    print(f"RATIO finetune_asr / plain Trainer.fit: {ratio:.3f}  (target <= 0.25 on CPU)")
    out = ROOT / "outputs" / "bench" / "finetune.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "model": base,
                "batch_size": args.batch_size,
                "threads": args.threads,
                "replay_distill": args.replay_distill,
                "s_per_step_ours": s_ours,
                "s_per_step_labels_only": s_labels,
                "s_per_step_plain": s_plain,
                "ratio": ratio,
                "steps_ours": ours,
                "steps_plain": plain,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
