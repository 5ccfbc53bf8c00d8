"""export_triton's settings: one typed record.

From it come its pipeline parameters with their UI help, params.yaml's `export_triton` section and `--set
export_triton.<name>=value`. The component receives it as one `settings` text and passes its fields to
`core.export_step` by name, so a new setting takes two edits: a field here and the code that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.common.settings import knob


@dataclass
class ExportSettings:
    """export_triton."""

    triton_repo: str = knob(
        "/mnt/models/triton_repo", "Triton model repository folder written by the export step"
    )
