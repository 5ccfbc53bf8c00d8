"""finetune_asr: row selection, tokenizer, bootstrap cache, fine-tune artifacts and checkpoint resume.

The training tests run the real NeMo model (tiny, a few steps on ~16 synthetic sine clips): they check the
plumbing (artifacts, sha256, restore, resume), not learning — that needs the espeak corpus and minutes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from components.common.io import sha256_file
from components.common.manifest import ManifestError
from components.finetune_asr import core

TEXTS = {
    "el-GR": ["Άναψε το φως στην κουζίνα.", "Κλείσε την πόρτα, παρακαλώ."],
    "es-ES": ["Enciende la luz en la cocina.", "Cierra la puerta, por favor."],
    "bg-BG": ["Включи светлината в кухнята.", "Затвори вратата, моля."],
}


def _make_corpus(root: Path, per_lang: int = 8) -> Path:
    """A manifest directory like build_manifest's: relative audio paths, 16 kHz mono PCM16 clips."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for lang, texts in TEXTS.items():
        for i in range(per_lang):
            dur = 0.5 + 0.1 * (i % 3)
            n = int(16000 * dur)
            x = 0.1 * np.sin(2 * np.pi * (180 + 30 * i) * np.arange(n) / 16000) + 0.01 * rng.standard_normal(
                n
            )
            rel = f"audio/{lang}_{i}.wav"
            sf.write(root / rel, x.astype("float32"), 16000, subtype="PCM_16")
            lines.append(
                {
                    "audio_filepath": rel,
                    "duration": dur,
                    "text": texts[i % 2],
                    "lang": lang,
                    "target_lang": lang,
                    "speaker": f"{lang}-s{i % 2}",
                    "id": f"{lang}_{i}",
                }
            )
    (root / "train.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), encoding="utf-8"
    )
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return _make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def base_model(corpus, tmp_path_factory) -> str:
    pytest.importorskip("nemo.collections.asr")
    from components.finetune_asr.bootstrap import bootstrap_base_model

    return bootstrap_base_model(
        corpus / "train.jsonl", tmp_path_factory.mktemp("cache"), ["el-GR", "es-ES"], max_steps=2, threads=2
    )


# ------------------------------------------------------------------------------------------- pure functions
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


def test_both_configs_give_train_optim_trainer_sections():
    ds, optim, trainer = core.load_train_sections(core.NEMOTRON_CONFIG)
    assert ds["use_lhotse"] and ds["manifest_filepath"] is None and trainer["max_steps"] is None
    assert (
        optim["sched"]["name"] == "NoamAnnealing"
        and optim["lr"] == 0.1
        and trainer["precision"] == "bf16-mixed"
    )
    assert trainer["limit_train_batches"] == 1.0 and trainer["strategy"] == "ddp"
    ds, optim, trainer = core.load_train_sections(core.TINY_CONFIG)
    assert isinstance(ds["prompt_dictionary"], dict) and trainer["accelerator"] == "cpu"
    tuned = core.build_optim(optim, lr=2e-3, warmup_steps=20, scheduler=None)
    assert tuned["lr"] == 2e-3 and tuned["sched"]["warmup_steps"] == 20 and optim["lr"] == 3e-3  # no aliasing


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


def test_lattice_kl_is_zero_for_equal_lattices_and_ignores_padding():
    import torch

    from components.finetune_asr.distill import lattice_kl

    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 5, 4, 7, generator=g).log_softmax(-1)
    student = torch.randn(2, 5, 4, 7, generator=g).log_softmax(-1)
    enc_lens, label_lens = torch.tensor([5, 3]), torch.tensor([3, 1])
    assert torch.allclose(lattice_kl(teacher, teacher, enc_lens, label_lens), torch.zeros(2), atol=1e-6)
    kl = lattice_kl(student, teacher, enc_lens, label_lens)
    assert (kl > 0).all()
    # sample 1 by hand: frames 0-2, label positions 0-1, summed KL / 3 frames
    p = teacher[1, :3, :2].exp()
    by_hand = (p * (teacher[1, :3, :2] - student[1, :3, :2])).sum() / 3
    assert torch.isclose(kl[1], by_hand)
    # nodes past a sample's lengths (batch padding) do not count
    noisy = student.clone()
    noisy[1, 3:] = 0.0
    noisy[1, :, 2:] = 0.0
    assert torch.isclose(lattice_kl(noisy, teacher, enc_lens, label_lens)[1], kl[1])


