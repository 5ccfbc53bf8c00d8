"""The gate record: the evidence that lets a version become `champion`, bound to its checkpoint.

Why a record and not the `gate.passed` tag: a tag is one API call away from anyone who can reach MLflow. The
record is a JSON artifact logged with the version's checkpoint (`gate/gate_record.json`); its sha256 is the
version's `gate.record_sha256` tag, and it names the sha256 of the checkpoint, of the exact `evaluation.json`
bytes logged beside it, and of the gate policy (whose text it carries). Every move to `champion` (promote,
rollback, the serving sidecar) downloads the record and `evaluation/evaluation.json` again and checks all of it;
editing a tag, swapping an artifact or pointing the alias by hand breaks one of the hashes and is refused by
name.

The one audited way around a missing or failed gate is `promote --force --reason`: it writes an *override
record* (`gate/override.json`, sha256 in `gate.override_sha256`) bound to the same checkpoint, naming who
forced it and why. Serving and rollback accept a version with either a passing gate record or an override
record.

Pure functions here (build, check); the adapter (registry/mlflow_adapter.py) downloads and stores.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from components.common.evaluation import EvaluationSummary, strict_bool
from components.common.io import sha256_bytes

RECORD_ARTIFACT = "gate/gate_record.json"
OVERRIDE_ARTIFACT = "gate/override.json"
EVALUATION_ARTIFACT = "evaluation/evaluation.json"
RECORD_TAG = "gate.record_sha256"
OVERRIDE_TAG = "gate.override_sha256"
POLICY_TAG = "gate.policy_sha256"
SCHEMA = 1


class GateRecordError(PermissionError):
    """A version has no valid evidence for `champion`; the message names what is missing or does not match."""


def policy_text(policy: dict) -> str:
    """The canonical text of a policy (sorted JSON): what `policy_sha256` hashes, whatever YAML it came from."""
    return json.dumps(policy, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class GateRecord:
    """What the gate decided about one checkpoint, and on which evidence."""

    checkpoint_sha256: str
    evaluation_sha256: str
    policy_sha256: str
    policy_text: str
    passed: bool
    rules: list = field(default_factory=list)  # [{"rule", "passed", "reason"}]
    floor_sha256: str = ""
    floor_override_reason: str = ""
    pipeline_run_id: str = ""
    created_at: str = ""
    schema: int = SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def build_record(
    evaluation_text: str, checkpoint_sha256: str, pipeline_run_id: str = "", created_at: str = ""
) -> GateRecord:
    """The record for `evaluation_text` (the exact evaluation.json that is logged beside the checkpoint).

    Refuses, by field, an evaluation that cannot bind a verdict to this checkpoint: no or another
    `candidate_sha256`, no policy, or a `decision.passed` that is not a JSON boolean."""
    evaluation = EvaluationSummary.from_json(evaluation_text)  # SummaryError (a ValueError) names the field
    cand = evaluation.candidate_sha256
    if not cand:
        raise ValueError(
            "evaluation.json: no candidate_sha256, so its verdict cannot be bound to a checkpoint"
        )
    if cand != checkpoint_sha256:
        raise ValueError(
            f"evaluation.json: candidate_sha256 {cand} is not this checkpoint ({checkpoint_sha256})"
        )
    decision = evaluation.decision
    if decision is None:
        raise ValueError("evaluation.json: no decision object")
    passed = strict_bool(decision.passed, "evaluation.json: decision.passed")
    if evaluation.policy is None:
        raise ValueError("evaluation.json: no policy mapping (the gate's rules must be on the record)")
    text = policy_text(evaluation.policy)
    floor = evaluation.policy_floor
    rules = [{"rule": r.rule, "passed": r.passed, "reason": r.reason} for r in decision.rules]
    return GateRecord(
        checkpoint_sha256=checkpoint_sha256,
        evaluation_sha256=sha256_bytes(evaluation_text.encode("utf-8")),
        policy_sha256=sha256_bytes(text.encode("utf-8")),
        policy_text=text,
        passed=passed,
        rules=rules,
        floor_sha256=floor.sha256 if floor else "",
        floor_override_reason=floor.override_reason if floor else "",
        pipeline_run_id=pipeline_run_id,
        created_at=created_at,
    )


def check_record(
    where: str,
    record_bytes: bytes | None,
    record_tag: str | None,
    checkpoint_sha256: str,
    evaluation_bytes: bytes | None,
) -> GateRecord:
    """Verify a downloaded gate record against the version's tags and its logged evaluation.json.

    Returns the record (whose `passed` the caller then requires); raises GateRecordError naming the first
    thing that does not hold."""
    if not record_tag:
        raise GateRecordError(f"{where}: no gate record ({RECORD_TAG} tag missing)")
    if record_bytes is None:
        raise GateRecordError(f"{where}: gate record artifact {RECORD_ARTIFACT} missing")
    actual = sha256_bytes(record_bytes)
    if actual != record_tag:
        raise GateRecordError(f"{where}: gate record sha256 {actual} does not match its tag {record_tag}")
    try:
        doc = json.loads(record_bytes)
        record = GateRecord(**doc)
    except (ValueError, TypeError) as e:
        raise GateRecordError(f"{where}: gate record unreadable ({e})") from None
    if record.checkpoint_sha256 != checkpoint_sha256:
        raise GateRecordError(
            f"{where}: gate record is for checkpoint {record.checkpoint_sha256}, not {checkpoint_sha256}"
        )
    if sha256_bytes(record.policy_text.encode("utf-8")) != record.policy_sha256:
        raise GateRecordError(f"{where}: gate record's policy text does not match its policy_sha256")
    if evaluation_bytes is None:
        raise GateRecordError(f"{where}: {EVALUATION_ARTIFACT} missing")
    if sha256_bytes(evaluation_bytes) != record.evaluation_sha256:
        raise GateRecordError(
            f"{where}: {EVALUATION_ARTIFACT} does not match the gate record's evaluation_sha256"
        )
    try:
        evaluation = EvaluationSummary.from_json(evaluation_bytes)
        ev_passed = strict_bool(
            evaluation.decision.passed if evaluation.decision else None, "decision.passed"
        )
    except ValueError as e:
        raise GateRecordError(f"{where}: {EVALUATION_ARTIFACT} unreadable ({e})") from None
    if evaluation.candidate_sha256 != checkpoint_sha256:
        raise GateRecordError(f"{where}: {EVALUATION_ARTIFACT} evaluated another checkpoint")
    if ev_passed is not strict_bool(record.passed, "gate record passed"):
        raise GateRecordError(f"{where}: gate record and {EVALUATION_ARTIFACT} disagree on the decision")
    return record


@dataclass(frozen=True)
class OverrideRecord:
    """An audited `--force --reason`: who let which checkpoint through without a passing gate, and why."""

    checkpoint_sha256: str
    reason: str
    actor: str
    at: str
    version: str
    schema: int = SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def check_override(
    where: str, override_bytes: bytes | None, override_tag: str | None, checkpoint_sha256: str
) -> OverrideRecord:
    if not override_tag:
        raise GateRecordError(f"{where}: no override record ({OVERRIDE_TAG} tag missing)")
    if override_bytes is None or sha256_bytes(override_bytes) != override_tag:
        raise GateRecordError(f"{where}: override record missing or does not match its tag")
    try:
        record = OverrideRecord(**json.loads(override_bytes))
    except (ValueError, TypeError) as e:
        raise GateRecordError(f"{where}: override record unreadable ({e})") from None
    if record.checkpoint_sha256 != checkpoint_sha256 or not record.reason.strip():
        raise GateRecordError(f"{where}: override record is for another checkpoint or has no reason")
    return record


__all__ = [
    "EVALUATION_ARTIFACT",
    "OVERRIDE_ARTIFACT",
    "OVERRIDE_TAG",
    "POLICY_TAG",
    "RECORD_ARTIFACT",
    "RECORD_TAG",
    "GateRecord",
    "GateRecordError",
    "OverrideRecord",
    "build_record",
    "check_override",
    "check_record",
    "policy_text",
    "strict_bool",
]
