"""Champion evidence: what entitles a registry version to hold `champion`, and the audited override.

A version may become champion only with evidence (docs/REGISTRY.md): a passing gate record bound to its checkpoint
(registry/gate_record.py), or an override record written by `promote --force --reason`; and only with its
checkpoint downloadable and matching its sha256 (`verify`). These are methods of `Registry`
(registry/mlflow_adapter.py), which mixes this class in: they use its `client`, `download` and `_artifact_bytes`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from registry import gate_record as gr
from registry.history import utc_now

if TYPE_CHECKING:
    from registry.mlflow_adapter import VersionInfo


class ChampionEvidence:
    """verify, gate_record, passing_gate_record, champion_evidence and write_override of `Registry`."""

    def verify(self, info: VersionInfo) -> None:
        """Download the version's checkpoint and check it against its recorded sha256 (no champion without
        its artifacts). Raises FileNotFoundError / ValueError."""
        if not info.tags.get("checkpoint_sha256"):
            raise ValueError(
                f"{info.name} v{info.version}: no checkpoint_sha256 tag; cannot verify its artifacts"
            )
        with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
            try:
                self.download(info, tmp)
            except ValueError:
                raise
            except Exception as e:  # missing run / artifact: surfaced with the version it belongs to
                raise FileNotFoundError(f"{info.name} v{info.version}: artifacts not found ({e})") from e

    def gate_record(self, info: VersionInfo) -> gr.GateRecord:
        """The version's gate record, downloaded and verified against its tags and evaluation.json (not yet
        against the checkpoint file: `verify`/`download` do that). Raises GateRecordError by name."""
        where = f"{info.name} v{info.version}"
        tag = info.tags.get(gr.RECORD_TAG)
        return gr.check_record(
            where,
            self._artifact_bytes(info, gr.RECORD_ARTIFACT) if tag else None,
            tag,
            info.tags.get("checkpoint_sha256", ""),
            self._artifact_bytes(info, gr.EVALUATION_ARTIFACT) if tag else None,
        )

    def passing_gate_record(self, info: VersionInfo) -> gr.GateRecord:
        record = self.gate_record(info)
        if not record.passed:
            failed = "; ".join(str(r.get("rule")) for r in record.rules if not r.get("passed")) or "no rule"
            raise gr.GateRecordError(
                f"{info.name} v{info.version}: gate FAILED per its gate record ({failed}); refusing "
                "(an override needs --force --reason)"
            )
        return record

    def champion_evidence(self, info: VersionInfo) -> str:
        """What entitles `info` to be champion: 'gate' (a passing gate record) or 'override' (an audited force).
        Raises GateRecordError naming why neither holds (the gate's reason first)."""
        try:
            self.passing_gate_record(info)
            return "gate"
        except gr.GateRecordError as gate_error:
            if not info.tags.get(gr.OVERRIDE_TAG):
                raise
            try:
                gr.check_override(
                    f"{info.name} v{info.version}",
                    self._artifact_bytes(info, gr.OVERRIDE_ARTIFACT),
                    info.tags.get(gr.OVERRIDE_TAG),
                    info.tags.get("checkpoint_sha256", ""),
                )
            except gr.GateRecordError as e:
                raise gr.GateRecordError(f"{gate_error}; {e}") from None
            return "override"

    def write_override(self, info: VersionInfo, reason: str, actor: str) -> gr.OverrideRecord:
        """The audited force: an override record bound to the checkpoint, logged with the version's artifacts."""
        if not reason.strip():
            raise ValueError("--force needs --reason: an override of the gate must say why")
        record = gr.OverrideRecord(
            info.tags.get("checkpoint_sha256", ""), reason.strip(), actor, utc_now(), info.version
        )
        text = record.to_json()
        with tempfile.TemporaryDirectory(prefix="override-") as tmp:
            p = Path(tmp) / Path(gr.OVERRIDE_ARTIFACT).name
            p.write_text(text, encoding="utf-8")
            self.client.log_artifact(info.run_id, str(p), str(Path(gr.OVERRIDE_ARTIFACT).parent))
        self.client.set_model_version_tag(
            info.name, info.version, gr.OVERRIDE_TAG, gr.sha256_bytes(text.encode("utf-8"))
        )
        return record
