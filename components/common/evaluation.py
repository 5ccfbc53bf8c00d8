"""The evaluation summary (evaluation.json) as one typed record.

evaluate_wer writes it; the gate (components/evaluate_wer/gate.py), the gate record (registry/gate_record.py),
register_model's model card and the registry's checks read it. `to_dict()` is evaluation.json key for key (the
same JSON evaluate_wer always wrote: a round-trip keeps it byte for byte), `from_dict` / `from_json` refuse a
malformed summary naming the field. WER values are fractions (0.10 = 10 points).

Shape (every number per model x mode x language, "overall" included):
    metrics[model][mode][lang]   a Scores dict (components/common/wer.py: wer_raw, wer_norm, cer, n_utts, ...)
                                 model: base | candidate | champion; mode: streaming | offline
    delta_ci[lang]               DeltaCI: candidate - base, paired bootstrap, in the gate's mode and metric
    champion_delta_ci[lang]      candidate - current champion (absent when there is no champion)
    latency_curve                LatencyPoint per lookahead the candidate supports, lowest latency first
    decision, policy, policy_floor   the gate's verdict, the policy it applied, the floor check (absent until decided)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from typing import Any

ScoreTable = dict[str, dict[str, dict[str, dict[str, Any]]]]  # model -> mode -> lang -> Scores dict


class SummaryError(ValueError):
    """evaluation.json does not have the summary's shape; the message names the field."""


def strict_bool(value: object, where: str) -> bool:
    """A JSON boolean, nothing else: the string "false" is truthy in Python and must never pass a gate."""
    if isinstance(value, bool):
        return value
    raise ValueError(f"{where} must be a JSON boolean (true/false), got {value!r}")


