"""Rollback: move `champion` back to the previous champion; return what serving must export to follow it.

The registry is the truth and serving follows it, so the order is: under the model's lock, pick the target
from the recorded history, download and verify its checkpoint, write the audit tags, move the alias, append
the history. The registry does not export (it imports no step): `rollback` returns the verified checkpoint
as a `Restore`, and the caller (`rollback_and_export` in the `asr-registry` CLI, or a pipeline) exports it
into the Triton model repository as a new, newest version, which Triton's default version policy (latest 1)
serves, then calls `record_export`. If the export fails, the registry already says what should serve and the
error says how to re-run the export; nothing is half-written in the Triton repository (export_model writes
versions atomically).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from registry import history
from registry.gate_record import GateRecordError
from registry.history import Entry
from registry.mlflow_adapter import Registry, default_actor, utc_now
from registry.policy import CHAMPION


@dataclass
class Restore:
    """The restored champion's verified checkpoint and how to export it (export_triton.core.export_model's
    arguments): serving follows the registry by exporting exactly this."""

    nemo: Path
    sha256: str
    model_info: dict
    att_context_size: str | None


@dataclass
class RollbackResult:
    model_name: str
    from_version: str
    to_version: str
    reason: str
    actor: str
    at: str
    triton_version: int | None = None
    triton_paths: dict[str, str] = field(default_factory=dict)
    restore: Restore | None = field(default=None, repr=False)


def rollback(
    reg: Registry,
    name: str,
    reason: str,
    to: str | None = None,
    actor: str | None = None,
    run_id: str = "",
    download_dir: str | Path | None = None,
    att_context_size: str | None = None,
    force: bool = False,
) -> RollbackResult:
    """Move `champion` of `name` back to the previous champion (or `to`) and audit-tag both versions. With a
    `download_dir`, the restored checkpoint stays there (verified) and `result.restore` says how to export it;
    without one it is downloaded to a temporary directory only to verify it.

    `att_context_size` defaults to the operating point the restored version was evaluated at (its
    `att_context_size` tag), so serving returns to exactly what was gated.

    The target must still hold evidence for `champion` (a passing gate record, or the override record of an
    audited force), re-verified here: a version that only ever became champion by a hand-set alias is refused
    by name. `force` (with the reason) is the audited override: it writes an override record first."""
    if not reason.strip():
        raise ValueError("rollback needs --reason: say why the current champion is being withdrawn")
    who = actor or default_actor()
    with tempfile.TemporaryDirectory(prefix=".rollback-") as scratch:
        tmp = str(download_dir) if download_dir is not None else scratch
        with reg.lock(name) as lock:
            entries, current = reg.reconcile(name)
            known = frozenset(v.version for v in reg.versions(name) if v.tags.get("promoted_at"))
            target = history.rollback_target(entries, current, to, also_champions=known)
            info = reg.get(name, target)
            try:
                evidence = reg.champion_evidence(info)
            except GateRecordError:
                if not force:
                    raise
                evidence = "forced"
            if not info.tags.get("checkpoint_sha256"):
                raise ValueError(f"{name} v{target}: no checkpoint_sha256 tag; cannot verify its artifacts")
            nemo = reg.download(info, tmp)  # raises unless the artifacts exist and match the sha256
            if evidence == "forced":
                reg.write_override(info, reason, who)
                info = reg.get(name, target)
            stamp = utc_now()
            _move_and_tag(reg, name, lock, entries, target, current, reason, who, run_id, evidence, stamp)
        result = RollbackResult(name, current or "", target, reason.strip(), who, stamp)
        if download_dir is not None:
            result.restore = _restore(info, nemo, name, target, current, reason, who, stamp, att_context_size)
    return result


def _move_and_tag(
    reg: Registry,
    name: str,
    lock,
    entries,
    target: str,
    current: str | None,
    reason: str,
    who: str,
    run_id: str,
    evidence: str,
    stamp: str,
) -> None:
    """Move `champion` to `target` (a history entry), then audit-tag the restored and the demoted version."""
    restored = {
        "rollback.restored_at": stamp,
        "rollback.restored_by": who,
        "rollback.reason": reason.strip(),
        "rollback.from_version": current or "",
        "rollback.evidence": evidence,
    }
    demoted = {
        "rollback.demoted_at": stamp,
        "rollback.demoted_by": who,
        "rollback.demoted_reason": reason.strip(),
        "rollback.demoted_to": target,
    }
    if run_id:
        restored["rollback.run_id"] = demoted["rollback.run_id"] = run_id
    entry = Entry(
        target,
        "rollback",
        stamp,
        who,
        current or "",
        evidence == "forced",
        run_id,
        reason.strip()[: Entry.WHY_CHARS],
    )
    reg.move_champion(name, lock, entries, entry)
    for k, v in restored.items():  # after the move: audit tags describe what happened
        reg.client.set_model_version_tag(name, target, k, v)
    for k, v in demoted.items():
        reg.client.set_model_version_tag(name, current, k, v)


def _restore(
    info,
    nemo,
    name: str,
    target: str,
    current: str | None,
    reason: str,
    who: str,
    stamp: str,
    att_context_size: str | None,
) -> Restore:
    """What the caller exports: the verified checkpoint, at the lookahead the version was evaluated at."""
    att = (
        att_context_size
        if att_context_size is not None
        else info.tags.get("att_context_size") or info.tags.get("params.att_context_size") or None
    )
    model_info = {
        "name": name,
        "version": target,
        "alias": CHAMPION,
        "tags": info.tags,
        "rollback": {"from_version": current, "reason": reason.strip(), "by": who, "at": stamp},
    }
    return Restore(Path(nemo), info.tags["checkpoint_sha256"], model_info, att)


def record_export(
    reg: Registry, r: RollbackResult, triton_version: int, paths: dict[str, str]
) -> RollbackResult:
    """After the caller exported `r.restore`: note the Triton version on the result and the restored version."""
    r.triton_version, r.triton_paths = triton_version, dict(paths)
    reg.client.set_model_version_tag(
        r.model_name, r.to_version, "rollback.triton_version", str(triton_version)
    )
    return r


def export_failed_message(r: RollbackResult, triton_repo: str | Path, error: Exception) -> str:
    return (
        f"champion is now {r.model_name} v{r.to_version}, but the Triton export failed ({error}); re-run it with "
        f"`python -m components.export_triton --nemo models:/{r.model_name}@{CHAMPION} --repo {triton_repo}`"
    )


def to_json(r: RollbackResult) -> str:
    return json.dumps({k: v for k, v in r.__dict__.items() if k != "restore"}, indent=2)


__all__ = ["Restore", "RollbackResult", "export_failed_message", "record_export", "rollback", "to_json"]