def test_fixed_att_context_restores_the_encoder_even_on_error():
    from types import SimpleNamespace

    from components.finetune_asr.distill import fixed_att_context

    enc = SimpleNamespace(att_context_size_all=[[56, 13], [56, 1]], att_context_size=[56, 13])
    with pytest.raises(RuntimeError), fixed_att_context(enc, [56, 1]):
        assert enc.att_context_size_all == [[56, 1]] and enc.att_context_size == [56, 1]
        raise RuntimeError("boom")
    assert enc.att_context_size_all == [[56, 13], [56, 1]] and enc.att_context_size == [56, 13]


# ------------------------------------------------------------------------------------------ real training
@pytest.mark.slow  # real NeMo training: ~15-30 s alone on 2 cores, minutes on a busy box
def test_bootstrap_writes_model_and_sidecar_and_is_cached(base_model, corpus):
    from components.finetune_asr.bootstrap import bootstrap_base_model

    side = json.loads(Path(base_model).with_name("model.json").read_text(encoding="utf-8"))
    assert side["sha256"] == sha256_file(base_model)
    assert side["languages"] == ["el-GR", "es-ES"] and side["train_steps"] == 2
    assert side["model_class"].endswith("EncDecRNNTBPEModelWithPrompt")
    assert side["prompt_dictionary"]["bg-BG"] == 30
    mtime = Path(base_model).stat().st_mtime_ns
    again = bootstrap_base_model(
        corpus / "train.jsonl", Path(base_model).parents[1], ["el-GR", "es-ES"], max_steps=2, threads=2
    )
    assert again == base_model and Path(again).stat().st_mtime_ns == mtime  # served from the cache


@pytest.mark.slow  # real NeMo training: ~15-30 s alone on 2 cores, minutes on a busy box
def test_finetune_writes_restorable_model_with_matching_sidecar(base_model, corpus, tmp_path):
    from nemo.collections.asr.models import ASRModel

    res = core.finetune(
        base_model,
        corpus / "train.jsonl",
        tmp_path / "out",
        ["bg-BG"],
        replay_langs=["el-GR"],
        replay_per_lang=4,
        max_steps=3,
        batch_size=8,
        checkpoint_every=0,
        threads=2,
    )
    assert res.steps_done == 3 and [s for s, _ in res.train_loss_curve] == [1, 2, 3]
    assert np.isfinite(res.final_loss) and res.rows_per_lang == {"bg-BG": 8, "el-GR": 4}
    side = json.loads(Path(res.sidecar_path).read_text(encoding="utf-8"))
    assert side["sha256"] == sha256_file(res.model_path)
    assert side["base_model_sha256"] == sha256_file(base_model) and side["base_model_uri"] == str(base_model)
    assert side["languages"] == ["bg-BG", "el-GR"] and side["train_steps"] == 3
    assert [56, 1] in side["att_context_sizes"]
    restored = ASRModel.restore_from(res.model_path, map_location="cpu")
    base = ASRModel.restore_from(base_model, map_location="cpu")
    assert type(restored).__name__ == "EncDecRNNTBPEModelWithPrompt"
    assert restored.tokenizer.vocab_size == base.tokenizer.vocab_size  # the base tokenizer is kept
    assert side["hyperparameters"]["replay_distill"] == 1.0  # the default: el rows distilled from the base
    # KL >= 0 up to float rounding (student == teacher at step 1 gives values around 0)
    assert [s for s, _ in res.replay_kd_curve] == [1, 2, 3] and all(v > -1e-3 for _, v in res.replay_kd_curve)
    assert restored.state_dict().keys() == base.state_dict().keys()  # the teacher is not saved
    changed = [
        k
        for k, v in restored.state_dict().items()
        if not np.allclose(v.numpy(), base.state_dict()[k].numpy())
    ]
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("joint.") for k in changed)


