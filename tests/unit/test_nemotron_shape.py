"""The Nemotron-shaped rehearsal base: the released checkpoint's shape, checked where it matters."""

from __future__ import annotations

import pytest

from components.finetune_asr import nemotron_shape as ns

TEXTS = ["Включи светлината в кухнята.", "Άναψε το φως στην κουζίνα.", "Enciende la luz en la cocina."]


@pytest.mark.slow  # instantiates the 638 M-parameter model (~30 s, ~3.5 GB), does not save it
def test_the_shape_is_nemotron_35s(tmp_path):
    tok = ns.build_tokenizer_of_size(TEXTS, tmp_path / "tok")
    model = ns.build_model(tok)
    counts = ns.parameter_breakdown(model)
    assert abs(counts["total"] - 600e6) / 600e6 < 0.10, ns.format_breakdown(counts)
    assert counts["encoder"] > 0.9 * counts["total"] and counts["prompt_kernel"] > 0
    assert type(model).__name__ == "EncDecRNNTBPEModelWithPrompt"
    assert model.tokenizer.vocab_size == 13_087 and model.joint.num_classes_with_blank == 13_088
    assert model.encoder.att_context_size_all == [[56, 13], [56, 6], [56, 3], [56, 1], [56, 0]]
    assert len(model.encoder.layers) == 24 and model.encoder.d_model == 1024
    assert model.joint.fuse_loss_wer and model.decoder.pred_rnn_layers == 2
    prompts = dict(model.cfg.model_defaults.prompt_dictionary)
    assert len(prompts) == 119 and prompts["en"] == prompts["en-US"] == 0 and prompts["auto"] == 101
    assert prompts["bg-BG"] == prompts["bg"] == 30 and prompts["el-GR"] == 21 and prompts["mt-MT"] == 102
    unk = model.tokenizer.tokenizer.unk_id()
    assert all(unk not in model.tokenizer.text_to_ids(t) for t in TEXTS)  # the rehearsal's text is spelled
