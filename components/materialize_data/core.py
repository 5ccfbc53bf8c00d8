"""materialize_data: the run's dataset version, pulled with DVC, verified by its md5, cached by it.

The first step of the pipeline. `data_rev` names the version:

- a git revision of `data_repo` (a tag, a branch, a commit, `HEAD~3`): the `data.dvc` at that revision says
  which DVC md5 the dataset has;
- a DVC md5 (`6ea46d…` or `6ea46d….dir`, optionally `md5:`-prefixed): the newest commit of `data_repo` whose
  `data.dvc` records it;
- empty: no version is pulled; the folder `data_root` is used as it is and its DVC md5 is computed (the md5
  `dvc add` would record), so the lineage still names exactly what was trained on.

A named version is materialised under `<data_cache>/<md5>/` (on the data PVC on a cluster, `.cache/data_versions`
locally): read through `dvc.api.DVCFileSystem` at that revision (the repository's DVC cache when it has the
files, else the DVC remote configured in the repository: `dvc pull` without touching the workspace), hashed
once with DVC's own hashing, compared with the md5 `data.dvc` recorded, then renamed into place with a marker
`<md5>.json` beside it. A version already materialised (folder + marker) is neither pulled nor hashed again:
that is the cache. A mismatch is an error naming both md5s; nothing half-written is ever used.

This step replaces the former fingerprint_data, which re-hashed every referenced byte on every run and whose
hash never reached the lineage: the DVC md5 is both the data steps' cache key and the lineage's `data_md5`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from components.common.io import atomic_write_text

DVC_FILE = "data.dvc"
_MD5 = re.compile(r"^(?:md5:)?([0-9a-f]{32})(?:\.dir)?$")


class DataVersionError(ValueError):
    """The named dataset version cannot be found, pulled or verified (deterministic: never retried)."""


@dataclass(frozen=True)
class Materialized:
    data_root: str  # the folder the data steps read
    data_md5: str  # DVC's md5 of that folder (`<hex>.dir`), as data.dvc records it
    data_commit: str  # the commit of data_repo whose data.dvc named the version ('' when data_rev is empty)
    source: str  # "cache" (already materialised) | "pulled" (DVC) | "in place" (data_rev empty, hashed)
    n_files: int
    n_bytes: int
    seconds: float


def dvc_md5(folder: str | os.PathLike) -> str:
    """DVC's md5 of a folder (`<hex>.dir`): exactly what `dvc add` records in a .dvc file."""
    from dvc.fs import LocalFileSystem
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB

    folder = Path(folder)
    if not folder.is_dir():
        raise DataVersionError(f"materialize_data: {folder} is not a directory")
    with tempfile.TemporaryDirectory(prefix="dvc-md5-") as odb_dir:
        try:
            _, _, obj = build(HashFileDB(LocalFileSystem(), odb_dir), str(folder), LocalFileSystem(), "md5")
        except (
            OSError
        ) as e:  # a symlink loop, a dangling link, an unreadable file: `dvc add` fails the same way
            raise DataVersionError(
                f"materialize_data: cannot hash {folder} the way DVC does: {e.filename or ''}: {e.strerror or e} "
                "(fix or remove that file; `dvc add` would fail on it too)"
            ) from e
    return obj.hash_info.value


def parse_md5(data_rev: str) -> str | None:
    """'md5:<hex>', '<hex>' or '<hex>.dir' -> '<hex>.dir'; a git revision -> None."""
    m = _MD5.match(data_rev.strip().lower())
    return f"{m.group(1)}.dir" if m else None


def _git(repo: str | os.PathLike, *args: str, check: bool = True) -> str:
    out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise DataVersionError(f"git {' '.join(args)} in {repo}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def local_repo(data_repo: str, cache_dir: str | os.PathLike) -> Path:
    """A local checkout of `data_repo`: the path itself, or for a git URL a blob-less clone kept in `cache_dir`
    and fetched on every call (data.dvc files are tiny)."""
    if "://" not in data_repo and not data_repo.startswith("git@"):
        repo = Path(data_repo).expanduser()
        if not (repo / ".dvc").is_dir():
            raise DataVersionError(f"data_repo {repo}: not a DVC repository (no .dvc folder)")
        return repo
    clone = Path(cache_dir) / ".repos" / hashlib.sha256(data_repo.encode()).hexdigest()[:16]
    if (clone / ".git").is_dir():
        _git(clone, "fetch", "--quiet", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*")
    else:
        clone.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=clone.parent, prefix=".clone-"))
        _git(clone.parent, "clone", "--quiet", "--filter=blob:none", data_repo, str(tmp))
        os.replace(tmp, clone)
    return clone


def read_outs(dvc_text: str, where: str) -> tuple[str, str]:
    """(md5, path) of a `dvc add` file's single output."""
    import yaml

    try:
        out = yaml.safe_load(dvc_text)["outs"][0]
        return str(out["md5"]), str(out["path"])
    except (KeyError, IndexError, TypeError, yaml.YAMLError):
        raise DataVersionError(f"{where}: no outs[0].md5/path (is it a `dvc add` file?)") from None


