"""kfp wrapper: validate the raw dataset; fail the run (after publishing Data Docs) when hard checks fail."""

from typing import NamedTuple

from kfp.dsl import HTML, Metrics, Output

from components.common.kfp_base import component


@component
def validate_data(
    data_root: str,
    min_duration: float,
    max_duration: float,
    data_docs: Output[HTML],
    report: Output[Metrics],
    fail_on_error: bool = True,
    min_chars_per_second: float = 1.0,
    max_chars_per_second: float = 40.0,
    max_failed_fraction: float = 0.0,
    data_version: str = "",
    duplicate_audio: str = "reject",
) -> NamedTuple("Outputs", [("passed", bool), ("summary", str)]):
    """fail_on_error=False returns passed=False instead of raising: on a cluster a failed task uploads no
    artifacts (only its logs), so a pipeline that wants the Data Docs in the UI gates on `passed` instead.
    `data_version` (the dataset's content fingerprint) is unused here: it makes KFP's cache key follow content."""
    import os

    from components.common.logs import configure
    from components.validate_data.core import run_step

    configure()  # this project's log lines as `[step] message` (components.common.logs)

    res, metrics = run_step(
        data_root,
        data_docs.path,
        report.path,
        fail_on_error,
        # validation.json, failures.csv and the Data Docs site, which the summary names: beside the artifacts
        details_dir=os.path.join(os.path.dirname(report.path), "validation"),
        min_duration=min_duration,
        max_duration=max_duration,
        min_chars_per_second=min_chars_per_second,
        max_chars_per_second=max_chars_per_second,
        max_failed_fraction=max_failed_fraction,
        duplicate_audio=duplicate_audio,
    )
    for name, value in metrics.items():
        report.log_metric(name, value)
    return (res.passed, res.summary)
