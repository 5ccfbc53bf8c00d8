"""`python -m pipelines compile|run-local|submit|demo|rehearse|reproduce`: the pipeline's command surface.

Each subcommand is a pair: `_add_<name>` declares its arguments, `_<name>` runs it (set as the parser's
`run` default, so `main` only parses and dispatches).
"""

from __future__ import annotations

import argparse
import sys

from components.common.logs import add_verbosity_flags, configure_from, verbosity


def _add_compile(sub) -> None:
    c = sub.add_parser("compile", help="write the pipeline YAML for the Kubeflow UI")
    c.add_argument("--out", default="pipeline.yaml")
    c.set_defaults(run=_compile)


def _add_run_local(sub) -> None:
    r = sub.add_parser("run-local", help="run the pipeline with kfp.local (base model must exist)")
    r.add_argument("--base-model-uri", required=True, help="local .nemo or models:/name@alias")
    r.add_argument(
        "--recipe",
        default=None,
        help="tiny-demo | nemotron35 | a recipe YAML (= --set finetune_asr.recipe=...)",
    )
    r.add_argument(
        "--data-rev",
        default=None,
        help="dataset version: a git revision of data.dvc or a DVC md5 (= --set run.data_rev=...)",
    )
    r.add_argument("--no-cache", action="store_true", help="run every step (kfp.local's cache off)")
    r.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override pipelines/params.yaml",
    )
    r.set_defaults(run=_run_local)


def _add_submit(sub) -> None:
    s = sub.add_parser(
        "submit", help="upload/version the pipeline on a Kubeflow Pipelines server and start a run"
    )
    s.add_argument(
        "--host", required=True, help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline"
    )
    s.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a pipeline parameter (repeatable), e.g. --set target_langs=ro-RO --set gpus=4",
    )
    s.add_argument("--pipeline-name", default="nemotron-asr-finetune")
    s.add_argument("--experiment", default="nemotron-asr")
    s.add_argument("--run-name", default=None)
    s.add_argument("--namespace", default=None, help="Kubeflow profile namespace (multi-user installs)")
    s.add_argument("--existing-token", default=None, help="bearer token (default: kfp.Client's discovery)")
    s.add_argument(
        "--dry-run", action="store_true", help="compile and print what would be sent; send nothing"
    )
    s.set_defaults(run=_submit)


def _add_rehearse(sub) -> None:
    h = sub.add_parser(
        "rehearse", help="the whole pipeline at Nemotron 3.5's size, recipe nemotron35 (make rehearse)"
    )
    h.set_defaults(run=_rehearse)


def _add_demo(sub) -> None:
    d = sub.add_parser("demo", help="the whole system end to end (make demo)")
    d.add_argument(
        "--data-rev", default=None, help="= --set run.data_rev=... (the corpus is still synthesized)"
    )
    d.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    d.set_defaults(run=_demo)


def _add_reproduce(sub) -> None:
    p = sub.add_parser("reproduce", help="re-run a registered model version from its lineage and compare")
    p.add_argument("model", help="registered model name")
    p.add_argument("version", help="model version")
    p.add_argument(
        "--wer-tolerance",
        type=float,
        default=None,
        help="allowed |WER difference| per language (default 0 on CPU; see docs/REPRODUCE.md)",
    )
    p.add_argument(
        "--base-model-uri", default=None, help="where the recorded base checkpoint is now (same sha256)"
    )
    p.add_argument(
        "--allow-dirty", action="store_true", help="compare anyway from a dirty/mismatched checkout"
    )
    p.set_defaults(run=_reproduce)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for add in (_add_compile, _add_run_local, _add_submit, _add_rehearse, _add_demo, _add_reproduce):
        add(sub)
    add_verbosity_flags(ap)
    return ap


def _compile(args) -> int:
    from kfp import compiler

    from pipelines.asr_pipeline import asr_finetune_pipeline

    compiler.Compiler().compile(asr_finetune_pipeline, args.out)
    print(f"wrote {args.out}")
    return 0


def _run_local(args) -> int:
    from components.common.settings import SettingsError
    from pipelines.local import REPO_ROOT, PipelineFailed, load_params, pipeline_arguments, run_local

    try:
        overrides = args.set + ([f"finetune_asr.recipe={args.recipe}"] if args.recipe else [])
        overrides += [f"run.data_rev={args.data_rev}"] if args.data_rev is not None else []
        arguments = pipeline_arguments(load_params(overrides=overrides), args.base_model_uri)
        run_dir = run_local(arguments, REPO_ROOT / "outputs" / "kfp", enable_caching=not args.no_cache)
    except (SettingsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except PipelineFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(run_dir)
    return 0


def _submit(args) -> int:
    import json

    from pipelines.submit import parse_overrides, submit

    try:
        params = parse_overrides(args.set)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        sent = {"host": args.host, "pipeline": args.pipeline_name, "experiment": args.experiment}
        print(json.dumps({**sent, "params": params}, indent=2))
        return 0
    res = submit(
        args.host,
        params,
        args.pipeline_name,
        args.experiment,
        args.run_name,
        args.namespace,
        args.existing_token,
    )
    print(f"pipeline {args.pipeline_name} ({res.pipeline_id}) version {res.version_name}")
    print(f"run {res.run_id}: {res.run_url}")
    return 0


def _rehearse(args) -> int:
    from pipelines.rehearse import main as rehearse

    return rehearse()


def _demo(args) -> int:
    from pipelines.demo import main as demo

    return demo(
        args.set + ([f"run.data_rev={args.data_rev}"] if args.data_rev is not None else []),
        verbosity(args),
    )


def _reproduce(args) -> int:
    from pipelines.reproduce import main as reproduce

    return reproduce(
        args.model,
        args.version,
        wer_tolerance=args.wer_tolerance,
        base_model_uri=args.base_model_uri,
        allow_dirty=args.allow_dirty,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd != "demo":  # the demo splits its output between the terminal and its log file itself
        configure_from(args)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
