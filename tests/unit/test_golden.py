"""components.evaluate_wer.golden: stored clips + texts, hashes checked, parity pass/fail by text."""

from __future__ import annotations

import json

import numpy as np
import pytest

from components.evaluate_wer.golden import check_parity, load_golden_set, pick, write_golden_set


def _fake_asr(audios, langs):  # a deterministic "model": the text depends on the audio and the language
    return [f"{lg}:{float(np.abs(a).sum()):.3f}" for a, lg in zip(audios, langs, strict=True)]


@pytest.fixture
def golden(tmp_path):
    rng = np.random.RandomState(0)
    audios = [(0.1 * rng.randn(8000)).astype(np.float32) for _ in range(5)]
    langs = ["bg-BG", "el-GR", "bg-BG", "bg-BG", "el-GR"]
    return write_golden_set(tmp_path, audios, langs, _fake_asr, [56, 1], per_lang=2)


def test_pick_covers_every_language():
    assert pick(["a", "b", "a", "a", "b", "c"], 2) == [0, 1, 2, 4, 5]


def test_parity_passes_on_the_same_model_and_fails_on_another(golden):
    items, _ = load_golden_set(golden)
    assert [i.lang for i in items] == ["bg-BG", "el-GR", "bg-BG", "el-GR"]
    same = check_parity(golden, lambda a, lg: _fake_asr([a], [lg])[0])
    assert same.passed and same.checked == 4 and not same.mismatches
    other = check_parity(golden, lambda a, lg: _fake_asr([a * 1.01], [lg])[0])
    assert (
        not other.passed
        and len(other.mismatches) == 4
        and other.mismatches[0]["expected"] != other.mismatches[0]["got"]
    )


def test_tampering_is_refused_by_name(golden):
    (golden / "0.wav").write_bytes((golden / "1.wav").read_bytes())
    with pytest.raises(ValueError, match=r"0\.wav: sha256 differs"):
        load_golden_set(golden)


def test_edited_text_is_refused(golden):
    doc = json.loads((golden / "golden.json").read_text())
    doc["items"][0]["text"] = "whatever the new model says"
    (golden / "golden.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="set_sha256"):
        load_golden_set(golden)
    (golden / "golden.json").write_text("{}")
    with pytest.raises(ValueError, match="not a golden set"):
        load_golden_set(golden)
