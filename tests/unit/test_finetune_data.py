"""finetune_asr without training: which rows a fine-tune trains on (data.py), the recipes and their knobs, the
tokenizer. The training tests (real NeMo) are in test_finetune_core.py; the corpus helper is shared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.common.manifest import ManifestError
from components.finetune_asr import core
from tests.unit.test_finetune_core import TEXTS, _make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return _make_corpus(tmp_path_factory.mktemp("corpus"))


def test_select_rows_takes_all_target_rows_and_seeded_replay(corpus):
    manifest = corpus / "train.jsonl"
    rows = core.select_rows(manifest, ["bg-BG"], replay_langs=["el-GR", "es-ES"], replay_per_lang=3, seed=1)
    assert core.count_langs(rows) == {"bg-BG": 8, "el-GR": 3, "es-ES": 3}
    assert all(Path(r["audio_filepath"]).is_absolute() and Path(r["audio_filepath"]).is_file() for r in rows)
    assert all(r["lang"] == r["target_lang"] for r in rows)
    again = core.select_rows(manifest, ["bg-BG"], replay_langs=["el-GR", "es-ES"], replay_per_lang=3, seed=1)
    other = core.select_rows(manifest, ["bg-BG"], replay_langs=["el-GR", "es-ES"], replay_per_lang=3, seed=2)
    assert [r["id"] for r in again] == [r["id"] for r in rows]
    assert [r["id"] for r in other] != [r["id"] for r in rows]


def test_select_rows_errors_name_the_problem(corpus, tmp_path):
    manifest = corpus / "train.jsonl"
    with pytest.raises(ValueError, match=r"no rows with lang 'fr-FR'.*bg-BG"):
        core.select_rows(manifest, ["fr-FR"])
    with pytest.raises(ValueError, match=r"'xx-XX'.*prompt_dictionary"):
        core.select_rows(manifest, ["xx-XX"], prompt_dictionary={"bg-BG": 30})
    with pytest.raises(ValueError, match=r"for replay"):
        core.select_rows(manifest, ["bg-BG"], replay_langs=["de-DE"])
    broken = tmp_path / "train.jsonl"
    row = json.loads(manifest.read_text(encoding="utf-8").splitlines()[0])
    row["audio_filepath"] = "audio/missing.wav"
    broken.write_text(json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="audio file not found.*missing.wav"):
        core.select_rows(broken, [row["lang"]])


def test_both_recipes_give_train_optim_trainer_sections():
    from components.finetune_asr.settings import load_recipe

    r = load_recipe("nemotron35")
    assert (
        r.train_ds["use_lhotse"]
        and r.train_ds["manifest_filepath"] is None
        and r.trainer["max_steps"] is None
    )
    assert r.optim["sched"]["name"] == "NoamAnnealing" and r.optim["lr"] == 0.1
    assert r.trainer["precision"] == "bf16-mixed"
    assert r.trainer["limit_train_batches"] == 1.0 and r.trainer["strategy"] == "ddp"
    r = load_recipe("tiny-demo")
    assert r.trainer["accelerator"] == "cpu" and r.optim["lr"] == 2e-3
    tiny_model = load_recipe(str(core.TINY_CONFIG))  # the bootstrap's own sections (model YAML)
    assert tiny_model.optim["lr"] == 3e-3 and tiny_model.deploy_att_context_size is None


def test_tokenizer_is_cased_covers_all_scripts_and_refuses_overwrite(tmp_path):
    pytest.importorskip("nemo.collections.asr")
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import SentencePieceTokenizer

    from components.finetune_asr.tokenizer import build_tokenizer, unknown_token_rows

    texts = [t for ts in TEXTS.values() for t in ts] * 5
    out = build_tokenizer(texts, tmp_path / "tok", vocab_size=64)
    assert {p.name for p in out.iterdir()} >= {"tokenizer.model", "tokenizer.vocab", "vocab.txt"}
    tok = SentencePieceTokenizer(str(out / "tokenizer.model"))
    for t in texts[:6]:
        assert tok.ids_to_text(tok.text_to_ids(t)) == t  # cased, punctuated, every script round-trips
    assert unknown_token_rows(tok, texts) == []
    assert unknown_token_rows(tok, ["Ωμέγα 日本"]) == ["Ωμέγα 日本"]
    with pytest.raises(FileExistsError):
        build_tokenizer(texts, out)


def test_replay_ratio_sets_the_share_of_replay_rows(corpus):
    rows = core.select_rows(
        corpus / "train.jsonl", ["bg-BG"], replay_langs=["el-GR", "es-ES"], replay_ratio=0.5
    )
    counts = core.count_langs(rows)
    assert counts["bg-BG"] == 8 and counts["el-GR"] == 4 and counts["es-ES"] == 4
    with pytest.raises(ValueError, match="replay_ratio"):
        core.select_rows(corpus / "train.jsonl", ["bg-BG"], replay_langs=["el-GR"], replay_ratio=1.0)


def test_recipe_knobs_reach_the_nemo_config(corpus):
    from omegaconf import OmegaConf

    from components.finetune_asr.settings import FinetuneSettings, apply

    optim = apply(FinetuneSettings(recipe="nemotron35", scheduler="cosine")).optim
    assert optim["sched"]["name"] == "CosineAnnealing" and "d_model" not in optim["sched"]
    assert (
        apply(FinetuneSettings(recipe="nemotron35", scheduler="noam")).optim["sched"]["name"]
        == "NoamAnnealing"
    )
    with pytest.raises(ValueError, match="scheduler"):
        FinetuneSettings(scheduler="linear")
    cfg = OmegaConf.create({"sample_rate": 16000, "model_defaults": {"prompt_dictionary": {"bg-BG": 30}}})
    r = apply(FinetuneSettings(recipe="nemotron35", batch_duration=120))
    ds = core.build_train_ds(r.train_ds, corpus / "train.jsonl", cfg, 0)
    assert (
        ds["batch_duration"] == 120 and ds["batch_size"] is None and ds["prompt_dictionary"] == {"bg-BG": 30}
    )
    ds = core.build_train_ds(
        apply(FinetuneSettings(recipe="nemotron35", batch_size=16)).train_ds, corpus / "train.jsonl", cfg, 0
    )
    assert ds["batch_size"] == 16 and "batch_duration" not in ds
    from components.common.settings import parse_att_context_size

    assert parse_att_context_size("[56,1]") == [56, 1] and parse_att_context_size("") is None
    with pytest.raises(ValueError, match="att_context_size"):
        parse_att_context_size("[56]")
