"""register_model's settings: one typed record.

From it come its pipeline parameters with their UI help, params.yaml's `register_model` section and `--set
register_model.<name>=value`. The component receives it as one `settings` text and passes its fields to
`core.register_candidate` by name, so a new setting takes two edits: a field here and the code that uses it.
`model_name` is shared: evaluation compares with its champion, promotion and export use it too.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.common.settings import knob


@dataclass
class RegisterSettings:
    """register_model / promote."""

    model_name: str = knob(
        "nemotron-asr-finetuned", "Registered model name in MLflow (Triton serves its champion)"
    )
