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
from components.finetune_asr import core
from components.finetune_asr import trainer as wiring

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


_RUNTIME = (
    "replay_manifest",
    "work_dir",
    "threads",
    "devices",
    "strategy",
    "base_model_uri",
    "val_manifest",
    "val_max_per_lang",
    "tracker",
)


def _ft(base, train, out, targets, **kw):
    """core.finetune with keyword knobs (lists of languages allowed), like the tests used to call it."""
    from components.finetune_asr.settings import FinetuneSettings

    runtime = {k: kw.pop(k) for k in list(kw) if k in _RUNTIME}
    kw.setdefault("replay_langs", [])
    for k in ("replay_langs",):
        if isinstance(kw[k], (list, tuple)):
            kw[k] = ",".join(kw[k])
    return core.finetune(base, train, out, FinetuneSettings(target_langs=",".join(targets), **kw), **runtime)


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
# (row selection, recipes and the tokenizer: test_finetune_data.py)


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

    res = _ft(
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
    # the tiny-demo recipe keeps the encoder (its `freeze: encoder`); the joint and prediction net train
    assert side["hyperparameters"]["freeze"] == "encoder"
    assert not any(k.startswith("encoder.") for k in changed) and any(k.startswith("joint.") for k in changed)


@pytest.mark.slow  # real NeMo training: ~15-30 s alone on 2 cores, minutes on a busy box
def test_resume_from_checkpoint_continues_the_step_count(base_model, corpus, tmp_path):
    kw = dict(replay_langs=[], max_steps=4, batch_size=8, checkpoint_every=2, threads=2)
    first = _ft(base_model, corpus / "train.jsonl", tmp_path / "out", ["bg-BG"], **kw)
    assert first.steps_done == 4 and first.resumed_from_step == 0
    assert (tmp_path / "out" / "work" / "checkpoints" / "last.ckpt").is_file()
    second = _ft(base_model, corpus / "train.jsonl", tmp_path / "out", ["bg-BG"], **{**kw, "max_steps": 6})
    assert second.resumed_from_step == 4 and second.steps_done == 6
    assert [s for s, _ in second.train_loss_curve] == [5, 6]
    assert json.loads(Path(second.sidecar_path).read_text(encoding="utf-8"))["train_steps"] == 6
    with pytest.raises(RuntimeError, match="different fine-tune"):
        _ft(base_model, corpus / "train.jsonl", tmp_path / "out", ["bg-BG"], **{**kw, "seed": 5})


@pytest.mark.slow  # real NeMo training: ~15-30 s alone on 2 cores, minutes on a busy box
def test_sigterm_fails_loudly_and_leaves_a_resumable_checkpoint(base_model, corpus, tmp_path, monkeypatch):
    """Lightning turns SIGTERM into a SystemExit(0); a pod eviction must not look like a finished fine-tune."""
    import os
    import signal

    original = wiring._callbacks

    def killing_callbacks(label, max_steps, every=None, tracker=None):
        rec = original(label, max_steps, every, tracker)
        on_end = rec.on_train_batch_end

        def on_train_batch_end(trainer, *args):
            on_end(trainer, *args)
            if trainer.global_step == 3:
                os.kill(os.getpid(), signal.SIGTERM)

        rec.on_train_batch_end = on_train_batch_end
        return rec

    kw = dict(replay_langs=[], max_steps=5, batch_size=8, checkpoint_every=100, threads=2)
    monkeypatch.setattr(wiring, "_callbacks", killing_callbacks)
    with pytest.raises(RuntimeError, match=r"SIGTERM at step 3/5.*resume"):
        _ft(base_model, corpus / "train.jsonl", tmp_path / "out", ["bg-BG"], **kw)
    assert not (tmp_path / "out" / "model.nemo").exists()
    monkeypatch.setattr(wiring, "_callbacks", original)
    res = _ft(base_model, corpus / "train.jsonl", tmp_path / "out", ["bg-BG"], **kw)
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
    res = _ft(
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
    settings = "target_langs=bg-BG\nreplay_langs=\nmax_steps=60\nbatch_size=8\ncheckpoint_every=2"
    call = (
        f"run_finetune_step({str(corpus)!r}, {str(base_model)!r}, {str(out)!r}, {settings!r}, "
        f"work_root={str(work_root)!r})"
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
    res, run_id = core.run_finetune_step(corpus, base_model, out, settings, work_root=str(work_root))
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
    from components.common.asr_infer import AsrModel
    from components.common.coverage import CoverageError

    kw = dict(max_steps=2, batch_size=8, checkpoint_every=0, threads=2)
    with pytest.raises(CoverageError, match=r"el-GR[\s\S]*ς|ς[\s\S]*el-GR"):
        _ft(base_without_final_sigma, corpus / "train.jsonl", tmp_path / "a", ["el-GR"], **kw)
    assert not (tmp_path / "a" / "model.nemo").exists()  # stopped before training

    res = _ft(
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


@pytest.mark.slow  # real NeMo: a 4-step fine-tune logged to MLflow on sqlite
def test_mlflow_uri_is_a_parameter_and_metrics_stream_while_training(
    base_model, corpus, tmp_path, monkeypatch
):
    """On a cluster only the step parameter carries the tracking URI: the fine-tune must log without the env
    variable, and a user must see loss/lr/KD in the MLflow UI while the run trains, not after it."""
    import mlflow

    from components.finetune_asr import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(tracking, "EVERY_STEPS", 1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    seen: dict = {}
    original = wiring._callbacks

    def spying_callbacks(label, max_steps, every=None, tracker=None):
        rec = original(label, max_steps, every, tracker)
        on_end = rec.on_train_batch_end

        def on_train_batch_end(trainer, *args):
            on_end(trainer, *args)
            if trainer.global_step == 3:  # mid-run: what a user watching the MLflow UI sees
                client = mlflow.MlflowClient(uri)
                seen["status"] = client.get_run(tracker.run_id).info.status
                seen["loss_steps"] = [m.step for m in client.get_metric_history(tracker.run_id, "train_loss")]

        rec.on_train_batch_end = on_train_batch_end
        return rec

    monkeypatch.setattr(wiring, "_callbacks", spying_callbacks)
    settings = "target_langs=bg-BG\nreplay_langs=el-GR\nreplay_per_lang=4\nmax_steps=4\nbatch_size=8\ncheckpoint_every=0"
    res, run_id = core.run_finetune_step(
        corpus,
        base_model,
        tmp_path / "out",
        settings,
        mlflow_tracking_uri=uri,
        work_root=str(tmp_path / "work"),
        pipeline_run_id="kfp-run-42",
        threads=2,
    )
    assert seen == {"status": "RUNNING", "loss_steps": [1, 2, 3]}
    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["pipeline_run_id"] == "kfp-run-42"
    assert run.data.params["recipe"] == "tiny-demo" and run.data.params["max_steps"] == "4"
    assert '"max_steps": 4' in run.data.params["overrides"] and run.data.metrics["steps"] == 4
    assert [m.step for m in client.get_metric_history(run_id, "lr")] == [1, 2, 3, 4]
    assert [m.step for m in client.get_metric_history(run_id, "train_replay_kd")] == [1, 2, 3, 4]
    arts = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for a in client.list_artifacts(run_id, "model")
    }
    assert {"resolved_config.yaml", "model/model.nemo", "model/model.json"} <= arts
    assert res.steps_done == 4


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


@pytest.mark.slow  # real NeMo: a 3-step fine-tune with the teacher
def test_replay_rows_are_distilled_under_unified_prompt_mode(base_model, corpus, tmp_path):
    """Nemotron's recipe gives half the rows the `auto` prompt (unified mode). Replay rows must still be found
    by their language, not by their prompt: here every prompt is `auto`, and the replay rows are distilled."""
    import yaml

    from components.finetune_asr.settings import RECIPES

    recipe = yaml.safe_load(RECIPES["tiny-demo"].read_text())
    recipe["model"]["train_ds"].update(default_prompt_mode="unified", unified_auto_ratio=1.0)
    (tmp_path / "all_auto.yaml").write_text(yaml.safe_dump(recipe))
    res = _ft(
        base_model,
        corpus / "train.jsonl",
        tmp_path / "out",
        ["bg-BG"],
        recipe=str(tmp_path / "all_auto.yaml"),
        replay_langs=["el-GR"],
        replay_per_lang=8,
        max_steps=3,
        batch_size=16,
        checkpoint_every=0,
        threads=2,
    )
    assert res.replay_rows_distilled == 3 * 8  # every batch holds the 8 el rows (16 rows, batch 16)
    assert res.resolved_config["train_ds"]["default_prompt_mode"] == "unified"


@pytest.mark.slow  # a real 2-step fine-tune
def test_a_concurrent_fine_tune_of_the_same_inputs_gets_its_own_work_dir(base_model, corpus, tmp_path):
    """Two fine-tunes on the same manifests (two pipeline runs, or a manual rerun beside a running one) used to
    share one work dir: the first to finish deleted the other's checkpoints. A running fine-tune holds its
    work dir's lock; another one with the same inputs works in a directory of its own."""
    import fcntl

    settings = "target_langs=bg-BG\nreplay_langs=\nmax_steps=2\nbatch_size=8\ncheckpoint_every=1"
    root = tmp_path / "work"
    # what run A looks like while it trains: its work dir, its checkpoints, its lock held
    core.run_finetune_step(corpus, base_model, tmp_path / "probe", settings, work_root=str(root), threads=2)
    assert not any((root / "finetune_asr").iterdir())  # a finished run cleans up after itself
    key = core.work_key(corpus, base_model, settings)
    running = root / "finetune_asr" / key
    (running / "checkpoints").mkdir(parents=True)
    (running / "checkpoints" / "step=1.ckpt").write_bytes(b"run A's checkpoint")
    with open(running / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        res, _ = core.run_finetune_step(
            corpus, base_model, tmp_path / "b", settings, work_root=str(root), threads=2
        )
    assert res.steps_done == 2 and Path(res.model_path).is_file()
    assert (running / "checkpoints" / "step=1.ckpt").read_bytes() == b"run A's checkpoint"  # untouched
