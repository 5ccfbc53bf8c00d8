"""One implementation per concept: the steps share one rule (components.common) instead of their own copies."""

from __future__ import annotations

import pytest

from components.common.settings import SettingsError, parse_att_context_size

GOOD = [
    ("[56,1]", [56, 1]),
    (" [56, 13] ", [56, 13]),
    ("56,0", [56, 0]),
    ("(70, 6)", [70, 6]),
    ([70, 6], [70, 6]),
    ((56, 1), [56, 1]),
    ("", None),
    (None, None),
    ([], None),
    ("[-1,0]", [-1, 0]),
]
BAD = ["[56]", "[56,1,2]", "fast", "[56,x1]", [56, -1], "[56,-1]", [-2, 1], "[56, 1.5]", [56.0, 1], [True, 1]]


@pytest.mark.parametrize(("value", "expected"), GOOD)
def test_parse_att_context_size_one_rule(value, expected):
    from components.evaluate_wer import core as evaluate_core
    from components.export_triton import core as export_core

    assert parse_att_context_size(value) == expected
    assert evaluate_core.parse_att_context_size(value) == expected
    assert export_core.parse_att_context_size(value) == expected


@pytest.mark.parametrize("value", BAD)
def test_parse_att_context_size_refuses_the_same_values_everywhere(value):
    from components.evaluate_wer import core as evaluate_core
    from components.export_triton import core as export_core

    with pytest.raises(SettingsError, match="att_context_size") as common:
        parse_att_context_size(value)
    with pytest.raises(ValueError, match="att_context_size") as evaluate:
        evaluate_core.parse_att_context_size(value)
    with pytest.raises(export_core.ExportError) as export:  # the step's own error type, the same message
        export_core.parse_att_context_size(value)
    assert str(common.value) == str(evaluate.value) == str(export.value)
