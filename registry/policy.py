"""Promotion policy: pure functions, no MLflow. The adapter asks; this module decides."""

from __future__ import annotations

from dataclasses import dataclass

CHALLENGER = "challenger"
CHAMPION = "champion"
BASE = "base"


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    forced: bool = False


def decide_promotion(gate_passed: bool | None, force: bool = False, reason: str = "") -> PromotionDecision:
    """`champion` moves only on a passing gate; an override needs both --force and a written reason."""
    if gate_passed:
        return PromotionDecision(True, "gate passed")
    if force:
        if not reason.strip():
            raise ValueError("--force needs --reason: an override of the gate must say why")
        return PromotionDecision(True, f"forced: {reason.strip()}", forced=True)
    why = "no gate decision recorded" if gate_passed is None else "gate failed"
    return PromotionDecision(False, f"{why}; refusing to promote (use --force --reason to override)")
