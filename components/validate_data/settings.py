"""validate_data's settings: one typed record (what a usable clip looks like).

From it come its pipeline parameters with their UI help, params.yaml's `validate_data` section, `--set
validate_data.<name>=value` and `python -m components.validate_data`'s flags (components.common.settings;
pipelines/settings.py lists every step's record). The component receives it as one `settings` text and passes
its fields to `core.run_step` (and on to `validate_dataset`) by name, so a new setting takes two edits: a field
here and the code that uses it.
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
