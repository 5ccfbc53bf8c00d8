"""validate_data's outputs for people and machines: the one-screen summary, validation.json, the kfp
Metrics numbers and the one-file HTML artifact."""

from __future__ import annotations

import html
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.common.io import atomic_write_text
from components.validate_data.checks import CHECKS_BY_NAME, Thresholds


@dataclass(frozen=True)
class Failure:
    line: int
    file: str
    check: str
    severity: str
    reason: str


@dataclass
class ValidationResult:
    passed: bool
    n_rows: int
    n_failed_rows: int  # rows failing at least one hard check
    n_warning_rows: int  # rows failing only warning-level checks
    check_counts: dict[str, int]  # failing rows per check (every check that ran)
    hard_checks: list[str]
    failures: list[Failure]
    summary: str
    metadata_path: Path
    report_path: Path
    failures_path: Path
    data_docs_path: Path | None  # data_docs/index.html
    data_docs_page: Path | None  # the validation-result page inside the site
    rows_per_lang: dict[str, int] = field(default_factory=dict)
    hours_decodable: float = 0.0
    status: str = (
        ""  # "passed" (nothing flagged), "warned" (warnings, or hard failures within tolerance), "failed"
    )
    thresholds: Thresholds = field(default_factory=lambda: Thresholds())
    # every row with a hard failure, all of them (failures.csv has every failure, validation.json the first
    # 10,000): {line, id, audio, checks, reason}. build_manifest drops exactly these rows.
    rejected_rows: list[dict] = field(default_factory=list)
    metadata_sha256: str = ""  # the metadata bytes validated: build_manifest refuses a report of other data
    lang_aliases: dict[str, str] = field(default_factory=dict)  # alias -> canonical locale, as applied
    duplicate_audio: str = "reject"


def summary_text(res: ValidationResult, first: int = 8) -> str:
    status = (res.status or ("passed" if res.passed else "failed")).upper()
    tolerance = res.thresholds.max_failed_fraction
    lines = [
        f"Data validation {status}: {res.n_failed_rows} of {res.n_rows} rows fail a hard check"
        + (f" (tolerated: {100 * tolerance:g}%)" if tolerance else "")
        + f", {res.n_warning_rows} more have warnings ({res.metadata_path})",
        f"  {res.n_rows} rows, {res.hours_decodable:.3f} h decodable audio; rows per lang: "
        + (", ".join(f"{k or '<empty>'} {v}" for k, v in sorted(res.rows_per_lang.items())) or "-"),
        f"  {'check':24s} {'severity':8s} {'failed':>7s}",
    ]
    for name, n in res.check_counts.items():
        sev = "error" if name in res.hard_checks else "warning"
        lines.append(f"  {name:24s} {sev:8s} {n:7d}" + ("  <-" if n and sev == "error" else ""))
    shown = sorted(res.failures, key=lambda f: (f.severity != "error", f.line))[:first]
    if shown:
        lines.append(f"First failing rows (of {len(res.failures)} failures):")
        for f in shown:
            lines.append(f"  line {f.line} {f.file}: [{f.check}] {f.reason}")
    lines.append(f"All failures: {res.failures_path}")
    if res.data_docs_path:
        lines.append(f"Data Docs: {res.data_docs_path}")
    return "\n".join(lines)


def report_dict(res: ValidationResult, data_root: Path) -> dict:
    """validation.json: machine-readable result (the full failure list is in failures.csv)."""
    limit = 10000
    return {
        "passed": res.passed,
        "status": res.status,
        "data_root": str(data_root),
        "metadata": str(res.metadata_path),
        "params": asdict(res.thresholds),
        "n_rows": res.n_rows,
        "n_failed_rows": res.n_failed_rows,
        "n_warning_rows": res.n_warning_rows,
        "rows_per_lang": res.rows_per_lang,
        "hours_decodable": round(res.hours_decodable, 6),
        "checks": {
            name: {
                "severity": "error" if name in res.hard_checks else "warning",
                "failed_rows": n,
                "description": CHECKS_BY_NAME[name].description,
            }
            for name, n in res.check_counts.items()
        },
        "failures": [asdict(f) for f in res.failures[:limit]],
        "failures_truncated": len(res.failures) > limit,
        "failures_csv": str(res.failures_path),
        "data_docs": str(res.data_docs_path) if res.data_docs_path else None,
        "summary": res.summary,
        "metadata_sha256": res.metadata_sha256,
        "duplicate_audio": res.duplicate_audio,
        "lang_aliases": res.lang_aliases,
        "rejected_rows": res.rejected_rows,
    }


def report_metrics(res: ValidationResult) -> dict[str, float]:
    """Numbers for a kfp Metrics artifact (the Kubeflow UI shows them as a table)."""
    m = {
        "passed": float(res.passed),
        "warned": float(res.status == "warned"),
        "rows": float(res.n_rows),
        "failed_rows": float(res.n_failed_rows),
        "warning_rows": float(res.n_warning_rows),
        "hours_decodable": round(res.hours_decodable, 4),
    }
    m.update({f"failed_{name}": float(n) for name, n in res.check_counts.items()})
    return m


def write_single_page(res: ValidationResult, dest: str | os.PathLike, max_rows: int = 500) -> Path:
    """One self-contained HTML file for a kfp HTML artifact.

    A kfp HTML artifact is one file (the UI renders the object at the artifact URI), while GX Data Docs is a
    folder of linked pages plus 4 MB of static fonts. So the artifact holds the one-screen summary, the
    failure table and the GX validation-result page inlined in an <iframe srcdoc> (its styles come from
    CDNs, as in the site itself); the full site stays in validate_dataset's out_dir.
    """
    fails = "".join(
        f"<tr class='{html.escape(f.severity)}'><td>{f.line}</td><td>{html.escape(f.file)}</td>"
        f"<td>{html.escape(f.check)}</td><td>{html.escape(f.severity)}</td><td>{html.escape(f.reason)}</td></tr>"
        for f in res.failures[:max_rows]
    )
    more = (
        f"<p>{len(res.failures) - max_rows} more in failures.csv</p>" if len(res.failures) > max_rows else ""
    )
    gx_page = res.data_docs_page.read_text(encoding="utf-8") if res.data_docs_page else ""
    frame = (
        f'<h2>great-expectations validation result</h2><iframe srcdoc="{html.escape(gx_page, quote=True)}" '
        "style='width:100%;height:1600px;border:1px solid #ccc'></iframe>"
        if gx_page
        else ""
    )
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Data validation {"passed" if res.passed else "FAILED"}</title>
<style>body{{font-family:sans-serif;margin:1em}} pre{{background:#f6f6f6;padding:1em}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}
tr.error td{{background:#fde8e8}} tr.warning td{{background:#fff7e0}}</style></head><body>
<h1>Data validation {"passed" if res.passed else "FAILED"}</h1>
<pre>{html.escape(res.summary)}</pre>
<h2>Failures</h2><table><tr><th>line</th><th>file</th><th>check</th><th>severity</th><th>reason</th></tr>
{fails}</table>{more}
{frame}
</body></html>
"""
    atomic_write_text(dest, page)
    return Path(dest)
