"""Two-step rollout: canary first, then full; rollback returns the canary share to 0.

The state is one small JSON file (a ConfigMap on the cluster, mounted into the gateway, which re-reads it):
which Triton version is `champion`, which is `challenger`, and the share of NEW sessions the gateway routes to
the challenger. Each action appends an audit entry (who, when, what, why) to the file's history.

    canary   VERSION --triton-version N --share S   MLflow `challenger` -> VERSION (its gate must have passed,
                                                     checked like promote), gateway share S to Triton version N
    full                                            `registry promote` the challenger (gate-checked, audited),
                                                     Triton version N becomes champion, share 0
    rollback --reason TEXT                          share 0 and, after `full`, `champion` re-pointed to the
                                                     previous one (`registry rollback`), in one audited action

`plan_*` are pure (tests/unit/test_rollout.py); `run_*` do the registry side and write the file atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from registry.history import utc_now

STAGES = ("stable", "canary")


@dataclass(frozen=True)
class RolloutState:
    """What the gateway routes by. Versions are Triton version numbers ("" = Triton's latest loaded)."""

    model: str = ""
    stage: str = "stable"  #: stable (champion only) or canary (challenger gets canary_share)
    champion_version: str = ""
    challenger_version: str = ""
    canary_share: float = 0.0
    registry_version: str = ""  #: the MLflow version under canary (for the `full` step)
    history: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage: {self.stage!r} is not one of {STAGES}")
        if not 0.0 <= self.canary_share <= 1.0:
            raise ValueError(f"canary_share: {self.canary_share} is not in [0, 1]")

    def to_json(self) -> str:
        return json.dumps(asdict(self) | {"history": list(self.history)}, indent=2, ensure_ascii=False) + "\n"


def load_state(path: str | os.PathLike) -> RolloutState:
    p = Path(path)
    if not p.exists():
        return RolloutState()
    try:
        raw = json.loads(p.read_text())
        if not isinstance(raw, dict):
            raise TypeError(f"expected a JSON object, got {type(raw).__name__}")
        raw["history"] = tuple(raw.get("history", ()))
        return RolloutState(**raw)
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{p}: not a rollout state file ({e})") from None


def save_state(path: str | os.PathLike, state: RolloutState) -> None:
    from components.common.io import atomic_write_text

    atomic_write_text(path, state.to_json())


def _audit(state: RolloutState, action: str, actor: str, reason: str, **extra: Any) -> tuple[dict, ...]:
    entry = {
        "action": action,
        "actor": actor,
        "at": utc_now(),
        "reason": reason,
        **extra,
    }
    return (*state.history, entry)


def plan_canary(
    state: RolloutState,
    model: str,
    registry_version: str,
    triton_version: str,
    share: float,
    actor: str,
    reason: str = "",
) -> RolloutState:
    """Step 1: route `share` of new sessions to `triton_version`; champion keeps serving the rest."""
    if state.stage == "canary":
        raise ValueError(
            f"a canary of v{state.registry_version} is already running: finish it (full) or roll it back first"
        )
    if not 0.0 < share <= 1.0:
        raise ValueError(f"--share: {share} must be in (0, 1]")
    if not str(triton_version).strip():
        raise ValueError("--triton-version: which Triton version serves the challenger (export_triton's N)")
    if str(triton_version) == state.champion_version:
        raise ValueError(f"Triton version {triton_version} is already the champion")
    return replace(
        state,
        model=model,
        stage="canary",
        challenger_version=str(triton_version),
        canary_share=float(share),
        registry_version=str(registry_version),
        history=_audit(
            state,
            "canary",
            actor,
            reason,
            registry_version=str(registry_version),
            triton_version=str(triton_version),
            share=float(share),
        ),
    )


def plan_full(state: RolloutState, actor: str, reason: str = "") -> RolloutState:
    """Step 2: the challenger becomes champion for every session."""
    if state.stage != "canary":
        raise ValueError("no canary is running: start one with `rollout canary` first")
    return replace(
        state,
        stage="stable",
        champion_version=state.challenger_version,
        challenger_version="",
        canary_share=0.0,
        history=_audit(
            state,
            "full",
            actor,
            reason,
            registry_version=state.registry_version,
            triton_version=state.challenger_version,
            replaced=state.champion_version,
        ),
    )


def plan_rollback(
    state: RolloutState, actor: str, reason: str, previous_triton_version: str = ""
) -> RolloutState:
    """Share back to 0. During a canary the champion never moved; after `full`, champion returns to
    `previous_triton_version` (the version the last `full` replaced, from the history, when not given)."""
    if not reason.strip():
        raise ValueError("rollback needs --reason: say why the release is withdrawn")
    if state.stage == "canary":
        champion = state.champion_version
    else:
        champion = previous_triton_version or _previous_champion(state)
    return replace(
        state,
        stage="stable",
        champion_version=champion,
        challenger_version="",
        canary_share=0.0,
        history=_audit(
            state,
            "rollback",
            actor,
            reason,
            from_stage=state.stage,
            withdrawn=state.challenger_version or state.champion_version,
            champion=champion,
        ),
    )


def _previous_champion(state: RolloutState) -> str:
    """The champion the last not-yet-undone `full` step replaced (each full entry records it)."""
    replaced: list[str] = []
    for h in state.history:
        if h["action"] == "full":
            replaced.append(h["replaced"])
        elif h["action"] == "rollback" and h.get("from_stage") == "stable" and replaced:
            replaced.pop()
    if not replaced:
        raise ValueError("nothing to roll back to: no `full` step in this rollout's history")
    return replaced[-1]


# ------------------------------------------------------------------ registry side (MLflow through Registry)


def run_canary(
    reg,
    model: str,
    version: str,
    state_path: str | os.PathLike,
    triton_version: str,
    share: float,
    actor: str,
    reason: str = "",
) -> RolloutState:
    """Gate-check `version` like promote does (its gate record, or an audited override, verified against the
    checkpoint's sha256), point `challenger` at it, then write the canary state."""
    from registry.gate_record import GateRecordError

    info = reg.get(model, version)
    try:
        reg.champion_evidence(info)
    except GateRecordError as e:
        raise PermissionError(f"{e} (a canary needs a passing gate record)") from None
    state = plan_canary(load_state(state_path), model, str(version), triton_version, share, actor, reason)
    reg.client.set_registered_model_alias(model, "challenger", str(version))
    save_state(state_path, state)
    return state


def run_full(reg, model: str, state_path: str | os.PathLike, actor: str, reason: str = "") -> RolloutState:
    """`promote` the canary's version (gate-checked, audit-tagged by the registry), then route everything."""
    state = load_state(state_path)
    new = plan_full(state, actor, reason)
    reg.promote(model, state.registry_version, reason=reason or "rollout full", actor=actor)
    save_state(state_path, new)
    return new


def run_rollback(
    reg,
    model: str,
    state_path: str | os.PathLike,
    actor: str,
    reason: str,
    rollback_fn: Callable | None = None,
    **rollback_kw: Any,
) -> RolloutState:
    """One action: share 0, and after `full` the registry's `champion` re-pointed (registry.rollback, or the
    caller's `rollback_fn` with rollback's signature, e.g. the CLI's rollback that also re-exports)."""
    state = load_state(state_path)
    new = plan_rollback(state, actor, reason)
    if state.stage == "stable":
        if rollback_fn is None:
            from registry.rollback import rollback as rollback_fn

        rollback_fn(reg, model, reason, actor=actor, **rollback_kw)
    save_state(state_path, new)
    return new


# ------------------------------------------------------------------ Triton: serve both versions


def serve_versions(triton_http: str, model: str, versions: list[str]) -> None:
    """(Re)load `model` with exactly `versions` loaded (Triton's load API with a config override), so the
    gateway can route between champion and challenger. Versions must exist in the model repository."""
    import tritonclient.http as th

    client = th.InferenceServerClient(triton_http.removeprefix("http://"))
    cfg = client.get_model_config(model)
    cfg["version_policy"] = {"specific": {"versions": sorted({int(v) for v in versions if str(v)})}}
    client.load_model(model, config=json.dumps(cfg))


# ------------------------------------------------------------------ CLI hook (`python -m registry rollout ...`)


def add_cli(sub) -> None:
    ro = sub.add_parser("rollout", help="two-step rollout: canary share through the gateway, then full")
    ro.add_argument("action", choices=("canary", "full", "rollback", "show"))
    ro.add_argument("version", nargs="?", default="", help="canary: the registry version to canary")
    ro.add_argument("--state", required=True, help="the rollout JSON the gateway follows (--rollout)")
    ro.add_argument("--triton-version", default="", help="canary: the Triton version serving it")
    ro.add_argument("--share", type=float, default=0.1, help="canary: share of new sessions (default 0.1)")
    ro.add_argument("--reason", default="")
    ro.add_argument(
        "--actor", default=None, help="who, for the audit (default: $ASR_REGISTRY_ACTOR or login)"
    )
    ro.add_argument(
        "--triton-repo", default=None, help="rollback after full: re-export the restored champion"
    )


def run_cli(reg, args, rollback_fn: Callable | None = None) -> str:
    from registry.mlflow_adapter import default_actor

    actor = args.actor or default_actor()
    if args.action == "show":
        return load_state(args.state).to_json().rstrip()
    if args.action == "canary":
        if not args.version:
            raise ValueError("rollout canary needs the registry VERSION")
        s = run_canary(
            reg, args.model, args.version, args.state, args.triton_version, args.share, actor, args.reason
        )
        return f"{args.model} v{s.registry_version}: canary at share {s.canary_share} on Triton v{s.challenger_version}"
    if args.action == "full":
        s = run_full(reg, args.model, args.state, actor, args.reason)
        return f"{args.model}: Triton v{s.champion_version} serves every session (champion)"
    kw = {"triton_repo": args.triton_repo} if args.triton_repo else {}
    s = run_rollback(reg, args.model, args.state, actor, args.reason, rollback_fn, **kw)
    return f"{args.model}: share 0, Triton v{s.champion_version or 'latest'} serves every session"
