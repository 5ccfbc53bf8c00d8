"""The great-expectations glue: the Check records as a GX suite over one pandas frame, in an ephemeral
context (nothing written outside the Data Docs folder it is given)."""

from __future__ import annotations

import os
from pathlib import Path

from components.validate_data.checks import Check, Context


def run_suite(
    df, checks: list[Check], ctx: Context, hard: set[str], docs_dir: Path | None
) -> tuple[dict[str, list[int]], Path | None]:
    """Run `checks` over `df`; returns failing lines per check name and the validation-result page of the
    Data Docs site built in `docs_dir` (None when no site is wanted)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    gctx = gx.get_context(mode="ephemeral")
    gctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        gctx.add_data_docs_site(
            site_name="validation",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    batch = (
        gctx.data_sources.add_pandas("dataset")
        .add_dataframe_asset(name="metadata_with_audio")
        .add_batch_definition_whole_dataframe("all_rows")
    )
    suite = gctx.suites.add(gx.ExpectationSuite(name="raw_asr_dataset"))
    for check in checks:
        exp = check.expectation(gxe, ctx)
        exp.meta = {"check": check.name}
        exp.description = check.description
        exp.severity = "critical" if check.name in hard else "warning"
        suite.add_expectation(exp)
    vd = gctx.validation_definitions.add(
        gx.ValidationDefinition(name="raw_asr_dataset", data=batch, suite=suite)
    )
    actions = (
        [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["validation"])] if docs_dir else []
    )
    cp = gctx.checkpoints.add(
        gx.Checkpoint(
            name="validate_data",
            validation_definitions=[vd],
            actions=actions,
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["line"]},
        )
    )
    run = cp.run(batch_parameters={"dataframe": df})
    failing: dict[str, list[int]] = {}
    for vr in run.run_results.values():
        for er in vr.results:
            name = er.expectation_config.meta["check"]
            if er.exception_info and er.exception_info.get("raised_exception"):
                raise RuntimeError(f"great-expectations could not evaluate check {name}: {er.exception_info}")
            failing[name] = sorted({int(u["line"]) for u in er.result.get("unexpected_index_list") or []})
    page = None
    if docs_dir is not None:
        pages = sorted((docs_dir / "validations").rglob("*.html"))
        page = pages[-1] if pages else None
    return failing, page