@pytest.mark.slow  # real NeMo training: ~15-30 s alone on 2 cores, minutes on a busy box
def test_resume_from_checkpoint_continues_the_step_count(base_model, corpus, tmp_path):
    kw = dict(replay_langs=[], max_steps=4, batch_size=8, checkpoint_every=2, threads=2)
    first = core.finetune(base_model, corpus / "train.jsonl", tmp_path / "out", ["bg-BG"], **kw)
    assert first.steps_done == 4 and first.resumed_from_step == 0
    assert (tmp_path / "out" / "work" / "checkpoints" / "last.ckpt").is_file()
    second = core.finetune(
        base_model, corpus / "train.jsonl", tmp_path / "out", ["bg-BG"], **{**kw, "max_steps": 6}
    )
    assert second.resumed_from_step == 4 and second.steps_done == 6
    assert [s for s, _ in second.train_loss_curve] == [5, 6]
    assert json.loads(Path(second.sidecar_path).read_text(encoding="utf-8"))["train_steps"] == 6
    with pytest.raises(RuntimeError, match="different fine-tune"):
        core.finetune(base_model, corpus / "train.jsonl", tmp_path / "out", ["bg-BG"], **{**kw, "seed": 5})


@pytest.mark.slow  # real NeMo training: ~15-30 s alone on 2 cores, minutes on a busy box
def test_sigterm_fails_loudly_and_leaves_a_resumable_checkpoint(base_model, corpus, tmp_path, monkeypatch):
    """Lightning turns SIGTERM into a SystemExit(0); a pod eviction must not look like a finished fine-tune."""
    import os
    import signal

    original = core._callbacks

    def killing_callbacks(label, max_steps, every=50):
        rec = original(label, max_steps, every)
        on_end = rec.on_train_batch_end

        def on_train_batch_end(trainer, *args):
            on_end(trainer, *args)
            if trainer.global_step == 3:
                os.kill(os.getpid(), signal.SIGTERM)

        rec.on_train_batch_end = on_train_batch_end
        return rec

    kw = dict(replay_langs=[], max_steps=5, batch_size=8, checkpoint_every=100, threads=2)
    monkeypatch.setattr(core, "_callbacks", killing_callbacks)
    with pytest.raises(RuntimeError, match=r"SIGTERM at step 3/5.*resume"):
        core.finetune(base_model, corpus / "train.jsonl", tmp_path / "out", ["bg-BG"], **kw)
    assert not (tmp_path / "out" / "model.nemo").exists()
    monkeypatch.setattr(core, "_callbacks", original)
    res = core.finetune(base_model, corpus / "train.jsonl", tmp_path / "out", ["bg-BG"], **kw)
    assert res.resumed_from_step == 3 and res.steps_done == 5


def _state(path):
    from nemo.collections.asr.models import ASRModel

    return {
        k: v.clone() for k, v in ASRModel.restore_from(str(path), map_location="cpu").state_dict().items()
    }


