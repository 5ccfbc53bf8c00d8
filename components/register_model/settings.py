"""register_model's settings: one typed record, from which its pipeline parameters (with their UI help), its params.yaml
section `register_model`, `--set register_model.<name>=value` and the text its kfp component receives are derived
(components.common.settings; the pipeline lists the records in pipelines/settings.py).

The component passes the record's fields to `components.register_model.core.register_candidate` by name, so a new setting takes two edits: a field here and
the code that uses it.
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
