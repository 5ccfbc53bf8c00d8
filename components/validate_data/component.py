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
) -> NamedTuple("Outputs", [("passed", bool), ("summary", str)]):
    """fail_on_error=False returns passed=False instead of raising: on a cluster a failed task uploads no
    artifacts (only its logs), so a pipeline that wants the Data Docs in the UI gates on `passed` instead.
    `data_version` (the dataset's content fingerprint) is unused here: it makes KFP's cache key follow content."""
    import shutil
    import tempfile

    from components.validate_data import core

    with tempfile.TemporaryDirectory() as out:  # the full GX site is folded into the one-file HTML artifact
        res = core.validate_dataset(
            data_root,
            out,
            min_duration=min_duration,
            max_duration=max_duration,
            min_chars_per_second=min_chars_per_second,
            max_chars_per_second=max_chars_per_second,
            max_failed_fraction=max_failed_fraction,
        )
        core.write_single_page(res, data_docs.path)
        shutil.copyfile(res.report_path, report.path)  # validation.json; a real file also enables caching
    for name, value in core.report_metrics(res).items():
        report.log_metric(name, value)
    print(res.summary)
    if not res.passed and fail_on_error:
        raise core.ValidationFailed(res.summary)
    return (res.passed, res.summary)
