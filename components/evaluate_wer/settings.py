"""evaluate_wer's settings: one typed record (the lookaheads evaluated and the gate).

From it come its pipeline parameters with their UI help, params.yaml's `evaluate_wer` section, `--set
evaluate_wer.<name>=value` and `python -m components.evaluate_wer`'s flags. The component receives it as one
`settings` text and passes its fields to `core.run_step` (and on to `evaluate`) by name, so a new setting takes
two edits: a field here and the code that uses it. `att_context_size` is resolved by the preflight first (the
run's, else the recipe's); export serves at it and at `offline_att_context_size`.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.common.settings import knob


@dataclass
class EvaluateSettings:
    """evaluate_wer and the gate."""

    att_context_size: str | None = knob(
        None,
        "Deployed streaming latency [left,right], evaluated and served; empty = the recipe's ([56,3] on Nemotron)",
    )
    gate_policy: str = knob("", "Gate policy YAML path; empty = the shipped default_gate.yaml")
    gate_floor_override_reason: str = knob(
        "", "Audited reason to run a gate policy below policy/floor.yaml; empty = refuse it"
    )
    offline_att_context_size: str | None = knob(
        None, "Lookahead of offline evaluation and asr_offline; empty = the model's largest (most accurate)"
    )