@pytest.mark.slow  # real NeMo training: two 2-step fine-tunes
@pytest.mark.parametrize(
    "policy, frozen, trained",
    [
        ("encoder", ("encoder.",), ("decoder.", "joint.")),
        ("all_but_prompt_decoder", ("encoder.", "joint."), ("decoder.",)),
    ],
)
def test_freeze_policy_trains_only_what_it_says(base_model, corpus, tmp_path, policy, frozen, trained):
    before = _state(base_model)
    res = core.finetune(
        base_model,
        corpus / "train.jsonl",
        tmp_path / policy,
        ["bg-BG"],
        max_steps=2,
        batch_size=8,
        checkpoint_every=0,
        threads=2,
        freeze=policy,
    )
    after = _state(res.model_path)
    changed = {k for k in before if k in after and not torch_equal(before[k], after[k])}
    for prefix in frozen:
        assert not {k for k in changed if k.startswith(prefix)}, f"{policy}: {prefix} changed"
    for prefix in trained:
        assert {k for k in changed if k.startswith(prefix)}, f"{policy}: {prefix} did not train"
    card = json.loads(Path(res.sidecar_path).read_text(encoding="utf-8"))
    assert card["hyperparameters"]["freeze"] == policy


def torch_equal(a, b) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b))


def test_replay_ratio_sets_the_share_of_replay_rows(corpus):
    rows = core.select_rows(
        corpus / "train.jsonl", ["bg-BG"], replay_langs=["el-GR", "es-ES"], replay_ratio=0.5
    )
    counts = core.count_langs(rows)
    assert counts["bg-BG"] == 8 and counts["el-GR"] == 4 and counts["es-ES"] == 4
    with pytest.raises(ValueError, match="replay_ratio"):
        core.select_rows(corpus / "train.jsonl", ["bg-BG"], replay_langs=["el-GR"], replay_ratio=1.0)


def test_recipe_knobs_reach_the_nemo_config(base_model, corpus):
    ds_base, optim_base, trainer = core.load_train_sections(core.NEMOTRON_CONFIG)
    optim = core.build_optim(optim_base, None, None, "cosine")
    assert optim["sched"]["name"] == "CosineAnnealing" and "d_model" not in optim["sched"]
    assert core.build_optim(optim_base, None, None, "noam")["sched"]["name"] == "NoamAnnealing"
    with pytest.raises(ValueError, match="scheduler"):
        core.build_optim(optim_base, None, None, "linear")
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"sample_rate": 16000, "model_defaults": {"prompt_dictionary": {"bg-BG": 30}}})
    ds = core.build_train_ds(ds_base, corpus / "train.jsonl", cfg, 0, None, batch_duration=120)
    assert ds["batch_duration"] == 120 and ds["batch_size"] is None
    ds = core.build_train_ds(ds_base, corpus / "train.jsonl", cfg, 0, 16)
    assert ds["batch_size"] == 16 and "batch_duration" not in ds
    assert core.parse_att_context_size("[56,1]") == [56, 1] and core.parse_att_context_size("") is None
    with pytest.raises(ValueError, match="att_context_size"):
        core.parse_att_context_size("[56]")


