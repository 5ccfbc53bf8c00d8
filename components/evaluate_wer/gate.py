"""The release gate: a pure function from measured metrics and a YAML policy to a decision with reasons.

Thresholds are data (policy/default_gate.yaml, or the pipeline's `gate_policy` parameter), so a team can
tighten the gate without touching code, but not loosen it below the organisation's floor (policy/floor.yaml):
a policy below it is refused by name unless an audited override reason is given (`enforce_floor`). Every rule
reports its value, threshold and outcome, so a rejected candidate says exactly why. WER values are fractions:
0.10 = 10 absolute points.

`decide` reads the evaluation summary (components/common/evaluation.py: EvaluationSummary, the typed record
of evaluation.json, before its `decision`): target/replay languages, `metrics`, `delta_ci` (candidate - base)
and `champion_delta_ci` (candidate - current champion; None when there is no champion).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from components.common.evaluation import Decision, EvaluationSummary, RuleResult
from components.common.io import sha256_file

DEFAULT_POLICY_PATH = Path(__file__).parent / "policy" / "default_gate.yaml"
FLOOR_PATH = Path(__file__).parent / "policy" / "floor.yaml"
KNOWN_RULES = (
    "target_improves",
    "target_ceiling",
    "target_ci_below_zero",
    "replay_max_regression",
    "champion_not_worse",
    "streaming_offline_gap",
)
# Each rule's threshold, its value when a policy leaves it out, and which way is stricter ("min": a larger
# value is stricter; "max": a smaller value is stricter). decide() and the floor check both read this.
THRESHOLDS: dict[str, tuple[str, float, str]] = {
    "target_improves": ("min_improvement", 0.0, "min"),
    "target_ceiling": ("max_wer", 1.0, "max"),
    "replay_max_regression": ("max_increase", 0.0, "max"),
    "champion_not_worse": ("margin", 0.0, "max"),
    "streaming_offline_gap": ("max_gap", 0.15, "max"),
}
EPS = 1e-9  # "at most 5 points" accepts exactly 5 points whatever the float rounding of (c - b)


class PolicyError(ValueError):
    """The gate policy is malformed; the message names the key."""


def load_policy(text_or_path: str | os.PathLike | None = None) -> dict:
    """Policy from YAML text, a YAML file path, or (None / "") the default file."""
    if text_or_path is None or (isinstance(text_or_path, str) and not text_or_path.strip()):
        text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
        where = str(DEFAULT_POLICY_PATH)
    elif isinstance(text_or_path, os.PathLike) or (
        isinstance(text_or_path, str)
        and "\n" not in text_or_path
        and text_or_path.endswith((".yaml", ".yml"))
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


def _enabled(policy: dict) -> dict[str, dict]:
    return {
        k: (v or {}) for k, v in policy["rules"].items() if v is None or v.get("enabled", True) is not False
    }


def _threshold(cfg: dict, rule: str) -> float:
    key, default, _ = THRESHOLDS[rule]
    return float(cfg.get(key, default))


def load_floor(path: str | os.PathLike | None = None) -> dict:
    """The organisation's minimum policy (policy/floor.yaml): same format as a policy."""
    return load_policy(Path(path) if path else FLOOR_PATH)


def floor_violations(policy: dict, floor: dict) -> list[str]:
    """Where `policy` is looser than `floor`, one sentence each: a floor rule missing or disabled, a threshold
    on the loose side of the floor's, or another mode/metric than the floor's."""
    out: list[str] = []
    for key in ("mode", "metric"):
        if key in floor and policy.get(key, {"mode": "streaming", "metric": "wer_norm"}[key]) != floor[key]:
            out.append(f"{key} {policy.get(key)!r} is not the floor's {floor[key]!r}")
    have = _enabled(policy)
    for rule, fcfg in _enabled(floor).items():
        if rule not in policy["rules"]:
            out.append(f"rules.{rule} missing (the floor requires it)")
            continue
        if rule not in have:
            out.append(f"rules.{rule} disabled (the floor requires it)")
            continue
        if rule in THRESHOLDS:
            key, _, way = THRESHOLDS[rule]
            pv, fv = _threshold(have[rule], rule), _threshold(fcfg, rule)
            if (way == "min" and pv < fv) or (way == "max" and pv > fv):
                out.append(f"rules.{rule}.{key} {pv:g} is looser than the floor's {fv:g}")
    return out


def enforce_floor(
    policy: dict, floor_path: str | os.PathLike | None = None, override_reason: str = ""
) -> dict:
    """Refuse a policy below the floor unless `override_reason` says why (the audited override, recorded in
    evaluation.json and on the registry version). Returns {"path", "sha256", "violations", "override_reason"}."""
    path = Path(floor_path) if floor_path else FLOOR_PATH
    floor = load_floor(path)
    violations = floor_violations(policy, floor)
    if violations and not override_reason.strip():
        raise PolicyError(
            f"gate policy is below the policy floor ({path.name}): "
            + "; ".join(violations)
            + " (an override needs an audited reason: floor_override_reason)"
        )
    return {
        "path": path.name,
        "sha256": sha256_file(path),
        "violations": violations,
        "override_reason": override_reason.strip() if violations else "",
    }


