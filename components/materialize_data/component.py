"""kfp wrapper: the run's dataset version (logic in core.py). Never cached: it is what decides the cache keys."""

from typing import NamedTuple

from components.common.kfp_base import component


@component
def materialize_data(data_repo: str, data_rev: str, data_root: str, data_cache: str) -> NamedTuple(
    "Outputs", [("data_root", str), ("data_md5", str), ("data_commit", str)]
):
    from components.common.logs import configure

    configure()  # this project's log lines as `[step] message` (components.common.logs)
    from components.common.errors import exit_on_deterministic
    from components.materialize_data.core import materialize, summary

    try:
        m = materialize(data_repo, data_rev, data_root, data_cache)
    except BaseException as e:  # noqa: BLE001 (a deterministic failure exits with its own code)
        exit_on_deterministic("materialize_data", e)
    print(summary(m))
    return (m.data_root, m.data_md5, m.data_commit)