@pytest.mark.slow  # a real fine-tune in a child process, killed with SIGKILL, then rerun
def test_sigkill_then_rerun_resumes_from_the_last_checkpoint_and_logs_one_run(
    base_model, corpus, tmp_path, monkeypatch
):
    import signal
    import subprocess
    import sys
    import time

    import torch

    from tests.conftest import REPO_ROOT

    out, work_root = tmp_path / "out", tmp_path / "work"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    call = (
        f"run_finetune_step({str(corpus)!r}, {str(base_model)!r}, {str(out)!r}, 'bg-BG', '', 0, 60, 2e-3, 8, 0, "
        f"checkpoint_every=2, work_root={str(work_root)!r})"
    )
    script = f"from components.finetune_asr.core import run_finetune_step\n{call}\n"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "ASR_THREADS": "2", "OMP_NUM_THREADS": "2"}
    log = open(tmp_path / "child.log", "w")
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 600
    ckpts: list[Path] = []
    while time.monotonic() < deadline and child.poll() is None:
        ckpts = list(work_root.glob("finetune_asr/*/checkpoints/step=*.ckpt"))
        if any(int(p.stem.split("=")[1]) >= 6 for p in ckpts):
            break
        time.sleep(0.2)
    assert child.poll() is None, (
        f"the fine-tune ended before it could be killed: {(tmp_path / 'child.log').read_text()[-2000:]}"
    )
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    log.close()
    assert child.returncode == -signal.SIGKILL
    assert not (out / "model.nemo").exists()
    newest = core.newest_checkpoint(next(work_root.glob("finetune_asr/*/checkpoints")))
    killed_at = int(torch.load(newest, map_location="cpu", weights_only=False)["global_step"])
    assert killed_at >= 6  # step=6.ckpt was complete when we killed: nothing before it is redone

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    res, run_id = core.run_finetune_step(
        corpus, base_model, out, "bg-BG", "", 0, 60, 2e-3, 8, 0, checkpoint_every=2, work_root=str(work_root)
    )
    assert res.resumed_from_step == killed_at and res.steps_done == 60
    assert res.train_loss_curve[0][0] == killed_at + 1  # the step counter continued
    assert not any(work_root.glob("finetune_asr/*/checkpoints"))  # cleaned up after success

    import mlflow

    runs = mlflow.MlflowClient(tracking).search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(tracking).search_experiments()],
        filter_string="tags.step = 'finetune_asr'",
    )
    assert [r.info.run_id for r in runs] == [run_id]  # the killed attempt left no run, the rerun exactly one
    assert json.loads((out / "model.json").read_text(encoding="utf-8"))["train_steps"] == 60


@pytest.fixture(scope="module")
def base_without_final_sigma(corpus, tmp_path_factory) -> str:
    """A base whose tokenizer never saw 'ς' (like Nemotron's real one)."""
    from components.common.manifest import read_manifest
    from components.finetune_asr.bootstrap import bootstrap_base_model

    texts = [r["text"].replace("ς", "σ") for r in read_manifest(corpus / "train.jsonl", absolute=False)]
    return bootstrap_base_model(
        corpus / "train.jsonl",
        tmp_path_factory.mktemp("nosigma"),
        ["el-GR", "es-ES"],
        texts,
        max_steps=1,
        threads=2,
    )


@pytest.mark.slow  # real NeMo: a 1-step bootstrap and a 2-step fine-tune
def test_tokenizer_coverage_stops_the_run_or_maps_the_text(base_without_final_sigma, corpus, tmp_path):
    from components.build_manifest.coverage import CoverageError
    from components.common.asr_infer import AsrModel

    kw = dict(max_steps=2, batch_size=8, checkpoint_every=0, threads=2)
    with pytest.raises(CoverageError, match=r"el-GR[\s\S]*ς|ς[\s\S]*el-GR"):
        core.finetune(base_without_final_sigma, corpus / "train.jsonl", tmp_path / "a", ["el-GR"], **kw)
    assert not (tmp_path / "a" / "model.nemo").exists()  # stopped before training

    res = core.finetune(
        base_without_final_sigma,
        corpus / "train.jsonl",
        tmp_path / "b",
        ["el-GR"],
        text_maps="el_final_sigma",
        **kw,
    )
    trained_on = (tmp_path / "b" / "work" / "train_manifest.jsonl").read_text(encoding="utf-8")
    assert "ς" not in trained_on and "φωσ" in trained_on
    card = json.loads(Path(res.sidecar_path).read_text(encoding="utf-8"))
    assert card["tokenizer_coverage"]["passed"] and card["tokenizer_coverage"]["text_maps"] == [
        "el_final_sigma"
    ]
    asr = AsrModel.load(res.model_path)
    assert asr.text_maps == ["el_final_sigma"]  # travels inside the .nemo to the evaluator and Triton
    assert asr._restore("άναψε το φωσ.", "el-GR") == "άναψε το φως."
    assert asr._restore("el φωσ", "es-ES") == "el φωσ"  # only for the languages the map covers


