"""Tokenizer coverage: <unk> rates per language, offending characters, text maps (ς -> σ and back), CLI.

The tokenizer is trained here from text without "ς", like Nemotron's real one (a few hundred ms); the cached
tiny base model is not used.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from components.common.coverage import (
    CoverageError,
    apply_text_maps,
    check_coverage,
    check_manifest_coverage,
    load_tokenizer,
    main,
)
from components.common.manifest import read_manifest, write_manifest
from components.common.text import get_text_maps, map_for_tokenizer, restore_after_decoding

GREEK = [
    "Ο καιρός είναι ωραίος σήμερα.",
    "Πού είναι ο σταθμός;",
    "Οι φίλοι μας έρχονται αύριο.",
    "Σας ευχαριστώ πολύ για τη βοήθεια.",
    "Η θάλασσα της Ελλάδας είναι γαλάζια.",
]
SPANISH = ["¿Dónde está la estación?", "Hoy hace buen tiempo.", "Muchas gracias por la ayuda."]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    """A SentencePiece model that never saw final sigma (its training text spells every ς as σ)."""
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("tok")
    text = [t.replace("ς", "σ") for t in GREEK] + SPANISH
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text * 20),
        model_prefix=str(d / "tokenizer"),
        vocab_size=120,
        model_type="unigram",
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return d


@pytest.fixture(scope="module")
def nemo_file(tok_dir) -> Path:
    """The tokenizer packed the way NeMo packs it into a .nemo (hashed name, config names it)."""
    path = tok_dir / "base.nemo"
    cfg = b"tokenizer:\n  type: bpe\n  model_path: nemo:0a1b_tokenizer.model\n"
    with tarfile.open(path, "w") as tar:
        for name, data in [
            ("./model_config.yaml", cfg),
            ("./0a1b_tokenizer.model", (tok_dir / "tokenizer.model").read_bytes()),
            ("./model_weights.ckpt", b"not needed"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def rows():
    return [(t, "el-GR") for t in GREEK] + [(t, "es-ES") for t in SPANISH]


def test_missing_final_sigma_is_reported_per_language(nemo_file):
    rep = check_coverage(rows(), nemo_file)
    assert not rep.passed and rep.failing == ["el-GR"]
    el, es = rep.languages["el-GR"], rep.languages["es-ES"]
    n_sigma = sum(t.count("ς") for t in GREEK)
    assert list(el.offending) == ["ς"] and el.offending["ς"] == n_sigma
    assert el.n_unk_tokens >= n_sigma and el.n_texts == 5 and el.n_texts_with_unk == 5
    assert 0 < el.unk_rate < 1 and el.examples[0] == GREEK[0]
    assert es.unk_rate == 0 and es.offending == {} and es.n_roundtrip_mismatch == 0
    assert "'ς' U+03C2" in rep.summary and "el_final_sigma" in rep.summary
    d = rep.to_dict()
    assert d["languages"]["el-GR"]["offending"][0]["name"] == "GREEK SMALL LETTER FINAL SIGMA"
    assert check_coverage(rows(), nemo_file, max_unk_rate=1.0).passed  # the threshold decides


def test_text_map_makes_greek_covered_and_keeps_the_unmapped_rate(nemo_file):
    before = check_coverage(rows(), nemo_file).languages["el-GR"].unk_rate
    rep = check_coverage(rows(), nemo_file, max_unk_rate=0.0, text_maps="el_final_sigma")
    assert rep.passed and rep.text_maps == ["el_final_sigma"]
    el = rep.languages["el-GR"]
    assert el.unk_rate == 0 and el.unk_rate_unmapped == pytest.approx(before, abs=1e-6)


def test_tokenizer_sources_agree_and_errors_name_the_file(tok_dir, nemo_file, tmp_path):
    texts = [GREEK[0], SPANISH[0]]
    ids = [
        load_tokenizer(src).encode(t)
        for src in (nemo_file, tok_dir, tok_dir / "tokenizer.model")
        for t in texts
    ]
    assert ids[:2] == ids[2:4] == ids[4:]
    with pytest.raises(CoverageError, match="no such tokenizer"):
        load_tokenizer(tmp_path / "none.nemo")
    empty = tmp_path / "empty.nemo"
    with tarfile.open(empty, "w"):
        pass
    with pytest.raises(CoverageError, match=r"empty.nemo: expected one \*tokenizer.model inside"):
        load_tokenizer(empty)
    (tmp_path / "junk.model").write_bytes(b"junk")
    with pytest.raises(CoverageError, match="junk.model: not a SentencePiece model"):
        load_tokenizer(tmp_path / "junk.model")


@pytest.mark.slow  # imports NeMo (~10-30 s)
def test_nemo_tokenizer_object_is_accepted(tok_dir):
    pytest.importorskip("nemo")
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import SentencePieceTokenizer

    from components.common.coverage import Tokenizer

    tok = Tokenizer.from_nemo_tokenizer(SentencePieceTokenizer(str(tok_dir / "tokenizer.model")))
    rep = check_coverage(rows(), tok)
    assert rep.failing == ["el-GR"] and list(rep.languages["el-GR"].offending) == ["ς"]


@pytest.mark.parametrize(
    "text",
    [
        "Ο κόσμος της Ελλάδας, σήμερα! Σας ευχαριστώ.",
        "«Τι κάνεις;» ρώτησε ο Νίκος· «καλά».",
        "ΟΔΟΣ Σταδίου 5, τηλ. 210 — ο σύλλογος (Αθήνας)",
    ],
)
def test_final_sigma_map_and_restore_round_trip(text):
    mapped = map_for_tokenizer(text, "el-GR", "el_final_sigma")
    assert "ς" not in mapped
    assert restore_after_decoding(mapped, "el-GR", ["el_final_sigma"]) == text
    # other languages are untouched, and a decoded σ inside a word stays σ
    assert map_for_tokenizer("ς", "es-ES", "el_final_sigma") == "ς"
    assert restore_after_decoding("σήμερα σπίτι", "el-GR", "el_final_sigma") == "σήμερα σπίτι"
    with pytest.raises(ValueError, match="unknown text map 'nope'"):
        get_text_maps("el_final_sigma,nope")


def _manifest_dir(d: Path) -> Path:
    for split, texts in (("train", GREEK[:3] + SPANISH), ("val", GREEK[3:]), ("test", GREEK)):
        write_manifest(
            d / f"{split}.jsonl",
            [
                {
                    "audio_filepath": f"audio/{split}{i}.wav",
                    "duration": 1.0,
                    "text": t,
                    "lang": "es-ES" if t in SPANISH else "el-GR",
                    "id": f"{split}{i}",
                }
                for i, t in enumerate(texts)
            ],
        )
    return d


def test_manifest_coverage_apply_and_cli(nemo_file, tmp_path, capsys):
    d = _manifest_dir(tmp_path / "m")
    rep = check_manifest_coverage(d, nemo_file, out_path=tmp_path / "cov.json")
    assert rep.languages["el-GR"].n_texts == 5  # train + val, not test
    assert json.loads((tmp_path / "cov.json").read_text())["failing"] == ["el-GR"]
    assert main(["--manifest", str(d), "--tokenizer", str(nemo_file)]) == 1
    assert "Tokenizer coverage FAILED" in capsys.readouterr().out
    args = ["--manifest", str(d), "--tokenizer", str(nemo_file), "--text-maps", "el_final_sigma", "--apply"]
    assert main(args) == 0
    assert apply_text_maps(d, "el_final_sigma") == {"train": 0, "val": 0}  # idempotent
    train = read_manifest(d / "train.jsonl", absolute=False)
    assert train[0]["text"] == "Ο καιρόσ είναι ωραίοσ σήμερα." and train[0]["text_original"] == GREEK[0]
    assert "text_original" not in train[3]  # Spanish: no map applies
    assert [
        r["text"] for r in read_manifest(d / "test.jsonl")
    ] == GREEK  # references keep the user's spelling
    assert check_manifest_coverage(d, nemo_file, max_unk_rate=0.0).passed  # now covered without a map
    assert main(["--manifest", str(tmp_path / "nowhere"), "--tokenizer", str(nemo_file)]) == 2
