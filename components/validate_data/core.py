"""Validate a raw dataset (metadata + audio) before anything trains on it.

Every row of `metadata.csv`/`metadata.jsonl` is joined with the properties of its *decoded* audio into one
pandas DataFrame; a great-expectations suite (`gx_suite`, ephemeral context, nothing written outside
`out_dir`) runs the `Check` records of `checks` over it and decides which rows fail which check; each record
explains its failures in words. Outputs in `out_dir`: `validation.json` (counts, failures, and every
rejected row; written last, so its presence means the run finished), `failures.csv` (line, file, check,
severity, reason) and the GX Data Docs site `data_docs/index.html`. Thresholds are parameters of
`validate_dataset`; docs/DATA.md lists every check (its table is generated from the records).

A row that fails a hard check is *rejected*: build_manifest, given validation.json, leaves exactly those rows
out, whatever `max_failed_fraction` says; the tolerance only decides whether the run passes.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import tempfile
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Collection
from pathlib import Path

from components.common.audio import AudioError, RawFormat, probe_audio, wav_bytes_for_fast_path
from components.common.dataset import (  # noqa: F401  (re-exported: the reader's historical home)
    ID_RE,
    DatasetError,
    Metadata,
    MetadataRow,
    derive_id,
    find_metadata,
    read_metadata,
    resolve_audio,
)
from components.common.io import atomic_write_text, sha256_file
from components.common.languages import (  # noqa: F401
    canonical_locale,
    canonical_locales,
    default_prompt_dictionary,
    invalid_characters,
)
from components.common.manifest import SPLITS
from components.common.pool import map_guarded
from components.validate_data.checks import (  # noqa: F401
    CHECKS,
    CHECKS_BY_NAME,
    DUPLICATE_AUDIO_MODES,
    MAX_CHARS_PER_SECOND,
    MAX_CLIPPED,
    MAX_DURATION,
    MIN_CHARS_PER_SECOND,
    MIN_DURATION,
    MIN_RMS_DBFS,
    Context,
    Thresholds,
    hard_set,
)
from components.validate_data.gx_suite import run_suite
from components.validate_data.offline_docs import make_offline
from components.validate_data.report import (  # noqa: F401
    Failure,
    ValidationResult,
    report_dict,
    report_metrics,
    summary_text,
    write_single_page,
)

log = logging.getLogger(__name__)
_PROGRESS_MIN = 200  # log probing progress from this many files on
_POOL_MIN = 64  # below this many files a process pool costs more than it saves


class ValidationFailed(RuntimeError):
    """Raised by the pipeline step when hard checks fail; the message is the one-screen summary."""


def _probe_one(job: str | tuple[str, RawFormat | None]) -> tuple[dict | None, str | None]:
    """Picklable wrapper for the pool: (info dict + sha256, None) or (None, 'reason: detail')."""
    path, raw = (job, None) if isinstance(job, str) else job
    try:
        # a WAV is read once: decoded and hashed from the same bytes
        blob = wav_bytes_for_fast_path(path, raw, os.path.getsize(path))
    except OSError:
        blob = None  # probe_audio names the reason
    try:
        info = probe_audio(path, raw, blob).to_dict()
    except AudioError as e:
        return None, f"{e.reason}: {e.detail}"
    except MemoryError:
        return None, "too_large: out of memory while decoding"
    # other files are in the page cache right after decoding: hashing them is cheap
    info["sha256"] = sha256_file(path, data=blob)
    return info, None


def _crashed(job, reason: str) -> tuple[None, str]:
    return None, reason


def probe_files(
    paths: list[str | tuple[str, RawFormat | None]], workers: int = 2, label: str = "probe"
) -> list[tuple[dict | None, str | None]]:
    """Probe many files (paths, or (path, raw layout) pairs) in a small process pool, progress logged.

    A worker that dies (OOM-killed, a crash in a codec) costs only its file, reported as `worker_died`."""
    n = len(paths)
    step, done = max(1, n // 4), [0]

    def progress(k: int) -> None:
        done[0] += k
        if n >= _PROGRESS_MIN and (done[0] % step < k or done[0] == n):
            log.info("%s %d/%d files", label, done[0], n)

    if workers > 1 and n >= _POOL_MIN:
        return map_guarded(_probe_one, paths, workers, _crashed, chunksize=16, progress=progress)
    results = []
    for p in paths:
        results.append(_probe_one(p))
        progress(1)
    return results


def chars_per_second(text: str, duration: float) -> float:
    """Letters and digits (any script) per second; spaces and punctuation are not spoken characters."""
    if not duration or duration != duration:  # 0 or NaN
        return float("nan")
    n = sum(1 for ch in unicodedata.normalize("NFC", text) if unicodedata.category(ch)[0] in "LN")
    return n / duration


Probed = tuple[Path | None, str | None, dict | None, str | None]


def probe_dataset(data_root: str | os.PathLike, meta: Metadata, workers: int = 2) -> list[Probed]:
    """Per row: (resolved path, path error, probed info, decode error). Each distinct file is decoded once."""
    resolved = [resolve_audio(data_root, r.audio) for r in meta.rows]
    jobs: dict[tuple[str, RawFormat | None], None] = {}
    for r, (p, _) in zip(meta.rows, resolved, strict=True):
        if p is not None and r.raw_error is None and p.is_file():
            jobs.setdefault((str(p), r.raw))
    results = dict(zip(jobs, probe_files(list(jobs), workers=workers, label="probed"), strict=True))
    out: list[Probed] = []
    for r, (p, path_error) in zip(meta.rows, resolved, strict=True):
        if p is None:
            out.append((None, path_error, None, None))
        elif r.raw_error is not None and p.is_file():
            out.append((p, None, None, r.raw_error))
        elif (str(p), r.raw) in results:
            info, err = results[(str(p), r.raw)]
            out.append((p, None, info, err))
        else:
            out.append((p, None, None, None))  # missing file: audio_exists reports it
    return out


def duplicate_reasons(lines_shas: list[tuple[int, str | None]], mode: str = "reject") -> dict[int, str]:
    """line -> why it fails audio_unique. Rows with identical audio content (sha256) are one recording:
    under two speakers or in two splits they would put the same clip in train and test. `reject` fails
    every copy; `keep_first` keeps the first line of each group and fails the later ones."""
    if mode not in DUPLICATE_AUDIO_MODES:
        raise ValueError(f"duplicate_audio must be one of {', '.join(DUPLICATE_AUDIO_MODES)}, got {mode!r}")
    groups: dict[str, list[int]] = defaultdict(list)
    for line, sha in lines_shas:
        if sha:
            groups[sha].append(line)
    out: dict[int, str] = {}
    for lines in groups.values():
        if len(lines) < 2:
            continue
        for line in lines:
            others = ", ".join(str(x) for x in lines if x != line)
            if mode == "reject":
                out[line] = f"same audio content as line(s) {others}"
            elif line != lines[0]:
                out[line] = f"same audio content as line {lines[0]} (kept by duplicate_audio=keep_first)"
    return out


def _split_columns(meta: Metadata, info: list[dict | None]) -> dict[str, list]:
    splits_of: dict[str, set[str]] = defaultdict(set)
    splits_of_audio: dict[str, set[str]] = defaultdict(set)
    lines_of_audio: dict[str, list[int]] = defaultdict(list)
    for r, i in zip(meta.rows, info, strict=True):
        if r.split in SPLITS:
            splits_of[r.speaker].add(r.split)
            if i and i.get("sha256"):
                splits_of_audio[i["sha256"]].add(r.split)
                lines_of_audio[i["sha256"]].append(r.line)

    def leak(i: dict | None) -> str | None:
        sha = i.get("sha256") if i else None
        if not sha or len(splits_of_audio[sha]) < 2:
            return None
        return f"{', '.join(sorted(splits_of_audio[sha]))} (lines {', '.join(map(str, lines_of_audio[sha]))})"

    return {
        "split": [r.split for r in meta.rows],
        "speaker_split_conflict": [
            ", ".join(sorted(splits_of[r.speaker])) if r.speaker and len(splits_of[r.speaker]) > 1 else None
            for r in meta.rows
        ],
        "split_leak": [leak(i) for i in info],
    }


def dataset_frame(meta: Metadata, probed: list[Probed], duplicate_audio: str = "reject"):
    """Metadata joined with path checks, decoded audio properties and text checks (one row per record).

    `probed` is what probe_dataset returns (or, for tests and benchmarks, pre-probed rows of the same shape).
    """
    import pandas as pd

    info = [i for _, _, i, _ in probed]

    def num(key: str) -> list[float]:
        return [float(i[key]) if i else float("nan") for i in info]

    durations = num("duration")
    shas = [i.get("sha256") if i else None for i in info]
    dup = duplicate_reasons([(r.line, s) for r, s in zip(meta.rows, shas, strict=True)], duplicate_audio)
    columns = {
        "line": [r.line for r in meta.rows],
        "id": [r.id for r in meta.rows],
        "audio": [r.audio for r in meta.rows],
        "text": [r.text for r in meta.rows],
        "lang": [r.lang for r in meta.rows],
        "speaker": [r.speaker for r in meta.rows],
        "row_error": [r.error for r in meta.rows],
        "path_error": [e for _, e, _, _ in probed],
        "audio_file": [str(p) if p else None for p, _, _, _ in probed],
        "audio_exists": [
            None if p is None else (i is not None or err is not None) for p, _, i, err in probed
        ],
        "decode_error": [err for _, _, _, err in probed],
        "duration": durations,
        "sample_rate": num("sample_rate"),
        "channels": num("channels"),
        "peak": num("peak"),
        "rms_dbfs": [max(float(i["rms_dbfs"]), -999.0) if i else float("nan") for i in info],
        "clipped": num("clipped"),
        "extension_ok": [bool(i.get("extension_ok", True)) if i else None for i in info],
        "format": [f"{i['format']}/{i['subtype']}" if i else None for i in info],
        "audio_sha256": shas,
        "audio_duplicate": [dup.get(r.line) for r in meta.rows],
        "chars_per_second": [
            chars_per_second(r.text, d) if r.text else float("nan")
            for r, d in zip(meta.rows, durations, strict=True)
        ],
        "invalid_chars": [invalid_characters(r.text, r.lang) or None for r in meta.rows],
    }
    if meta.has_split:
        columns.update(_split_columns(meta, info))
    return pd.DataFrame(columns)


def validate_dataset(
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    prompt_dictionary: dict | None = None,
    min_duration: float = MIN_DURATION,
    max_duration: float = MAX_DURATION,
    hard_checks: Collection[str] | None = None,
    data_docs: bool = True,
    workers: int = 2,
    min_chars_per_second: float = MIN_CHARS_PER_SECOND,
    max_chars_per_second: float = MAX_CHARS_PER_SECOND,
    max_clipped: float = MAX_CLIPPED,
    min_rms_dbfs: float = MIN_RMS_DBFS,
    max_failed_fraction: float = 0.0,
    duplicate_audio: str = "reject",
) -> ValidationResult:
    """Validate `data_root` and write validation.json, failures.csv and data_docs/ into `out_dir`.

    `hard_checks` names the checks whose failure is an error (default: those of severity "error" in CHECKS);
    the others are reported as warnings. A row failing a hard check is rejected (validation.json lists it;
    build_manifest drops it). Status: "failed" when more than `max_failed_fraction` of the rows fail a hard
    check (default 0: any), "warned" when some rows are flagged but within that tolerance, "passed"
    otherwise; `passed` is status != "failed". `duplicate_audio`: "reject" fails every copy of identical
    audio, "keep_first" keeps the first line of each group and rejects the others without counting them as
    failures. Undecodable audio never raises: it is a failing row. Raises DatasetError only when the
    metadata itself cannot be read, ValueError for bad thresholds.
    """
    t = Thresholds(
        min_duration,
        max_duration,
        min_chars_per_second,
        max_chars_per_second,
        max_clipped,
        min_rms_dbfs,
        max_failed_fraction,
    )
    t.check()
    hard = hard_set(hard_checks)
    meta = read_metadata(data_root)
    df = dataset_frame(meta, probe_dataset(data_root, meta, workers), duplicate_audio)
    return validate_frame(
        df,
        out_dir,
        meta.path,
        meta.has_split,
        prompt_dictionary,
        t,
        hard,
        data_docs,
        data_root=data_root,
        duplicate_audio=duplicate_audio,
    )


def _run_with_docs(df, checks, ctx: Context, hard: set[str], out: Path, data_docs: bool):
    """The suite, with its Data Docs site built in a temp folder and swapped in as out/data_docs."""
    tmp_docs = Path(tempfile.mkdtemp(dir=out, prefix=".data_docs.")) if data_docs else None
    try:
        failing, page = run_suite(df, checks, ctx, hard, tmp_docs)
        if tmp_docs is None:
            return failing, None, None
        make_offline(tmp_docs)  # GX's pages load their styles from CDNs: inline them instead
        final = out / "data_docs"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp_docs, final)
        return failing, final / "index.html", (final / page.relative_to(tmp_docs) if page else None)
    finally:
        if tmp_docs is not None and tmp_docs.exists():
            shutil.rmtree(tmp_docs, ignore_errors=True)


def _rejected(failures: list[Failure], df, exempt_checks: set[str]) -> tuple[list[dict], set[int]]:
    """Every row with a hard failure as {line, id, audio, checks, reason}, and the lines among them that
    count against the tolerance (all but those rejected only by an explicit keep rule)."""
    by_line: dict[int, list[Failure]] = defaultdict(list)
    for f in failures:
        if f.severity == "error":
            by_line[f.line].append(f)
    ids = dict(zip(df["line"].astype(int), df["id"], strict=True))
    rows = [
        {
            "line": line,
            "id": ids[line],
            "audio": fs[0].file,
            "checks": [f.check for f in fs],
            "reason": "; ".join(f"{f.check}: {f.reason}" for f in fs),
        }
        for line, fs in sorted(by_line.items())
    ]
    counted = {line for line, fs in by_line.items() if {f.check for f in fs} - exempt_checks}
    return rows, counted


def validate_frame(
    df,
    out_dir: str | os.PathLike,
    metadata_path: Path,
    has_split: bool,
    prompt_dictionary: dict | None = None,
    thresholds: Thresholds | None = None,
    hard_checks: Collection[str] | None = None,
    data_docs: bool = True,
    data_root: str | os.PathLike = "",
    duplicate_audio: str = "reject",
) -> ValidationResult:
    """Run the GX suite over a frame from dataset_frame and write the reports (validate_dataset's 2nd half).

    Separate so that a frame of pre-probed rows (a cache, a benchmark) is validated by the same code. Locale
    aliases of one prompt index ('en' and 'en-US') are renamed to the canonical locale first, so every count
    and every later stage sees one language.
    """
    t = thresholds or Thresholds()
    t.check()
    hard = hard_set(hard_checks)
    out = Path(out_dir)
    prompts = prompt_dictionary if prompt_dictionary is not None else default_prompt_dictionary()
    aliases = canonical_locales(prompts)
    df["lang"] = [canonical_locale(x, aliases) for x in df["lang"]]
    ctx = Context.of(df, t, sorted(set(aliases.values())))
    checks = [c for c in CHECKS if has_split or not c.optional]
    out.mkdir(parents=True, exist_ok=True)
    failing, docs_index, page = _run_with_docs(df, checks, ctx, hard, out, data_docs)

    by_line = {int(line): i for i, line in enumerate(df["line"])}
    failures: list[Failure] = []
    for check in checks:
        sev = "error" if check.name in hard else "warning"
        for line in failing.get(check.name, []):
            r = df.iloc[by_line[line]]
            failures.append(Failure(line, r["audio"], check.name, sev, str(check.reason(r, ctx))))
    failures.sort(key=lambda f: (f.line, f.check))
    exempt = {"audio_unique"} if duplicate_audio == "keep_first" else set()
    rejected, counted = _rejected(failures, df, exempt)
    hard_lines = {r["line"] for r in rejected}
    warn_lines = {f.line for f in failures if f.severity == "warning"} - hard_lines
    n_rows = len(df)
    if len(counted) > t.max_failed_fraction * n_rows:
        status = "failed"
    else:
        status = "warned" if hard_lines or warn_lines else "passed"
    res = ValidationResult(
        passed=status != "failed",
        n_rows=n_rows,
        n_failed_rows=len(counted),
        n_warning_rows=len(warn_lines),
        check_counts={c.name: len(failing.get(c.name, [])) for c in checks},
        hard_checks=sorted(n for n in hard if n in failing),
        failures=failures,
        summary="",
        metadata_path=Path(metadata_path),
        report_path=out / "validation.json",
        failures_path=out / "failures.csv",
        data_docs_path=docs_index,
        data_docs_page=page,
        rows_per_lang=dict(Counter(df["lang"])),
        hours_decodable=float(df["duration"].dropna().sum()) / 3600.0,
        status=status,
        thresholds=t,
        rejected_rows=rejected,
        metadata_sha256=sha256_file(metadata_path) if Path(metadata_path).is_file() else "",
        lang_aliases={k: v for k, v in aliases.items() if k != v},
        duplicate_audio=duplicate_audio,
    )
    res.summary = summary_text(res)
    _write_reports(res, Path(data_root))
    return res


def _write_reports(res: ValidationResult, data_root: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["line", "file", "check", "severity", "reason"])
    w.writerows([f.line, f.file, f.check, f.severity, f.reason] for f in res.failures)
    atomic_write_text(res.failures_path, buf.getvalue())
    atomic_write_text(res.report_path, json.dumps(report_dict(res, data_root), ensure_ascii=False, indent=2))


def run_step(
    data_root: str | os.PathLike,
    docs_html: str | os.PathLike,
    report_json: str | os.PathLike,
    fail_on_error: bool = True,
    details_dir: str | os.PathLike | None = None,
    **thresholds,
) -> tuple[ValidationResult, dict[str, float]]:
    """The pipeline step: validate `data_root`, write the one-page Data Docs to `docs_html` and
    validation.json to `report_json`, log the one-screen summary; returns (result, metrics to log).

    The GX validation page is folded into the one-file HTML (a kfp HTML artifact is a single file). The full
    output (validation.json, failures.csv, the Data Docs site), which the summary names, is kept in
    `details_dir` (the component: a folder beside its artifacts), else in a temp dir removed at the end. Raises
    ValidationFailed after writing both outputs when hard checks fail and `fail_on_error` is set.
    """
    with tempfile.TemporaryDirectory() as tmp:
        res = validate_dataset(data_root, details_dir or tmp, **thresholds)
        write_single_page(res, docs_html)
        shutil.copyfile(res.report_path, report_json)
    log.info("%s", res.summary)
    if not res.passed and fail_on_error:
        raise ValidationFailed(res.summary)
    return res, report_metrics(res)
