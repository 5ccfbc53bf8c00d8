"""kfp wrapper: validate the raw dataset; fail the run (after publishing Data Docs) when hard checks fail."""

from typing import NamedTuple

from kfp.dsl import HTML, Metrics, Output

from components.common.kfp_base import component


@component
def validate_data(
    data_root: str,
    data_docs: Output[HTML],
    report: Output[Metrics],
    settings: str = "",
    fail_on_error: bool = True,
    data_version: str = "",
) -> NamedTuple("Outputs", [("passed", bool), ("summary", str)]):
    """`settings`: the step's record (components/validate_data/settings.py) as `name=value` lines ('' = its
    defaults); its fields reach core.run_step by name. fail_on_error=False returns passed=False instead of
    raising: on a cluster a failed task uploads no artifacts (only its logs), so a pipeline that wants the Data
    Docs in the UI gates on `passed` instead. `data_version` (the dataset's content fingerprint) is unused
    here: it makes KFP's cache key follow content."""
    import os

    from components.common.logs import configure
    from components.common.settings import step_kwargs
    from components.validate_data.core import run_step
    from components.validate_data.settings import ValidateSettings

    configure()  # this project's log lines as `[step] message` (components.common.logs)

    res, metrics = run_step(
        data_root,
        data_docs.path,
        report.path,
        fail_on_error,
        # validation.json, failures.csv and the Data Docs site, which the summary names: beside the artifacts
        details_dir=os.path.join(os.path.dirname(report.path), "validation"),
        **step_kwargs(ValidateSettings, settings, "validate_data"),
    )
    for name, value in metrics.items():
        report.log_metric(name, value)
    return (res.passed, res.summary)