def _build(cls, d: Any, where: str):
    """`cls(**d)` refusing a non-object, unknown fields and missing required fields, by name."""
    if not isinstance(d, dict):
        raise SummaryError(f"evaluation.json: {where} must be an object, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise SummaryError(f"evaluation.json: unknown field(s) {unknown} in {where}")
    missing = [
        n
        for n, f in fields.items()
        if n not in d and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise SummaryError(f"evaluation.json: {where} lacks {missing}")
    return cls(**d)


@dataclass
class DeltaCI:
    """Paired-bootstrap confidence interval of a WER difference (components.common.wer.BootstrapCI + what)."""

    delta: float
    low: float
    high: float
    n_utts: int | None = None
    n_resamples: int | None = None
    seed: int | None = None
    confidence: float = 0.95
    mode: str = "streaming"
    metric: str = "wer_norm"


@dataclass
class RuleResult:
    """One gate rule's outcome: its value, threshold and the reason a person reads."""

    rule: str
    value: float | None = None
    threshold: float | None = None
    passed: bool = False
    reason: str = ""


@dataclass
class Decision:
    passed: bool
    rules: list[RuleResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "rules": [asdict(r) for r in self.rules]}

    def summary(self) -> str:
        failed = [r.reason for r in self.rules if not r.passed]
        return "PASSED" if self.passed else "FAILED: " + "; ".join(failed)

    @classmethod
    def from_dict(cls, d: Any, where: str = "decision") -> Decision:
        dec = _build(cls, d, where)
        if not isinstance(dec.rules, list):
            raise SummaryError(f"evaluation.json: {where}.rules must be a list")
        dec.rules = [_build(RuleResult, r, f"{where}.rules[{i}]") for i, r in enumerate(dec.rules)]
        return dec


@dataclass
class LatencyPoint:
    """The candidate streamed at one lookahead: its latency and per-language scores."""

    att_context_size: list[int]
    latency_ms: float
    deployed: bool
    metrics: dict[str, dict[str, Any]]  # lang -> {wer_norm, wer_raw, cer, n_utts}


@dataclass
class PolicyFloor:
    """gate.enforce_floor's record: the floor file, its sha256, the violations and the audited override."""

    path: str
    sha256: str
    violations: list[str] = field(default_factory=list)
    override_reason: str = ""


@dataclass
class EvaluationSummary:
    base_model: str = ""
    candidate_model: str = ""
    champion_model: str | None = None
    base_sha256: str = ""
    candidate_sha256: str = ""
    champion_sha256: str | None = None
    manifest: str = ""
    att_context_size: list[int] | None = None
    offline_att_context_size: list[int] | None = None
    stream_piece_s: float | None = None
    target_langs: list[str] = field(default_factory=list)
    replay_langs: list[str] = field(default_factory=list)
    n_utts: int = 0
    audio_seconds: float = 0.0
    stream_batch: int = 1
    metrics: ScoreTable = field(default_factory=dict)
    delta_ci: dict[str, DeltaCI] = field(default_factory=dict)
    champion_delta_ci: dict[str, DeltaCI] | None = None  # absent from the JSON when there is no champion
    latency_curve: list[LatencyPoint] = field(default_factory=list)
    timings_s: dict[str, dict[str, float]] = field(default_factory=dict)
    decision: Decision | None = None  # the three below are absent until the gate has decided
    policy: dict | None = None
    policy_floor: PolicyFloor | None = None

    _OPTIONAL = ("champion_delta_ci", "decision", "policy", "policy_floor")

    # ---------------------------------------------------------------------------------------- reading
    @classmethod
    def from_dict(cls, d: Any) -> EvaluationSummary:
        s = _build(cls, d, "the summary")
        if not isinstance(s.metrics, dict):
            raise SummaryError("evaluation.json: metrics must be an object (model -> mode -> language)")
        s.delta_ci = _cis(s.delta_ci, "delta_ci")
        if s.champion_delta_ci is not None:
            s.champion_delta_ci = _cis(s.champion_delta_ci, "champion_delta_ci")
        if not isinstance(s.latency_curve, list):
            raise SummaryError("evaluation.json: latency_curve must be a list")
        s.latency_curve = [
            _build(LatencyPoint, p, f"latency_curve[{i}]") for i, p in enumerate(s.latency_curve)
        ]
        if s.decision is not None:
            s.decision = Decision.from_dict(s.decision)
        if s.policy is not None and not isinstance(s.policy, dict):
            raise SummaryError("evaluation.json: policy must be a mapping (the gate's rules)")
        if s.policy_floor is not None:
            s.policy_floor = _build(PolicyFloor, s.policy_floor, "policy_floor")
        return s

    @classmethod
    def from_json(cls, text: str | bytes) -> EvaluationSummary:
        try:
            d = json.loads(text)
        except ValueError as e:
            raise SummaryError(f"evaluation.json: not JSON ({e})") from None
        if not isinstance(d, dict):
            raise SummaryError("evaluation.json: expected a JSON object")
        return cls.from_dict(d)

    # ---------------------------------------------------------------------------------------- writing
    def to_dict(self) -> dict:
        out: dict = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in self._OPTIONAL and v is None:
                continue
            if f.name in ("delta_ci", "champion_delta_ci"):
                v = {lg: asdict(ci) for lg, ci in v.items()}
            elif f.name == "latency_curve":
                v = [asdict(p) for p in v]
            elif f.name == "decision":
                v = v.to_dict()
            elif f.name == "policy_floor":
                v = asdict(v)
            out[f.name] = v
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    # ---------------------------------------------------------------------------------------- lookups
    def score(self, model: str, mode: str, lang: str, metric: str = "wer_norm") -> float | None:
        """One number of `metrics`, or None when it was not measured."""
        try:
            return float(self.metrics[model][mode][lang][metric])
        except (KeyError, TypeError, ValueError):
            return None


def _cis(value: Any, where: str) -> dict[str, DeltaCI]:
    if not isinstance(value, dict):
        raise SummaryError(f"evaluation.json: {where} must be an object (language -> interval)")
    return {lg: _build(DeltaCI, ci, f"{where}[{lg}]") for lg, ci in value.items()}


__all__ = [
    "Decision",
    "DeltaCI",
    "EvaluationSummary",
    "LatencyPoint",
    "PolicyFloor",
    "RuleResult",
    "ScoreTable",
    "SummaryError",
    "strict_bool",
]