def decide(summary: EvaluationSummary | Mapping, policy: dict) -> Decision:
    """Apply every enabled rule of `policy` to the evaluation `summary` (the record, or its dict form); the
    candidate passes only if all rules pass.

    A rule whose inputs are missing (no test utterances for a language) fails: the gate never passes what it
    could not measure. A policy with no enabled rule fails too.
    """
    validate_policy(policy)
    s = summary if isinstance(summary, EvaluationSummary) else EvaluationSummary.from_dict(dict(summary))
    mode, metric = policy.get("mode", "streaming"), policy.get("metric", "wer_norm")
    targets, replays = list(s.target_langs or []), list(s.replay_langs or [])
    cfgs = _enabled(policy)
    rules: list[RuleResult] = []
    for name, (langs_of, threshold_of, judge) in _RULES.items():
        if name not in cfgs:
            continue
        thr = threshold_of(cfgs[name], name)
        for lang in langs_of(targets, replays):
            result = judge(s, lang, thr, mode, metric)
            rules.append(
                result
                if result is not None
                else RuleResult(
                    f"{name}[{lang}]", None, thr, False, f"{name}[{lang}]: no {mode} {metric} measured"
                )
            )
    if not rules:
        rules.append(
            RuleResult("policy", None, None, False, "no rule was applied (empty policy or no languages)")
        )
    return Decision(passed=all(r.passed for r in rules), rules=rules)


# Each rule: the languages it judges, its threshold, and the judgement for one language (None: its inputs
# were not measured, which fails the rule).
def _target_improves(s, lang, thr, mode, metric):
    b, c = s.score("base", mode, lang, metric), s.score("candidate", mode, lang, metric)
    if b is None or c is None:
        return None
    imp = b - c
    return RuleResult(
        f"target_improves[{lang}]",
        imp,
        thr,
        imp > thr,
        f"{lang} {mode} {metric}: base {b:.4f} -> candidate {c:.4f} "
        f"(improvement {imp:+.4f}, must be > {thr:.4f})",
    )


def _target_ceiling(s, lang, thr, mode, metric):
    c = s.score("candidate", mode, lang, metric)
    if c is None:
        return None
    return RuleResult(
        f"target_ceiling[{lang}]",
        c,
        thr,
        c < thr,
        f"{lang} candidate {mode} {metric} {c:.4f} (must be < {thr:.4f})",
    )


def _target_ci_below_zero(s, lang, thr, mode, metric):
    ci = s.delta_ci.get(lang)
    if not ci:
        return None
    hi = float(ci.high)
    return RuleResult(
        f"target_ci_below_zero[{lang}]",
        hi,
        0.0,
        hi < 0.0,
        f"{lang} 95% CI of candidate-base delta [{ci.low:+.4f}, {hi:+.4f}] (upper end must be < 0)",
    )


def _replay_max_regression(s, lang, thr, mode, metric):
    b, c = s.score("base", mode, lang, metric), s.score("candidate", mode, lang, metric)
    if b is None or c is None:
        return None
    inc = c - b
    return RuleResult(
        f"replay_max_regression[{lang}]",
        inc,
        thr,
        inc <= thr + EPS,
        f"{lang} {mode} {metric}: base {b:.4f} -> candidate {c:.4f} "
        f"(change {inc:+.4f}, must be <= {thr:+.4f})",
    )


def _champion_not_worse(s, lang, thr, mode, metric):
    champ_cis = s.champion_delta_ci
    ref, cis = ("champion", champ_cis) if champ_cis is not None else ("base", s.delta_ci)
    ci = cis.get(lang)
    if not ci:
        return None
    lo = float(ci.low)
    what = "vs the current champion" if ref == "champion" else "no champion yet: compared with the base"
    return RuleResult(
        f"champion_not_worse[{lang}]",
        lo,
        thr,
        lo <= thr + EPS,
        f"{lang} candidate-{ref} {mode} {metric} 95% CI [{lo:+.4f}, {float(ci.high):+.4f}] "
        f"({what}; lower end must be <= {thr:+.4f}, i.e. not worse beyond the CI)",
    )


def _streaming_offline_gap(s, lang, thr, mode, metric):
    st = s.score("candidate", "streaming", lang, metric)
    o = s.score("candidate", "offline", lang, metric)
    if st is None or o is None:
        return None
    gap = abs(st - o)
    return RuleResult(
        f"streaming_offline_gap[{lang}]",
        gap,
        thr,
        gap <= thr,
        f"{lang} candidate streaming {st:.4f} vs offline {o:.4f} (|gap| {gap:.4f}, must be <= {thr:.4f})",
    )


def _targets(targets, replays):
    return targets


_RULES = {  # in the order the decision lists them
    "target_improves": (_targets, _threshold, _target_improves),
    "target_ceiling": (_targets, _threshold, _target_ceiling),
    "target_ci_below_zero": (_targets, lambda cfg, name: 0.0, _target_ci_below_zero),
    "replay_max_regression": (lambda t, r: r, _threshold, _replay_max_regression),
    # replay languages are bounded against the base by replay_max_regression
    "champion_not_worse": (_targets, _threshold, _champion_not_worse),
    "streaming_offline_gap": (
        lambda t, r: t + [lg for lg in r if lg not in t],
        _threshold,
        _streaming_offline_gap,
    ),
}
