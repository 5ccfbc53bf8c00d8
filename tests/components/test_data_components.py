"""validate_data and build_manifest as kfp components, run by kfp.local exactly as the pipeline runs them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from kfp import local

from components.build_manifest.component import build_manifest
from components.validate_data.component import validate_data

# build_manifest's record, as the pipeline passes it, with the audio inside the artifact (no data volume here)
LOCAL_BUILD = "val_ratio=0.1\ntest_ratio=0.1\nbuild_root="

CLIPS = [  # file, rate, channels, text, lang, speaker
    ("el0.wav", 16000, 1, "Καλημέρα σας.", "el-GR", "el_a"),
    ("el1.flac", 22050, 1, "Τι κάνετε;", "el-GR", "el_b"),
    ("bg0.ogg", 16000, 1, "Здравейте!", "bg-BG", "bg_a"),
    ("bg1.wav", 44100, 2, "Как сте?", "bg-BG", "bg_b"),
    ("es0.wav", 48000, 1, "¿Qué tal?", "es-ES", "es_a"),
    ("es1.flac", 16000, 1, "Muy bien.", "es-ES", "es_b"),
]


def make_dataset(root: Path, splits: bool = True) -> Path:
    (root / "clips").mkdir(parents=True)
    rng = np.random.default_rng(0)
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["audio", "text", "lang", "speaker", "split"])
        for i, (name, sr, ch, text, lang, spk) in enumerate(CLIPS):
            x = (0.2 * rng.standard_normal((int(sr * 0.6), ch))).astype(np.float32)
            sf.write(root / "clips" / name, x if ch > 1 else x[:, 0], sr)
            w.writerow([f"clips/{name}", text, lang, spk, "train" if i % 2 == 0 else "test"])
    return root


@pytest.fixture(scope="module")
def kfp_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kfp")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds") / "data")


def test_validate_data_component_passes_clean_data(kfp_root, dataset):
    task = validate_data(data_root=str(dataset), settings="min_duration=0.3\nmax_duration=30.0")
    assert task.outputs["passed"] is True
    assert task.outputs["summary"].startswith("Data validation PASSED: 0 of 6 rows")
    page = Path(task.outputs["data_docs"].path)
    assert page.is_file() and "Data validation passed" in page.read_text(encoding="utf-8")
    assert "srcdoc=" in page.read_text(encoding="utf-8")  # the GX result page travels inside the one file
    report = task.outputs["report"]
    assert report.metadata["rows"] == 6 and report.metadata["failed_rows"] == 0
    assert report.metadata["failed_audio_decodable"] == 0
    assert json.loads(Path(report.path).read_text())["passed"] is True


def test_validate_data_component_fails_the_task_after_publishing_docs(kfp_root, tmp_path):
    data = make_dataset(tmp_path / "data")
    (data / "clips" / "bg0.ogg").write_bytes(b"not audio at all" * 10)
    with pytest.raises(RuntimeError, match="validate-data"):
        validate_data(data_root=str(data), settings="min_duration=0.3\nmax_duration=30.0")
    pages = sorted(kfp_root.glob("validate-data-*/validate-data/data_docs"), key=lambda p: p.stat().st_mtime)
    html = pages[-1].read_text(encoding="utf-8")
    assert "Data validation FAILED" in html and "clips/bg0.ogg" in html and "undecodable" in html


def test_build_manifest_component(kfp_root, dataset):
    task = build_manifest(data_root=str(dataset), settings=LOCAL_BUILD, seed=0)
    summary = json.loads(task.outputs["Output"])
    assert summary["split_source"] == "declared" and summary["n_skipped"] == 0
    assert summary["counts"]["train"] == {"el-GR": 1, "bg-BG": 1, "es-ES": 1}
    assert summary["counts"]["test"] == {"el-GR": 1, "bg-BG": 1, "es-ES": 1}
    ds = task.outputs["manifests"]
    out = Path(ds.path)
    assert {p.name for p in out.iterdir()} >= {
        "train.jsonl",
        "val.jsonl",
        "test.jsonl",
        "summary.json",
        "audio",
    }
    assert len(list((out / "audio").glob("*.wav"))) == 6
    assert ds.metadata["n_train"] == 3 and ds.metadata["n_test"] == 3 and ds.metadata["n_val"] == 0
    assert ds.metadata["languages"] == ["bg-BG", "el-GR", "es-ES"]


def test_build_manifest_drops_the_rows_validation_rejected(kfp_root, tmp_path):
    """Wired as the pipeline wires it: validate_data's report -> build_manifest's `validation` input."""
    from kfp import dsl

    data = make_dataset(tmp_path / "data")
    text = (data / "metadata.csv").read_text(encoding="utf-8").replace("Καλημέρα σας.", "Здравей.")
    (data / "metadata.csv").write_text(text, encoding="utf-8")  # a Cyrillic transcript on a Greek row

    def data_steps(data_root):
        checked = validate_data(
            data_root=data_root, settings="max_failed_fraction=0.5"
        )  # tolerated: the run goes on ...
        built = build_manifest(
            data_root=data_root, settings=LOCAL_BUILD, seed=0, validation=checked.outputs["report"]
        )
        return built.outputs["Output"]

    data_steps.__annotations__ = {
        "data_root": str,
        "return": str,
    }  # real types: this module defers annotations
    summary = json.loads(
        dsl.pipeline(data_steps)(data_root=str(data)).output
    )  # ... but the row is in no manifest
    assert summary["n_skipped"] == 1 and summary["counts"]["train"] == {"bg-BG": 1, "es-ES": 1}
    assert summary["skipped_by_reason"] == {"rejected by validation": 1}
