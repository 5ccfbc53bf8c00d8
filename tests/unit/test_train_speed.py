"""The training loop skips work whose result is discarded (components/finetune_asr/trainer.py) and learns the same.

Runs the real tiny NeMo model for a few steps twice from the same seed: once as shipped, once with the skip
undone (NeMo's training-batch WER decode, here at every step). Loss curve and weights must be bit-identical.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_finetune_core import _make_corpus

STEPS = 3


def _train(corpus: Path, config: Path, work: Path):
    from components.finetune_asr import bootstrap, core

    rows = core.select_rows(
        corpus / "train.jsonl",
        ["el-GR", "es-ES"],
        seed=0,
        prompt_dictionary=bootstrap._prompt_dictionary(config),
    )
    texts = [r["text"] for r in core._read(corpus / "train.jsonl")]
    work.mkdir()
    model, outcome, _ = bootstrap._train_from_scratch(config, rows, texts, work, STEPS, 0, 256, None, None, 2)
    return model, outcome


@pytest.mark.slow  # real NeMo: two 3-step trainings of the tiny model
def test_the_discarded_training_wer_decode_is_skipped_and_changes_no_weight(tmp_path, monkeypatch):
    pytest.importorskip("nemo.collections.asr")
    import torch
    from nemo.collections.asr.metrics.wer import WER

    from components.finetune_asr import core
    from components.finetune_asr import trainer as wiring

    corpus = _make_corpus(tmp_path / "corpus")
    # The demo's config, but NeMo would decode a training WER at every step (the demo: every 10th).
    config = tmp_path / "tiny.yaml"
    text = Path(core.TINY_CONFIG).read_text(encoding="utf-8")
    assert "log_every_n_steps: 10" in text
    config.write_text(text.replace("log_every_n_steps: 10", "log_every_n_steps: 1"), encoding="utf-8")

    decodes = []
    update = WER.update
    monkeypatch.setattr(WER, "update", lambda self, *a, **k: (decodes.append(1), update(self, *a, **k))[1])

    fast, fast_out = _train(corpus, config, tmp_path / "fast")
    assert decodes == []  # the WER nobody logs is not computed

    monkeypatch.setattr(wiring, "_discarded_work_off", lambda max_steps: {})
    plain, plain_out = _train(corpus, config, tmp_path / "plain")
    assert len(decodes) == STEPS  # the reference did the work the speed-ups skip

    assert fast_out.steps_done == plain_out.steps_done == STEPS
    assert fast_out.loss_curve == plain_out.loss_curve
    a, b = fast.state_dict(), plain.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
