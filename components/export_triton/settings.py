"""export_triton's settings: one typed record, from which its pipeline parameters (with their UI help), its params.yaml
section `export_triton`, `--set export_triton.<name>=value` and the text its kfp component receives are derived
(components.common.settings; the pipeline lists the records in pipelines/settings.py).

The component passes the record's fields to `components.export_triton.core.export_step` by name, so a new setting takes two edits: a field here and
the code that uses it.
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