def test_mlflow_run_has_params_config_curves_val_wer_model_and_sidecar(tmp_path, monkeypatch):
    import mlflow

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    (tmp_path / "model.nemo").write_bytes(b"not really a model")
    (tmp_path / "model.json").write_text('{"sha256": "x"}', encoding="utf-8")
    res = core.FinetuneResult(
        model_path=str(tmp_path / "model.nemo"),
        sidecar_path=str(tmp_path / "model.json"),
        steps_done=3,
        train_loss_curve=[(1, 9.0), (2, 8.0), (3, float("nan"))],
        seconds=1.5,
        lr_curve=[(1, 1e-4), (2, 2e-4), (3, 3e-4)],
        val_wer={"bg-BG": 0.5},
        resolved_config={"optim": {"name": "adamw", "lr": 0.002}},
        replay_kd_curve=[(1, 0.0), (2, 0.25), (3, 0.5)],
    )
    run_id = core.log_to_mlflow(res, {"max_steps": 3, "target_langs": "bg-BG"}, pipeline_run_id="kfp-run-42")
    client = mlflow.MlflowClient(tracking)
    run = client.get_run(run_id)
    assert run.data.tags["pipeline_run_id"] == "kfp-run-42" and run.data.params["max_steps"] == "3"
    assert run.data.metrics["val_wer_bg-BG"] == 0.5 and run.data.metrics["steps"] == 3
    assert [m.value for m in client.get_metric_history(run_id, "lr")] == [1e-4, 2e-4, 3e-4]
    assert [m.value for m in client.get_metric_history(run_id, "train_replay_kd")] == [0.0, 0.25, 0.5]
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [1, 2]  # NaN dropped
    arts = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for a in client.list_artifacts(run_id, "model")
    }
    assert {"resolved_config.yaml", "model/model.nemo", "model/model.json"} <= arts


@pytest.mark.slow
def test_replay_kd_counts_only_replay_rows_and_trains_only_the_student(base_model):
    import torch
    from nemo.collections.asr.models import ASRModel

    from components.finetune_asr.distill import fixed_att_context, replay_kd

    student = ASRModel.restore_from(base_model, map_location="cpu").eval()  # eval: no dither, same as teacher
    teacher = ASRModel.restore_from(base_model, map_location="cpu").eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    prompts = student.cfg.model_defaults.prompt_dictionary
    g = torch.Generator().manual_seed(0)
    signal = 0.1 * torch.randn(3, 8000, generator=g)
    batch = (
        signal,
        torch.tensor([8000, 6000, 8000]),
        torch.randint(0, student.tokenizer.vocab_size, (3, 4), generator=g),
        torch.tensor([4, 2, 3]),
        torch.tensor([prompts["bg-BG"], prompts["el-GR"], prompts["es-ES"]]),
    )
    att = list(student.encoder.att_context_size_all[-1])

    def kd_of(ids):
        with fixed_att_context(student.encoder, att):
            enc, enc_len = student.forward(
                input_signal=batch[0], input_signal_length=batch[1], prompt_indices=batch[4]
            )
        dec, _, _ = student.decoder(targets=batch[2], target_length=batch[3])
        return replay_kd(student, teacher, torch.tensor(ids), att, 4, batch, enc, enc_len, dec)

    assert kd_of([prompts["de-DE"]]) is None  # no replay row in the batch
    same = kd_of([prompts["el-GR"], prompts["es-ES"]])
    assert same is not None and abs(float(same.detach())) < 1e-5  # student == teacher
    with torch.no_grad():
        student.joint.joint_net[-1].weight.add_(0.05 * torch.randn_like(student.joint.joint_net[-1].weight))
    kd = kd_of([prompts["el-GR"], prompts["es-ES"]])
    assert float(kd.detach()) > 1e-3
    kd.backward()
    assert student.joint.joint_net[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
