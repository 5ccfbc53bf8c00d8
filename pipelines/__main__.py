"""`python -m pipelines compile|run-local|demo`: the pipeline's command surface."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compile", help="write the pipeline YAML for the Kubeflow UI")
    c.add_argument("--out", default="pipeline.yaml")
    r = sub.add_parser("run-local", help="run the pipeline with kfp.local (base model must exist)")
    r.add_argument("--base-model-uri", required=True, help="local .nemo or models:/name@alias")
    r.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override pipelines/params.yaml")
    d = sub.add_parser("demo", help="the whole system end to end (make demo)")
    d.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = ap.parse_args(argv)

    if args.cmd == "compile":
        from kfp import compiler

        from pipelines.asr_pipeline import asr_finetune_pipeline

        compiler.Compiler().compile(asr_finetune_pipeline, args.out)
        print(f"wrote {args.out}")
    elif args.cmd == "run-local":
        from pipelines.local import REPO_ROOT, load_params, pipeline_arguments, run_local

        params = load_params(overrides=args.set)
        run_dir = run_local(pipeline_arguments(params, args.base_model_uri), REPO_ROOT / "outputs" / "kfp")
        print(run_dir)
    elif args.cmd == "demo":
        from pipelines.demo import main as demo

        return demo(args.set)
    return 0


if __name__ == "__main__":
    sys.exit(main())
