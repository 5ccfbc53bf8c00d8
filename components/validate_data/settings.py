"""validate_data's settings: one typed record, from which its pipeline parameters (with their UI help), its params.yaml
section `validate_data`, `--set validate_data.<name>=value` and the text its kfp component receives are derived
(components.common.settings; the pipeline lists the records in pipelines/settings.py).

The component passes the record's fields to `components.validate_data.core.run_step` by name, so a new setting takes two edits: a field here and
the code that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.common.settings import knob


@dataclass
class ValidateSettings:
    """validate_data: what a usable clip looks like."""

    min_duration: float = knob(0.3, "Shortest clip accepted by validation (s)")
    max_duration: float = knob(30.0, "Longest clip accepted by validation (s)")
    min_chars_per_second: float = knob(
        1.0, "Fewer transcript characters per second flags a misaligned transcript"
    )
    max_chars_per_second: float = knob(
        40.0, "More transcript characters per second flags a misaligned transcript"
    )
    max_failed_fraction: float = knob(
        0.0, "Share of rows allowed to fail row-level checks before the run stops"
    )
    duplicate_audio: str = knob(
        "reject",
        "Identical audio in several rows: reject (a hard error) | keep_first (the later copies dropped)",
        choices=("reject", "keep_first"),
    )
