"""The release gate: a pure function from measured metrics and a YAML policy to a decision with reasons.

Thresholds are data (policy/default_gate.yaml, or the pipeline's `gate_policy` parameter), so a team can
tighten the gate without touching code. Every rule reports its value, threshold and outcome, so a rejected
candidate says exactly why. WER values are fractions: 0.10 = 10 absolute points.

`metrics` is the evaluation summary (evaluation.json without `decision`):
    {"target_langs": [...], "replay_langs": [...],
     "metrics": {"base"|"candidate": {"streaming"|"offline": {lang: {"wer_norm": ..., ...}}}},
     "delta_ci": {lang: {"delta": ..., "low": ..., "high": ...}}}
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

DEFAULT_POLICY_PATH = Path(__file__).parent / "policy" / "default_gate.yaml"
KNOWN_RULES = (
    "target_improves",
    "target_ceiling",
    "target_ci_below_zero",
    "replay_max_regression",
    "streaming_offline_gap",
)


@dataclass
class RuleResult:
    rule: str
    value: float | None
    threshold: float | None
    passed: bool
    reason: str


@dataclass
class Decision:
    passed: bool
    rules: list[RuleResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "rules": [asdict(r) for r in self.rules]}

    def summary(self) -> str:
        failed = [r.reason for r in self.rules if not r.passed]
        return "PASSED" if self.passed else "FAILED: " + "; ".join(failed)


class PolicyError(ValueError):
    """The gate policy is malformed; the message names the key."""


def load_policy(text_or_path: str | os.PathLike | None = None) -> dict:
    """Policy from YAML text, a YAML file path, or (None / "") the default file."""
    if text_or_path is None or (isinstance(text_or_path, str) and not text_or_path.strip()):
        text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
        where = str(DEFAULT_POLICY_PATH)
    elif isinstance(text_or_path, os.PathLike) or (
        isinstance(text_or_path, str) and "\n" not in text_or_path and text_or_path.endswith((".yaml", ".yml"))
    ):
        text = Path(text_or_path).read_text(encoding="utf-8")
        where = str(text_or_path)
    else:
        text, where = str(text_or_path), "gate_policy"
    try:
        policy = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PolicyError(f"{where}: not valid YAML ({e})") from None
    validate_policy(policy, where)
    return policy


def validate_policy(policy: object, where: str = "policy") -> None:
    if not isinstance(policy, dict) or not isinstance(policy.get("rules"), dict):
        raise PolicyError(f"{where}: expected a mapping with a 'rules' mapping")
    for name, cfg in policy["rules"].items():
        if name not in KNOWN_RULES:
            raise PolicyError(f"{where}: unknown rule '{name}' (known: {', '.join(KNOWN_RULES)})")
        if cfg is not None and not isinstance(cfg, dict):
            raise PolicyError(f"{where}: rules.{name} must be a mapping or null")
    mode = policy.get("mode", "streaming")
    if mode not in ("streaming", "offline"):
        raise PolicyError(f"{where}: mode must be 'streaming' or 'offline', got {mode!r}")
    metric = policy.get("metric", "wer_norm")
    if metric not in ("wer_norm", "wer_raw", "cer"):
        raise PolicyError(f"{where}: metric must be wer_norm, wer_raw or cer, got {metric!r}")


def _get(metrics: dict, model: str, mode: str, lang: str, metric: str) -> float | None:
    try:
        return float(metrics["metrics"][model][mode][lang][metric])
    except (KeyError, TypeError):
        return None


def decide(metrics: dict, policy: dict) -> Decision:
    """Apply every enabled rule of `policy` to `metrics`; the candidate passes only if all rules pass.

    A rule whose inputs are missing (no test utterances for a language) fails: the gate never passes what it
    could not measure. A policy with no enabled rule fails too.
    """
    validate_policy(policy)
    mode = policy.get("mode", "streaming")
    metric = policy.get("metric", "wer_norm")
    targets = list(metrics.get("target_langs") or [])
    replays = list(metrics.get("replay_langs") or [])
    rules: list[RuleResult] = []
    cfgs = {k: (v or {}) for k, v in policy["rules"].items() if v is None or v.get("enabled", True)}

    def missing(rule: str, lang: str, thr: float | None) -> RuleResult:
        return RuleResult(f"{rule}[{lang}]", None, thr, False, f"{rule}[{lang}]: no {mode} {metric} measured")

    if "target_improves" in cfgs:
        thr = float(cfgs["target_improves"].get("min_improvement", 0.0))
        for lang in targets:
            b, c = _get(metrics, "base", mode, lang, metric), _get(metrics, "candidate", mode, lang, metric)
            if b is None or c is None:
                rules.append(missing("target_improves", lang, thr))
                continue
            imp = b - c
            ok = imp > thr
            rules.append(RuleResult(f"target_improves[{lang}]", imp, thr, ok,
                                    f"{lang} {mode} {metric}: base {b:.4f} -> candidate {c:.4f} "
                                    f"(improvement {imp:+.4f}, must be > {thr:.4f})"))
    if "target_ceiling" in cfgs:
        thr = float(cfgs["target_ceiling"].get("max_wer", 1.0))
        for lang in targets:
            c = _get(metrics, "candidate", mode, lang, metric)
            if c is None:
                rules.append(missing("target_ceiling", lang, thr))
                continue
            rules.append(RuleResult(f"target_ceiling[{lang}]", c, thr, c < thr,
                                    f"{lang} candidate {mode} {metric} {c:.4f} (must be < {thr:.4f})"))
    if "target_ci_below_zero" in cfgs:
        for lang in targets:
            ci = (metrics.get("delta_ci") or {}).get(lang)
            if not ci:
                rules.append(missing("target_ci_below_zero", lang, 0.0))
                continue
            hi = float(ci["high"])
            rules.append(RuleResult(f"target_ci_below_zero[{lang}]", hi, 0.0, hi < 0.0,
                                    f"{lang} 95% CI of candidate-base delta [{ci['low']:+.4f}, {hi:+.4f}] "
                                    f"(upper end must be < 0)"))
    if "replay_max_regression" in cfgs:
        thr = float(cfgs["replay_max_regression"].get("max_increase", 0.0))
        for lang in replays:
            b, c = _get(metrics, "base", mode, lang, metric), _get(metrics, "candidate", mode, lang, metric)
            if b is None or c is None:
                rules.append(missing("replay_max_regression", lang, thr))
                continue
            inc = c - b
            rules.append(RuleResult(f"replay_max_regression[{lang}]", inc, thr, inc <= thr,
                                    f"{lang} {mode} {metric}: base {b:.4f} -> candidate {c:.4f} "
                                    f"(change {inc:+.4f}, must be <= {thr:+.4f})"))
    if "streaming_offline_gap" in cfgs:
        thr = float(cfgs["streaming_offline_gap"].get("max_gap", 0.15))
        for lang in targets + [lg for lg in replays if lg not in targets]:
            s = _get(metrics, "candidate", "streaming", lang, metric)
            o = _get(metrics, "candidate", "offline", lang, metric)
            if s is None or o is None:
                rules.append(missing("streaming_offline_gap", lang, thr))
                continue
            gap = abs(s - o)
            rules.append(RuleResult(f"streaming_offline_gap[{lang}]", gap, thr, gap <= thr,
                                    f"{lang} candidate streaming {s:.4f} vs offline {o:.4f} "
                                    f"(|gap| {gap:.4f}, must be <= {thr:.4f})"))
    if not rules:
        rules.append(RuleResult("policy", None, None, False, "no rule was applied (empty policy or no languages)"))
    return Decision(passed=all(r.passed for r in rules), rules=rules)