def resolve_rev(repo: str | os.PathLike, data_rev: str, dvc_file: str = DVC_FILE) -> tuple[str, str, str]:
    """(commit, md5, output path) of the version `data_rev` names in `repo` (module docstring)."""
    want = parse_md5(data_rev)
    if want is None:
        commit = _git(
            repo, "rev-parse", "--verify", "--quiet", f"{data_rev.strip()}^{{commit}}", check=False
        ).strip()
        if not commit:
            raise DataVersionError(f"data_rev {data_rev!r}: not a revision of {repo} (and not a DVC md5)")
        text = _git(repo, "show", f"{commit}:{dvc_file}", check=False)
        if not text:
            raise DataVersionError(
                f"data_rev {data_rev!r}: {dvc_file} does not exist at {commit[:12]} in {repo}"
            )
        md5, path = read_outs(text, f"{dvc_file}@{commit[:12]}")
        return commit, md5, path
    commits = _git(repo, "log", "--all", "--format=%H", "--", dvc_file).split()
    for commit in commits:
        text = _git(repo, "show", f"{commit}:{dvc_file}", check=False)
        if text:
            md5, path = read_outs(text, f"{dvc_file}@{commit[:12]}")
            if md5 == want:
                return commit, md5, path
    raise DataVersionError(
        f"data_rev {data_rev!r}: no commit of {repo} has a {dvc_file} with md5 {want} "
        f"({len(commits)} commits of {dvc_file} searched); `git commit {dvc_file}` after `dvc add`"
    )


def _count(folder: Path) -> tuple[int, int]:
    n = size = 0
    for p in folder.rglob("*"):
        if p.is_file():
            n, size = n + 1, size + p.stat().st_size
    return n, size


def materialize(
    data_repo: str,
    data_rev: str,
    data_root: str | os.PathLike,
    data_cache: str | os.PathLike,
    dvc_file: str = DVC_FILE,
) -> Materialized:
    """The dataset version `data_rev` as a verified local folder (module docstring)."""
    t0 = time.monotonic()
    if not data_rev.strip():
        root = Path(data_root)
        md5 = dvc_md5(root)
        n, size = _count(root)
        return Materialized(str(root), md5, "", "in place", n, size, time.monotonic() - t0)
    cache = Path(data_cache)
    cache.mkdir(parents=True, exist_ok=True)
    if not data_repo.strip():
        raise DataVersionError(
            "data_rev is set but data_repo is empty: name the git repository holding data.dvc"
        )
    repo = local_repo(data_repo, cache)
    commit, md5, out_path = resolve_rev(repo, data_rev, dvc_file)
    key = md5.removesuffix(".dir")
    target, marker = cache / key, cache / f"{key}.json"
    if target.is_dir() and marker.is_file():
        doc = json.loads(marker.read_text(encoding="utf-8"))
        return Materialized(
            str(target),
            md5,
            commit,
            "cache",
            doc.get("n_files", 0),
            doc.get("n_bytes", 0),
            time.monotonic() - t0,
        )
    import dvc.api

    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".tmp-{key}-"))
    try:
        fs = dvc.api.DVCFileSystem(str(repo), rev=commit)
        try:
            fs.get(out_path, str(tmp / "data"), recursive=True)
        except Exception as e:  # noqa: BLE001 (DVC raises many kinds; the reason is in the message)
            raise DataVersionError(
                f"data_rev {data_rev!r} ({dvc_file}@{commit[:12]}, md5 {md5}): dvc could not fetch "
                f"{out_path!r} from the cache or the remote of {data_repo}: {type(e).__name__}: {e}"
            ) from e
        got = dvc_md5(tmp / "data")
        if got != md5:
            raise DataVersionError(
                f"data_rev {data_rev!r}: the pulled {out_path!r} has md5 {got}, but {dvc_file}@{commit[:12]} "
                f"records {md5} (a corrupted remote or cache); nothing was materialised"
            )
        n, size = _count(tmp / "data")
        if target.exists():  # a half-finished earlier attempt (no marker): replace it
            shutil.rmtree(target)
        try:
            os.rename(tmp / "data", target)
        except OSError:
            if not (target.is_dir() and marker.is_file()):  # not a concurrent run that finished first
                raise
        if not marker.is_file():
            atomic_write_text(
                marker,
                json.dumps(
                    {
                        "md5": md5,
                        "commit": commit,
                        "data_rev": data_rev,
                        "data_repo": data_repo,
                        "n_files": n,
                        "n_bytes": size,
                    }
                )
                + "\n",
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Materialized(str(target), md5, commit, "pulled", n, size, time.monotonic() - t0)


def summary(m: Materialized) -> str:
    return (
        f"dataset {m.data_md5}"
        + (f" ({DVC_FILE}@{m.data_commit[:12]})" if m.data_commit else "")
        + f": {m.n_files} files, {m.n_bytes / 1e6:.1f} MB at {m.data_root} [{m.source}, {m.seconds:.1f} s]"
    )


def as_dict(m: Materialized) -> dict:
    return asdict(m)
