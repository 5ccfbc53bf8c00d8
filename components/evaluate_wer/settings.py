"""evaluate_wer's settings: one typed record, from which its pipeline parameters (with their UI help), its params.yaml
section `evaluate_wer`, `--set evaluate_wer.<name>=value` and the text its kfp component receives are derived
(components.common.settings; the pipeline lists the records in pipelines/settings.py).

The component passes the record's fields to `components.evaluate_wer.core.run_step` by name, so a new setting takes two edits: a field here and
the code that uses it.
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
