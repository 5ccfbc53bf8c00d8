"""Rollback: move `champion` back to the previous champion and re-point serving to it.

The registry is the truth and serving follows it, so the order is: under the model's lock, pick the target
from the recorded history, download and verify its checkpoint, write the audit tags, move the alias, append
the history; then (lock released) export the verified checkpoint into the Triton model repository as a new,
newest version, which Triton's default version policy (latest 1) serves. If the export fails, the registry
already says what should serve and the error says how to re-run the export; nothing is half-written in the
Triton repository (export_model writes versions atomically).
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
class RollbackResult:
    model_name: str
    from_version: str
    to_version: str
    reason: str
    actor: str
    at: str
    triton_version: int | None = None
    triton_paths: dict[str, str] = field(default_factory=dict)


def rollback(
    reg: Registry,
    name: str,
    reason: str,
    to: str | None = None,
    actor: str | None = None,
    run_id: str = "",
    triton_repo: str | Path | None = None,
    att_context_size: str | None = None,
    keep_versions: int = 3,
    force: bool = False,
) -> RollbackResult:
    """Move `champion` of `name` back to the previous champion (or `to`), audit-tag both versions, and export
    the restored checkpoint into `triton_repo` (None: registry only).

    `att_context_size` defaults to the operating point the restored version was evaluated at (its
    `att_context_size` tag), so serving returns to exactly what was gated.

    The target must still hold evidence for `champion` (a passing gate record, or the override record of an
    audited force), re-verified here: a version that only ever became champion by a hand-set alias is refused
    by name. `force` (with the reason) is the audited override: it writes an override record first."""
    if not reason.strip():
        raise ValueError("rollback needs --reason: say why the current champion is being withdrawn")
    who = actor or default_actor()
    with tempfile.TemporaryDirectory(dir=_download_dir(triton_repo), prefix=".rollback-") as tmp:
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
        result = RollbackResult(name, current or "", target, reason.strip(), who, stamp)
        if triton_repo is not None:
            from components.export_triton.core import export_model

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
            try:
                r = export_model(
                    nemo,
                    triton_repo,
                    info.tags["checkpoint_sha256"],
                    model_info,
                    att,
                    keep_versions=keep_versions,
                )
            except Exception as e:
                raise RuntimeError(
                    f"champion is now {name} v{target}, but the Triton export failed ({e}); re-run it with "
                    f"`python -m components.export_triton --nemo models:/{name}@{CHAMPION} --repo {triton_repo}`"
                ) from e
            result.triton_version, result.triton_paths = r.version, r.paths
            reg.client.set_model_version_tag(name, target, "rollback.triton_version", str(r.version))
    return result


def _download_dir(triton_repo: str | Path | None) -> str | None:
    """Download next to the Triton repository (same filesystem: the export hardlinks instead of copying)."""
    if triton_repo is None:
        return None
    Path(triton_repo).mkdir(parents=True, exist_ok=True)
    return str(triton_repo)


def to_json(r: RollbackResult) -> str:
    return json.dumps(r.__dict__, indent=2)


__all__ = ["RollbackResult", "rollback", "to_json"]
