"""CLI: pre-train the tiny base model, or fine-tune a .nemo (locally or on a GPU node).

  python -m components.finetune_asr bootstrap --train data/manifests/train.jsonl --out .cache/base_model
  python -m components.finetune_asr finetune --base base.nemo --train train.jsonl --out outputs/ft \
      --recipe nemotron35 --target-langs bg-BG --replay-langs el-GR,es-ES --max-steps 2000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from components.common.languages import parse_langs
from components.common.logs import add_verbosity_flags, configure_from
from components.common.settings import add_arguments, from_arguments
from components.finetune_asr.settings import FinetuneSettings


def _parser() -> argparse.ArgumentParser:
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

    n = sub.add_parser(
        "nemotron-shape", help="build (or reuse) the Nemotron-shaped 600 M base: real shape, random weights"
    )
    n.add_argument(
        "--text",
        action="append",
        required=True,
        help="manifest (.jsonl) or metadata.csv whose `text` the 13,087-piece tokenizer must spell",
    )
    n.add_argument("--out", default=".cache/nemotron_shape", help="cache directory (OUT/<key>/model.nemo)")
    n.add_argument("--seed", type=int, default=0)
    n.add_argument(
        "--calibrate-audio", default=None, help="a clip on which the blank bias is calibrated to emit"
    )

    f = sub.add_parser("finetune", help="fine-tune a .nemo per a recipe (+ the flags that override it)")
    f.add_argument("--base", required=True, help="base model: local .nemo or models:/name@alias")
    f.add_argument("--train", required=True, help="train manifest (JSON lines)")
    f.add_argument("--out", required=True, help="output directory: model.nemo + model.json")
    f.add_argument(
        "--replay-manifest", default=None, help="manifest to draw replay rows from (default: --train)"
    )
    f.add_argument("--val", default=None, help="val manifest: WER per language of the result (sidecar)")
    f.add_argument("--devices", default=None, help="Lightning devices (default: the recipe's)")
    f.add_argument("--strategy", default=None, help="Lightning strategy, e.g. ddp (default: the recipe's)")
    f.add_argument("--work-dir", default=None, help="manifest + checkpoints (default: OUT/work); resumes")
    f.add_argument("--threads", type=int, default=None)
    add_arguments(f, FinetuneSettings)  # one flag per setting: --recipe, --target-langs, --lr, ...

    add_verbosity_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_from(args)
    return {"bootstrap": _bootstrap, "nemotron-shape": _nemotron_shape, "finetune": _finetune}[args.cmd](args)


def _bootstrap(args: argparse.Namespace) -> int:
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


def _nemotron_shape(args: argparse.Namespace) -> int:
    from components.finetune_asr.nemotron_shape import build_nemotron_shaped, read_texts

    path = build_nemotron_shaped(read_texts(args.text), args.out, args.seed, args.calibrate_audio)
    print(json.dumps({"model_path": path, "sidecar_path": str(Path(path).with_name("model.json"))}))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from components.finetune_asr import core
    from registry.resolve import resolve_model

    settings = from_arguments(FinetuneSettings, args)
    base = resolve_model(args.base, f"{args.out}/base_model")
    res = core.finetune(
        base,
        args.train,
        args.out,
        settings,
        replay_manifest=args.replay_manifest,
        devices=int(args.devices) if args.devices and args.devices.lstrip("-").isdigit() else args.devices,
        strategy=args.strategy,
        val_manifest=args.val,
        threads=args.threads,
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
