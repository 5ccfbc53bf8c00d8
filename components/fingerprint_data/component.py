"""kfp wrapper: the dataset's content fingerprint (never cached; the data steps are cached on it)."""

from components.common.kfp_base import component


@component
def fingerprint_data(data_root: str) -> str:
    from components.common.logs import configure
    from components.fingerprint_data.core import fingerprint

    configure()  # this project's log lines as `[step] message` (components.common.logs)

    fp = fingerprint(data_root)
    print(
        f"{data_root}: {fp.n_files} files, {fp.n_bytes / 1e6:.1f} MB, sha256 {fp.sha256} ({fp.seconds:.1f} s)"
    )
    return fp.sha256
