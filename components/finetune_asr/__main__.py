"""CLI: pre-train the tiny base model, or fine-tune a .nemo (locally or on a GPU node).

  python -m components.finetune_asr bootstrap --train data/manifests/train.jsonl --out .cache/base_model
  python -m components.finetune_asr finetune --base base.nemo --train train.jsonl --out outputs/ft \
      --target-langs bg-BG --replay-langs el-GR,es-ES
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from components.common.languages import parse_langs


def _att(value: str) -> list[int]:
    parts = [int(p) for p in value.replace("[", "").replace("]", "").split(",") if p.strip()]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"att context size must be 'LEFT,RIGHT', got {value!r}")
    return parts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m components.finetune_asr", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("bootstrap", help="pre-train the tiny base model (cached by content)")
    b.add_argument("--train", required=True, help="train manifest (JSON lines) with every language's rows")
    b.add_argument("--out", required=True, help="cache directory; the model lands in OUT/<key>/base.nemo")
    b.add_argument("--langs", default="el-GR,es-ES", help="languages the base learns (comma-separated)")
    b.add_argument(
        "--tokenizer-manifest",
        action="append",
        default=None,
        help="manifest(s) whose text trains the tokenizer (default: all rows of --train)",
    )
    b.add_argument("--steps", type=int, default=800)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--vocab-size", type=int, default=256)
    b.add_argument("--config", default=None, help="model YAML (default: conf/tiny_prompt_rnnt.yaml)")
    b.add_argument("--threads", type=int, default=None)

    f = sub.add_parser("finetune", help="fine-tune a .nemo on target languages with replay")
    f.add_argument("--base", required=True, help="base model: local .nemo or models:/name@alias")
    f.add_argument("--train", required=True, help="train manifest (JSON lines)")
    f.add_argument("--out", required=True, help="output directory: model.nemo + model.json")
    f.add_argument("--target-langs", required=True, help="comma-separated, e.g. bg-BG")
    f.add_argument(
        "--replay-manifest", default=None, help="manifest to draw replay rows from (default: --train)"
    )
    f.add_argument("--replay-langs", default="", help="comma-separated languages to replay")
    f.add_argument("--replay-per-lang", type=int, default=150)
    f.add_argument(
        "--replay-ratio",
        type=float,
        default=None,
        help="replay share of the training mix (replaces --replay-per-lang)",
    )
    f.add_argument(
        "--replay-distill",
        type=float,
        default=1.0,
        help="weight of the KL to the base model's RNNT lattice on replay rows (0 = labels only)",
    )
    f.add_argument("--steps", type=int, default=300)
    f.add_argument(
        "--lr", type=float, default=2e-3, help="peak lr (Noam: multiplier); <=0 keeps the config's"
    )
    f.add_argument("--warmup-steps", type=int, default=20, help="<0 keeps the config's")
    f.add_argument("--batch-size", type=int, default=16, help="<=0 keeps the config's (e.g. batch_duration)")
    f.add_argument("--batch-duration", type=float, default=None, help="seconds of audio per batch (lhotse)")
    f.add_argument("--precision", default=None, help="e.g. 32, bf16-mixed (default: the config's)")
    f.add_argument("--devices", default=None, help="Lightning devices (default: the config's)")
    f.add_argument("--strategy", default=None, help="Lightning strategy, e.g. ddp (default: the config's)")
    f.add_argument(
        "--max-unk-rate", type=float, default=0.001, help="fail above this <unk> share per language"
    )
    f.add_argument("--text-maps", default=None, help="e.g. el_final_sigma (see components/common/text.py)")
    f.add_argument("--val", default=None, help="val manifest: WER per language of the result (sidecar)")
    f.add_argument("--scheduler", default=None, help="noam | cosine (default: the config's)")
    f.add_argument("--freeze", choices=("none", "encoder", "all_but_prompt_decoder"), default="none")
    f.add_argument("--att-context-size", type=_att, default=None, help="train at one lookahead, e.g. 56,3")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--checkpoint-every", type=int, default=100)
    f.add_argument("--work-dir", default=None, help="manifest + checkpoints (default: OUT/work); resumes")
    f.add_argument(
        "--config",
        default=None,
        help="train_ds/optim/trainer YAML (default: tiny on CPU, conf/nemotron35_finetune.yaml on GPU)",
    )
    f.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)

    if args.cmd == "bootstrap":
        from components.finetune_asr.bootstrap import bootstrap_base_model

        texts = None
        if args.tokenizer_manifest:
            from components.common.manifest import read_manifest

            texts = [r["text"] for m in args.tokenizer_manifest for r in read_manifest(m, absolute=False)]
        path = bootstrap_base_model(
            args.train,
            args.out,
            parse_langs(args.langs),
            texts,
            args.steps,
            args.seed,
            args.config,
            args.vocab_size,
            threads=args.threads,
        )
        print(json.dumps({"model_path": path, "sidecar_path": str(Path(path).with_name("model.json"))}))
        return 0

    from components.finetune_asr import core

    base = core.resolve_base_model(args.base, f"{args.out}/base_model")
    res = core.finetune(
        base,
        args.train,
        args.out,
        parse_langs(args.target_langs),
        replay_manifest=args.replay_manifest,
        replay_langs=parse_langs(args.replay_langs),
        replay_per_lang=args.replay_per_lang,
        max_steps=args.steps,
        lr=args.lr if args.lr > 0 else None,
        warmup_steps=args.warmup_steps if args.warmup_steps >= 0 else None,
        batch_size=args.batch_size if args.batch_size > 0 and not args.batch_duration else None,
        batch_duration=args.batch_duration,
        replay_ratio=args.replay_ratio,
        replay_distill=args.replay_distill,
        precision=args.precision,
        devices=int(args.devices) if args.devices and args.devices.lstrip("-").isdigit() else args.devices,
        strategy=args.strategy,
        val_manifest=args.val,
        max_unk_rate=args.max_unk_rate,
        text_maps=args.text_maps,
        freeze=args.freeze,
        att_context_size=args.att_context_size,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        threads=args.threads,
        config=args.config,
        scheduler=args.scheduler,
        work_dir=args.work_dir,
        base_model_uri=args.base,
    )
    out = core.result_dict(res)
    for key in ("train_loss_curve", "lr_curve", "resolved_config"):
        out.pop(key)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
