"""Preflight: settings and data checked against the base checkpoint in seconds, before any training.

The checkpoint here is a real `.nemo` archive layout (model_config.yaml + a SentencePiece tokenizer) without
weights: preflight must never need them. Defects pinned (full-size rehearsal issue): a wrong lookahead or
language failed only after the fine-tune; a single-speaker dataset trained a model that could never be
evaluated; an aggregate tokenizer failed with a TypeError; a deterministic failure was retried three times.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from components.finetune_asr import core
from components.finetune_asr.preflight import PreflightError, run_preflight
from components.finetune_asr.settings import FinetuneSettings

TEXTS = {
    "bg-BG": ["Включи светлината в кухнята.", "Затвори вратата, моля."],
    "el-GR": ["Άναψε το φως στην κουζίνα.", "Κλείσε την πόρτα, παρακαλώ."],
    "es-ES": ["Enciende la luz en la cocina.", "Cierra la puerta, por favor."],
}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    pytest.importorskip("nemo.collections.asr")
    from components.finetune_asr.tokenizer import build_tokenizer

    texts = [t for ts in TEXTS.values() for t in ts] * 20
    return build_tokenizer(texts, tmp_path_factory.mktemp("tok") / "tokenizer", vocab_size=64)


def _nemo(path: Path, tokenizer_dir: Path, **tokenizer_cfg) -> Path:
    """A .nemo archive as NeMo writes it, minus the weights (which preflight must not read)."""
    cfg = yaml.safe_load((core.TINY_CONFIG).read_text())["model"]
    cfg["tokenizer"] = tokenizer_cfg or {"dir": None, "type": "bpe", "model_path": "nemo:abc_tokenizer.model"}
    with tarfile.open(path, "w") as tar:
        for name, data in (
            ("./model_config.yaml", yaml.safe_dump(cfg).encode()),
            ("./abc_tokenizer.model", (tokenizer_dir / "tokenizer.model").read_bytes()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _manifests(
    root: Path, speakers_per_lang: int = 2, test_langs=("bg-BG", "el-GR", "es-ES"), texts=TEXTS
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = {"train": [], "val": [], "test": []}
    for lang, ts in texts.items():
        for i in range(6):
            split = "test" if (i == 5 and lang in test_langs) else "train"
            rows[split].append(
                {
                    "audio_filepath": f"audio/{lang}_{i}.wav",
                    "duration": 1.0,
                    "text": ts[i % len(ts)],
                    "lang": lang,
                    "target_lang": lang,
                    "speaker": f"{lang}-s{i % speakers_per_lang}",
                }
            )
    for split, part in rows.items():
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part))
    return root


@pytest.fixture
def base(tmp_path, tokenizer_dir) -> Path:
    return _nemo(tmp_path / "base.nemo", tokenizer_dir)


def test_a_good_run_passes_and_resolves_the_recipe_lookahead(base, tmp_path):
    rep = run_preflight(base, _manifests(tmp_path / "m"), FinetuneSettings(), report_path=tmp_path / "r.json")
    assert rep.passed and rep.att_context_size == [56, 1]  # tiny-demo's deploy lookahead
    assert rep.offline_att_context_size == [56, 13]  # the checkpoint's most accurate lookahead
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is True
    assert rep.seconds < 60  # seconds, not a model load (a sanity bound, not a benchmark)


def test_every_wrong_setting_is_named_in_one_error(base, tmp_path):
    s = FinetuneSettings(recipe="nemotron35", target_langs="bg-BG,xx-XX", train_att_context_size="[56,2]")
    with pytest.raises(PreflightError) as e:
        run_preflight(base, _manifests(tmp_path / "m"), s, att_context_size="[56,3]")
    msg = str(e.value)
    assert "[56, 3] is not one of the checkpoint's" in msg and "[56, 2] is not one of" in msg
    assert "['xx-XX'] are not in the checkpoint's prompt dictionary" in msg
    assert "Noam d_model 1024 but the model's encoder d_model is 64" in msg


def test_single_speaker_data_cannot_be_evaluated(base, tmp_path):
    m = _manifests(tmp_path / "m", speakers_per_lang=1, test_langs=("el-GR", "es-ES"))
    with pytest.raises(
        PreflightError, match=r"bg-BG: no test rows.*one speaker \('bg-BG-s0'\).*`split` column"
    ):
        run_preflight(base, m, FinetuneSettings())


def test_replay_language_without_rows_is_named(base, tmp_path):
    with pytest.raises(PreflightError, match="fr-FR: replay language without train rows"):
        run_preflight(base, _manifests(tmp_path / "m"), FinetuneSettings(replay_langs="el-GR,fr-FR"))


def test_tokenizer_coverage_fails_before_training(base, tmp_path):
    texts = {**TEXTS, "bg-BG": ["打开厨房的灯。", "请关门。"]}
    with pytest.raises(PreflightError, match=r"tokenizer coverage: .*bg-BG"):
        run_preflight(base, _manifests(tmp_path / "m", texts=texts), FinetuneSettings())


def test_aggregate_tokenizer_is_refused_by_name(tmp_path, tokenizer_dir):
    agg = _nemo(tmp_path / "agg.nemo", tokenizer_dir, type="agg", langs={"bg": {"dir": "x", "type": "bpe"}})
    with pytest.raises(PreflightError, match="aggregate tokenizer"):
        run_preflight(agg, _manifests(tmp_path / "m"), FinetuneSettings())


def test_aggregate_tokenizer_in_the_finetune_coverage_is_named_not_a_type_error(tokenizer_dir):
    from nemo.collections.common.tokenizers.aggregate_tokenizer import AggregateTokenizer
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import SentencePieceTokenizer

    from components.common.coverage import CoverageError

    sp = SentencePieceTokenizer(str(tokenizer_dir / "tokenizer.model"))
    model = SimpleNamespace(tokenizer=AggregateTokenizer({"bg": sp, "el": sp}))
    rows = [{"text": TEXTS["bg-BG"][0], "lang": "bg-BG"}]
    with pytest.raises(CoverageError, match="aggregate"):
        core.tokenizer_coverage(model, rows, 0.001, None)


def test_not_a_nemo_is_named(tmp_path):
    (tmp_path / "x.nemo").write_bytes(b"not a tar")
    with pytest.raises(PreflightError, match="not a readable .nemo archive"):
        run_preflight(tmp_path / "x.nemo", _manifests(tmp_path / "m"), FinetuneSettings())


def test_a_deterministic_failure_is_not_retried(base, tmp_path, monkeypatch):
    """A retried fine-tune task (same work dir) whose first attempt failed deterministically fails at once,
    without resolving or loading the 2.4 GB base again."""
    from components.common.errors import DeterministicError

    calls = []

    def resolve(uri, dst, **kw):
        calls.append(uri)
        raise ValueError("finetune: languages ['xx-XX'] are not keys of the model's prompt_dictionary")

    monkeypatch.setattr(core, "resolve_model", resolve)
    args = (tmp_path / "m", str(base), tmp_path / "out", "target_langs=xx-XX")
    with pytest.raises(ValueError, match="xx-XX"):
        core.run_finetune_step(*args, work_root=str(tmp_path / "work"))
    with pytest.raises(DeterministicError, match=r"xx-XX.*not retried"):
        core.run_finetune_step(*args, work_root=str(tmp_path / "work"))
    assert len(calls) == 1


def test_a_registry_base_resolves_through_the_steps_tracking_uri(base, tmp_path, monkeypatch):
    """On a cluster the base is `models:/<name>/<version>` (resolve_base's output) and the registry is the
    pipeline's `mlflow_tracking_uri`; the pod has no $MLFLOW_TRACKING_URI. Preflight resolved the URI without
    the parameter (the image's default store), so it could not find the base the other steps find."""
    from registry.mlflow_adapter import Registry, get_client

    tracking = f"sqlite:///{tmp_path / 'cluster-registry.db'}"
    info = Registry(get_client(tracking)).register("asr-base", base, tags={"role": "base"})
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    rep = core.preflight_step(
        _manifests(tmp_path / "m"),
        f"models:/asr-base/{info.version}",
        FinetuneSettings(),
        work_root=str(tmp_path / "work"),
        mlflow_tracking_uri=tracking,
    )
    assert rep.passed
