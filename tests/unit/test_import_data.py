"""Issue 16: bring existing data. NeMo manifests (one or several), a Hugging Face audiofolder and a
`datasets.save_to_disk` folder, and a Lhotse CutSet become metadata.jsonl, then go through the same
validate_data and build_manifest as hand-written metadata, with the same named errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from components.build_manifest.core import build_manifests
from components.common.dataset import DatasetError, find_metadata
from components.import_data.__main__ import main as import_main
from components.import_data.core import ImportDataError, detect, import_dataset
from components.validate_data.core import validate_dataset

CLIPS = [  # name, text, lang, speaker
    ("a0.wav", "Καλημέρα σας.", "el-GR", "el_a"),
    ("a1.flac", "Τι κάνετε;", "el-GR", "el_b"),
    ("b0.wav", "¿Qué tal?", "es-ES", "es_a"),
    ("b1.flac", "Muy bien.", "es-ES", "es_b"),
]


def _audio(path: Path, seed: int, sr: int = 16000) -> float:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = (0.2 * np.random.default_rng(seed).standard_normal(int(sr * 0.8))).astype(np.float32)
    sf.write(path, x, sr)
    return len(x) / sr


def _check_pipeline_reads(root: Path, n: int, tmp_path: Path) -> None:
    """The imported root passes validation and builds n clips, like any dataset."""
    res = validate_dataset(root, tmp_path / "report", data_docs=False, workers=1)
    assert res.passed, res.failures[:3]
    built = build_manifests(root, tmp_path / "manifests", workers=1, val_ratio=0.0, test_ratio=0.0)
    assert sum(built.totals().values()) == n and built.n_skipped == 0


def test_nemo_manifests_one_or_several(tmp_path):
    root = tmp_path / "nemo"
    for split, part in (("train", CLIPS[:2] + CLIPS[2:3]), ("dev", CLIPS[3:])):
        lines = []
        for i, (name, text, lang, spk) in enumerate(part):
            d = _audio(root / "wavs" / name, i)
            lines.append(
                {
                    "audio_filepath": f"wavs/{name}",
                    "duration": d,
                    "text": text,
                    "target_lang": lang,
                    "speaker": spk,
                }
            )
        (root / f"{split}_manifest.json").write_text(
            "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8"
        )
    assert detect(root) == "nemo"
    with pytest.raises(DatasetError, match="holds nemo data: run `python -m components.import_data"):
        find_metadata(root)
    r = import_dataset(root)
    assert r.format == "nemo" and r.rows == 4 and r.sources == ["dev_manifest.json", "train_manifest.json"]
    rows = [json.loads(x) for x in (root / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {x["split"] for x in rows} == {"train", "val"} and rows[0]["audio"] == "wavs/b1.flac"
    assert rows[0]["source"] == "dev_manifest.json:1"
    _check_pipeline_reads(root, 4, tmp_path)
    # one manifest: no split column (the seeded split decides); a re-import replaces its own metadata.jsonl
    r = import_dataset(root, "nemo", ["train_manifest.json"])
    assert r.rows == 3 and "split" not in json.loads((root / "metadata.jsonl").read_text().splitlines()[0])


def test_nemo_rows_outside_the_root_fail_validation_by_name(tmp_path):
    root, elsewhere = tmp_path / "nemo", tmp_path / "elsewhere"
    d = _audio(elsewhere / "x.wav", 0)
    _audio(root / "y.wav", 1)
    lines = [
        {
            "audio_filepath": str(elsewhere / "x.wav"),
            "duration": d,
            "text": "Hola.",
            "lang": "es-ES",
            "speaker": "s1",
        },
        {"audio_filepath": "y.wav", "duration": d, "text": "Adiós.", "lang": "es-ES", "speaker": "s2"},
        {"audio_filepath": "y.wav", "offset": 0.2, "duration": 0.3, "text": "a", "lang": "es-ES"},
    ]
    (root / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    r = import_dataset(root)
    assert r.rows == 2 and r.dropped == [
        {"source": "m.jsonl:3", "reason": "segment: offset > 0 (a part of a longer file)"}
    ]
    res = validate_dataset(root, tmp_path / "report", data_docs=False, workers=1)
    assert [(f.line, f.check) for f in res.failures if f.severity == "error"] == [(1, "audio_in_root")]


def test_import_refuses_to_overwrite_a_metadata_file_it_did_not_write(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "metadata.csv").write_text("audio,text,lang,speaker\n")
    with pytest.raises(ImportDataError, match="metadata.csv: a metadata file the import did not write"):
        import_dataset(root, "nemo")
    (tmp_path / "r2").mkdir()
    with pytest.raises(ImportDataError, match="no importable data found"):
        import_dataset(tmp_path / "r2")
    assert import_main([str(tmp_path / "r2")]) == 2


def test_hf_audiofolder_with_split_folders(tmp_path):
    root = tmp_path / "af"
    for split, part in (("train", CLIPS[:3]), ("test", CLIPS[3:])):
        (root / split).mkdir(parents=True)
        with open(root / split / "metadata.csv", "w", encoding="utf-8") as f:
            f.write("file_name,transcription,language,speaker_id\n")
            for i, (name, text, lang, spk) in enumerate(part):
                _audio(root / split / "clips" / name, i)
                f.write(f'clips/{name},"{text}",{lang},{spk}\n')
    assert detect(root) == "hf_audiofolder"
    r = import_dataset(root)
    assert r.rows == 4
    rows = [json.loads(x) for x in (root / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[0] == {
        "audio": "test/clips/b1.flac",
        "text": "Muy bien.",
        "lang": "es-ES",
        "speaker": "es_b",
        "split": "test",
        "source": "test/metadata.csv:2",
    }
    _check_pipeline_reads(root, 4, tmp_path)


def test_hf_datasets_saved_to_disk_decoded_locally(tmp_path):
    datasets = pytest.importorskip("datasets")
    src = tmp_path / "src"
    records = {"audio": [], "sentence": [], "locale": [], "client_id": []}
    for i, (name, text, lang, spk) in enumerate(CLIPS):
        _audio(src / name, i)
        records["audio"].append({"path": name, "bytes": (src / name).read_bytes()})
        records["sentence"].append(text)
        records["locale"].append(lang)
        records["client_id"].append(spk)
    ds = datasets.Dataset.from_dict(records).cast_column("audio", datasets.Audio(decode=False))
    root = tmp_path / "hf"
    datasets.DatasetDict({"train": ds.select(range(3)), "validation": ds.select([3])}).save_to_disk(str(root))
    assert detect(root) == "hf_disk"
    r = import_dataset(root)
    assert r.rows == 4
    rows = [json.loads(x) for x in (root / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[3]["audio"] == "hf_audio/validation/00000000.flac" and rows[3]["split"] == "val"
    assert (root / rows[0]["audio"]).read_bytes() == (src / "a0.wav").read_bytes()  # the stored bytes
    _check_pipeline_reads(root, 4, tmp_path)


def test_lhotse_cutset(tmp_path):
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    root = tmp_path / "lh"
    recs, sups = [], []
    for i, (name, text, lang, spk) in enumerate(CLIPS):
        _audio(root / "audio" / name, i)
        rec = Recording.from_file(root / "audio" / name, recording_id=f"r{i}")
        recs.append(rec)
        sups.append(
            SupervisionSegment(
                id=f"s{i}",
                recording_id=rec.id,
                start=0,
                duration=rec.duration,
                text=text,
                language=lang,
                speaker=spk,
            )
        )
    cuts = CutSet.from_manifests(
        recordings=RecordingSet.from_recordings(recs), supervisions=SupervisionSet.from_segments(sups)
    )
    part = cuts[0].truncate(duration=0.3).with_id("part")  # part of a recording: not a row
    CutSet.from_cuts(list(cuts) + [part]).to_file(root / "cuts.jsonl.gz")
    assert detect(root) == "lhotse"
    r = import_dataset(root)
    assert r.rows == 4 and r.dropped == [
        {"source": "cut part", "reason": "segment: the cut is part of a longer recording"}
    ]
    _check_pipeline_reads(root, 4, tmp_path)
