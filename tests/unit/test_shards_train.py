"""Issue 16: a corpus in tarred shards trains through lhotse (bucketed by duration), and the same rows give the
same batch content (audio samples, tokens, language prompt) as the plain manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from components.build_manifest.tarred import write_tarred_split
from components.common.manifest import read_manifest
from components.finetune_asr import core
from components.finetune_asr.shards import tarred_train, use_shards
from tests.unit.test_finetune_core import _ft, base_model, corpus  # noqa: F401  (module fixtures)

pytestmark = pytest.mark.slow  # real NeMo model and training


@pytest.fixture(scope="module")
def sharded(corpus, tmp_path_factory) -> Path:  # noqa: F811
    """The corpus with build_manifest's tarred train split (3 shards) listed in its summary.json."""
    d = tmp_path_factory.mktemp("sharded") / "manifests"
    shutil.copytree(corpus, d)
    rows = read_manifest(d / "train.jsonl", absolute=False)
    info = write_tarred_split(d, "train", rows, 3, seed=0)
    (d / "summary.json").write_text(json.dumps({"tarred": {"train": info}}))
    return d


def _samples(model, ds: dict) -> list[tuple]:
    """(audio sha256, tokens, prompt index) of every sample of one pass of the training dataloader."""
    from omegaconf import DictConfig

    out = []
    for audio, audio_lens, tokens, token_lens, prompts in model._setup_dataloader_from_config(DictConfig(ds)):
        for i in range(audio.shape[0]):
            pcm = np.round(audio[i, : audio_lens[i]].numpy() * 32768).astype(np.int16)
            out.append(
                (
                    hashlib.sha256(pcm.tobytes()).hexdigest(),
                    tuple(tokens[i, : token_lens[i]].tolist()),
                    int(prompts[i]),
                )
            )
    return sorted(out)


def test_same_rows_give_the_same_batch_content_from_shards_and_plain(base_model, sharded, tmp_path):  # noqa: F811
    from nemo.collections.asr.models import ASRModel

    from components.finetune_asr.settings import FinetuneSettings, apply

    model = ASRModel.restore_from(base_model, map_location="cpu")
    recipe = apply(FinetuneSettings(target_langs="el-GR,es-ES"))
    rows = core.select_rows(sharded / "train.jsonl", ["el-GR", "es-ES"])  # 16 of the 24 rows: a selection
    core.write_manifest(tmp_path / "train_manifest.jsonl", rows)
    plain = core.build_train_ds(recipe.train_ds, tmp_path / "train_manifest.jsonl", model.cfg, seed=0)
    plain.update(batch_size=4, force_finite=True)
    tarred = use_shards(plain, rows, sharded / "train.jsonl", tmp_path, seed=0)
    assert (
        tarred["use_bucketing"]
        and tarred["skip_missing_manifest_entries"]
        and not tarred["concurrent_bucketing"]
    )
    assert tarred["tarred_audio_filepaths"].endswith("tarred/train/audio__OP_0..2_CL_.tar")
    a, b = _samples(model, plain), _samples(model, tarred)
    assert len(a) == 16 and a == b  # the 8 bg-BG clips in the tars are read past, not trained on
    prompts = dict(model.cfg.model_defaults.prompt_dictionary)
    assert {p for *_, p in b} == {prompts["el-GR"], prompts["es-ES"]}  # the language prompt is preserved


def test_a_few_steps_train_from_shards(base_model, sharded, tmp_path):  # noqa: F811
    res = _ft(
        base_model,
        sharded / "train.jsonl",
        tmp_path / "out",
        ["es-ES"],
        max_steps=2,
        batch_size=4,
        checkpoint_every=0,
        threads=2,
    )
    assert res.steps_done == 2 and np.isfinite(res.final_loss)
    ds = res.resolved_config["train_ds"]
    assert ds["tarred_audio_filepaths"].endswith("audio__OP_0..2_CL_.tar") and ds["use_bucketing"] is True
    assert ds["manifest_filepath"].endswith("sharded/manifest__OP_0..2_CL_.json")


def test_no_shards_or_rows_outside_them_train_from_the_plain_manifest(corpus, sharded, tmp_path):  # noqa: F811
    assert tarred_train(corpus / "train.jsonl") is None
    ds = {"manifest_filepath": "m.jsonl", "is_tarred": False}
    assert use_shards(ds, [{"id": "elsewhere", "text": "x"}], sharded / "train.jsonl", tmp_path, 0) == ds
