"""validate_data: every check fails on its bad row and only there; clean data passes; reports are written.

GX takes ~5 s to import, so each dataset is validated once per module and the tests read that result.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from components.validate_data.core import (
    CHECKS_BY_NAME,
    DatasetError,
    default_prompt_dictionary,
    derive_id,
    invalid_characters,
    read_metadata,
    resolve_audio,
    validate_dataset,
    write_single_page,
)


def _speech(sr: int = 16000, seconds: float = 0.6, channels: int = 1, freq: float = 220) -> np.ndarray:
    x = (0.3 * np.sin(2 * np.pi * freq * np.arange(int(sr * seconds)) / sr)).astype(np.float32)
    return np.stack([x] * channels, 1) if channels > 1 else x


def write_metadata(root: Path, rows: list[dict], name: str = "metadata.csv") -> None:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    if name.endswith(".csv"):
        with open(root / name, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
    else:
        (root / name).write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )


def clean_dataset(root: Path) -> Path:
    """Six good clips in three languages, several formats/rates (also used by the component tests)."""
    (root / "clips").mkdir(parents=True, exist_ok=True)
    specs = [
        ("el0.wav", 16000, 1, "Καλημέρα σας, τι κάνετε;", "el-GR", "el_a"),
        ("el1.flac", 22050, 1, "Ο καιρός είναι ωραίος 2024.", "el-GR", "el_b"),
        ("bg0.ogg", 16000, 1, "Здравейте! Как сте?", "bg-BG", "bg_a"),
        ("bg1.wav", 44100, 2, "Днес е „хубав“ ден.", "bg-BG", "bg_b"),
        ("es0.wav", 48000, 1, "¿Qué tal? ¡Muy bien, señor!", "es-ES", "es_a"),
        ("es1.flac", 16000, 1, "Cuesta 5 € (más o menos).", "es-ES", "es_b"),
    ]
    rows = []
    for name, sr, ch, text, lang, spk in specs:
        sf.write(root / "clips" / name, _speech(sr, channels=ch), sr)
        rows.append({"audio": f"clips/{name}", "text": text, "lang": lang, "speaker": spk})
    write_metadata(root, rows)
    return root


# Each bad row (after a clean prefix) carries exactly one defect; `expect` maps check -> audio of failing rows.
BAD_ROWS = [
    # audio, text, lang, speaker, id, split, check it must trip
    ("clips/zero.wav", "Hola.", "es-ES", "s1", "zero", "train", "audio_decodable"),
    ("clips/header.wav", "Hola.", "es-ES", "s1", "header", "train", "audio_decodable"),
    ("clips/junk.wav", "Hola.", "es-ES", "s1", "junk", "train", "audio_decodable"),
    ("clips/trunc.wav", "Hola.", "es-ES", "s1", "trunc", "train", "audio_decodable"),
    ("clips/none.wav", "Hola.", "es-ES", "s1", "none", "train", "audio_exists"),
    ("../outside.wav", "Hola.", "es-ES", "s1", "dotdot", "train", "audio_in_root"),
    ("ABSOLUTE", "Hola.", "es-ES", "s1", "abs", "train", "audio_in_root"),
    ("clips/link.wav", "Hola.", "es-ES", "s1", "link", "train", "audio_in_root"),
    ("clips/short.wav", "Hola.", "es-ES", "s1", "short", "train", "duration_in_range"),
    ("clips/long.wav", "Hola. " * 10, "es-ES", "s1", "long", "train", "duration_in_range"),
    ("clips/sr8k.wav", "Hola.", "es-ES", "s1", "sr8k", "train", "sample_rate_min"),
    ("clips/ch3.wav", "Hola.", "es-ES", "s1", "ch3", "train", "channels"),
    ("clips/silent.wav", "Hola.", "es-ES", "s1", "silent", "train", "not_silent"),
    ("clips/ok1.wav", "   ", "es-ES", "s1", "notext", "train", "text_present"),
    ("clips/ok2.wav", "Hello world", "el-GR", "s2", "latin_in_greek", "val", "text_script"),
    ("clips/ok3.wav", "Привет 😀", "bg-BG", "s3", "emoji", "test", "text_script"),
    ("clips/ok4.wav", "Hola.", "xx-YY", "s1", "unknown_lang", "train", "lang_known"),
    ("clips/ok5.wav", "Hola.", "es-ES", "", "nospeaker", "train", "speaker_present"),
    ("clips/ok6.wav", "Hola.", "es-ES", "s1", "dup", "train", "id_unique"),
    ("clips/ok7.wav", "Hola.", "es-ES", "s1", "dup", "train", "id_unique"),
    ("clips/ok8.wav", "Hola.", "es-ES", "s1", "bad id/x", "train", "id_format"),
    ("clips/ok9.wav", "Hola.", "es-ES", "s1", "badsplit", "dev", "split_valid"),
    ("clips/ok10.wav", "Hola.", "es-ES", "s2", "s2_in_train", "train", "speaker_split_disjoint"),
    ("clips/ok11.wav", "Hola.", "es-ES", "s1", "same_audio", "train", "audio_unique"),
    ("clips/copy_of_ok2.wav", "Hola.", "es-ES", "s3", "leak", "test", "split_leak"),
    ("clips/hot.wav", "Hola.", "es-ES", "s1", "clipped", "train", "not_clipped"),
    ("clips/quiet.wav", "Hola.", "es-ES", "s1", "quiet", "train", "not_near_silent"),
    ("clips/flac.wav", "Hola.", "es-ES", "s1", "flac_named_wav", "train", "audio_extension"),
    (
        "clips/ok12.wav",
        "Hola, ¿qué tal? Muy bien, gracias, ¿y usted?",
        "es-ES",
        "s1",
        "misaligned",
        "train",
        "chars_per_second",
    ),
    ("clips/pcm.raw", "Hola.", "es-ES", "s1", "raw_undeclared", "train", "audio_decodable"),
    ("clips/pcm.raw", "Hola.", "es-ES", "s1", "raw_bad_decl", "train", "audio_decodable"),
    ("clips/trunc.sph", "Hola.", "es-ES", "s1", "sphere_trunc", "train", "audio_decodable"),
]
RAW_DECLARED = {"raw_bad_decl": ("s16", "16000", "1")}


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    root = base / "data"
    clips = root / "clips"
    clips.mkdir(parents=True)
    good = _speech()
    for i in range(1, 13):  # distinct content: audio_unique compares content hashes
        sf.write(clips / f"ok{i}.wav", _speech(freq=200 + 10 * i), 16000, subtype="PCM_16")
    (clips / "copy_of_ok2.wav").write_bytes((clips / "ok2.wav").read_bytes())
    sf.write(clips / "hot.wav", np.clip(5 * _speech(), -1, 1), 16000)
    sf.write(clips / "quiet.wav", 1e-3 * _speech(), 16000, subtype="FLOAT")
    sf.write(clips / "flac.wav", good, 16000, format="FLAC")
    (clips / "pcm.raw").write_bytes((good * 32767).astype("<i2").tobytes())
    sf.write(clips / "ok.sph", good, 16000, format="NIST", subtype="PCM_16")
    (clips / "trunc.sph").write_bytes((clips / "ok.sph").read_bytes()[:3000])
    (clips / "zero.wav").write_bytes(b"")
    pcm = (clips / "ok1.wav").read_bytes()
    (clips / "header.wav").write_bytes(pcm[:44])
    (clips / "junk.wav").write_bytes(b"<html>not audio</html>" * 50)
    (clips / "trunc.wav").write_bytes(pcm[: len(pcm) // 2])
    (base / "outside.wav").write_bytes(pcm)
    os.symlink(base / "outside.wav", clips / "link.wav")
    sf.write(clips / "short.wav", _speech(seconds=0.1), 16000)
    sf.write(clips / "long.wav", _speech(seconds=31), 16000)
    sf.write(clips / "sr8k.wav", _speech(8000), 8000)
    sf.write(clips / "ch3.wav", _speech(channels=3), 16000)
    sf.write(clips / "silent.wav", np.zeros(16000, np.float32), 16000)
    rows = [
        {
            "audio": a if a != "ABSOLUTE" else str(base / "outside.wav"),
            "text": t,
            "lang": lg,
            "speaker": s,
            "id": i,
            "split": sp,
        }
        for a, t, lg, s, i, sp, _ in BAD_ROWS
    ]
    for r in rows:
        if r["id"] in RAW_DECLARED:
            r["raw_format"], r["raw_sample_rate"], r["raw_channels"] = RAW_DECLARED[r["id"]]
    next(r for r in rows if r["id"] == "same_audio")["audio"] = "clips/ok1.wav"  # reuses ok1's file
    write_metadata(root, rows, "metadata.jsonl")
    res = validate_dataset(root, base / "out", min_duration=0.3, max_duration=30.0)
    return res, rows


def failing_ids(res, rows, check):
    by_line = {i + 1: r["id"] for i, r in enumerate(rows)}  # jsonl: one record per line
    return sorted({by_line[f.line] for f in res.failures if f.check == check})


@pytest.mark.parametrize("check", sorted({c for *_, c in BAD_ROWS}))
def test_each_check_flags_exactly_its_rows(bad, check):
    res, rows = bad
    expected = {line for line, (*_, c) in enumerate(BAD_ROWS, 1) if c == check}
    line_of = {r["id"]: line for line, r in enumerate(rows, 1)}
    if check == "audio_unique":
        expected.add(line_of["notext"])  # ok1.wav is shared by "notext" and "same_audio"
    if check == "speaker_split_disjoint":
        expected.add(line_of["latin_in_greek"])  # s2 is declared in val there, in train on the other row
    if check in ("audio_unique", "split_leak"):
        expected.add(line_of["latin_in_greek"])  # ok2.wav (val) has the same bytes as copy_of_ok2.wav (test)
        expected.add(line_of["leak"])
    if check == "not_near_silent":
        expected.add(line_of["silent"])  # digital silence is also below any loudness floor
    assert {f.line for f in res.failures if f.check == check} == expected
    assert res.check_counts[check] == len(expected)


def test_failure_reasons_are_specific(bad):
    res, rows = bad
    reasons = {(failing_ids_row(rows, f.line), f.check): f.reason for f in res.failures}
    assert reasons[("zero", "audio_decodable")].startswith("empty_file")
    assert reasons[("header", "audio_decodable")].startswith("no_audio")
    assert reasons[("junk", "audio_decodable")].startswith("undecodable")
    assert reasons[("trunc", "audio_decodable")].startswith("truncated")
    assert "escapes the dataset root via '..'" in reasons[("dotdot", "audio_in_root")]
    assert "absolute path" in reasons[("abs", "audio_in_root")]
    assert "symlink" in reasons[("link", "audio_in_root")]
    assert "0.100 s outside [0.3, 30.0]" in reasons[("short", "duration_in_range")]
    assert "U+0048 LATIN CAPITAL LETTER H" in reasons[("latin_in_greek", "text_script")]
    assert "GRINNING FACE" in reasons[("emoji", "text_script")]
    assert "'xx-YY' is not in the model's prompt dictionary" in reasons[("unknown_lang", "lang_known")]
    assert (
        "also on line(s) 20" in reasons[("dup", "id_unique")]
        or "also on line(s) 19" in reasons[("dup", "id_unique")]
    )
    assert "speaker 's2' appears in splits train, val" == reasons[("s2_in_train", "speaker_split_disjoint")]
    assert reasons[("raw_undeclared", "audio_decodable")].startswith("undecodable: headerless PCM: declare")
    assert reasons[("raw_bad_decl", "audio_decodable")].startswith("bad_raw_format: raw_format 's16'")
    assert reasons[("sphere_trunc", "audio_decodable")].startswith("truncated: SPHERE header declares 9600")
    assert "the same audio is in splits test, val" in reasons[("leak", "split_leak")]
    assert "same audio content as line(s)" in reasons[("leak", "audio_unique")]
    assert "% of samples at full scale" in reasons[("clipped", "not_clipped")]
    assert "dBFS RMS < -60.0 dBFS" in reasons[("quiet", "not_near_silent")]
    assert "extension '.wav' but the content is FLAC/PCM_16" in reasons[("flac_named_wav", "audio_extension")]
    assert "letters/s" in reasons[("misaligned", "chars_per_second")]


def failing_ids_row(rows, line):
    return rows[line - 1]["id"]


def test_bad_dataset_fails_with_outputs_and_summary(bad):
    res, rows = bad
    assert not res.passed and res.n_rows == len(rows)
    # notext shares ok1.wav but fails text_present
    # same_audio is an error since identical audio can leak across speakers/splits (issue 15)
    warning_only = {"sr8k", "ch3", "silent", "clipped", "quiet", "flac_named_wav", "misaligned"}
    assert res.n_warning_rows == len(warning_only)
    assert res.n_failed_rows == len(rows) - len(warning_only)
    assert set(res.check_counts) == set(CHECKS_BY_NAME)
    # one screen: header, stats, one line per check, first failing rows, where the rest is
    lines = res.summary.splitlines()
    assert len(lines) <= 40 and lines[0].startswith("Data validation FAILED")
    assert any(line.split()[:2] == ["audio_in_root", "error"] and line.split()[2] == "3" for line in lines)
    assert "line 1 clips/zero.wav: [audio_decodable] empty_file" in res.summary
    report = json.loads(res.report_path.read_text())
    assert report["passed"] is False and report["checks"]["audio_in_root"]["failed_rows"] == 3
    with res.failures_path.open() as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["line", "file", "check", "severity", "reason"] and len(table) == len(
        res.failures
    )
    assert res.data_docs_path.is_file() and res.data_docs_path.name == "index.html"
    page = res.data_docs_page.read_text()
    assert "path_error" in page and "raw_asr_dataset" in page
    single = write_single_page(res, res.report_path.parent / "single.html")
    text = single.read_text()
    assert "Data validation FAILED" in text and "srcdoc=" in text and "escapes the dataset root" in text


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = clean_dataset(tmp_path_factory.mktemp("clean") / "data")
    return root, validate_dataset(root, root.parent / "out", data_docs=False)


def test_clean_dataset_passes(clean):
    root, res = clean
    assert res.passed, res.summary
    assert res.n_rows == 6 and res.n_failed_rows == 0 and res.failures == []
    assert all(n == 0 for n in res.check_counts.values())
    assert "split_valid" not in res.check_counts  # no split column, no split checks
    assert res.rows_per_lang == {"el-GR": 2, "bg-BG": 2, "es-ES": 2}
    assert res.data_docs_path is None and res.summary.startswith("Data validation PASSED")
    assert res.hours_decodable == pytest.approx(6 * 0.6 / 3600, rel=1e-3)


def test_hard_checks_and_prompt_dictionary_are_configurable(clean, tmp_path):
    root, _ = clean
    # a prompt dictionary without bg-BG: bg rows fail lang_known unless that check is demoted to a warning
    prompts = {"el-GR": 0, "es-ES": 1}
    res = validate_dataset(root, tmp_path / "a", prompt_dictionary=prompts, data_docs=False)
    assert not res.passed and res.check_counts["lang_known"] == 2
    hard = [c for c, spec in CHECKS_BY_NAME.items() if spec.severity == "error" and c != "lang_known"]
    res = validate_dataset(root, tmp_path / "b", prompt_dictionary=prompts, hard_checks=hard, data_docs=False)
    assert res.passed and res.n_warning_rows == 2
    assert all(f.severity == "warning" for f in res.failures)
    with pytest.raises(ValueError, match="unknown check"):
        validate_dataset(root, tmp_path / "c", hard_checks=["no_such_check"])


# ------------------------------------------------------------------------------ pure helpers


def test_resolve_audio(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.wav").write_bytes(b"x")
    (tmp_path / "secret.wav").write_bytes(b"x")
    os.symlink(root / "a", root / "alias")  # symlink that stays inside: fine
    os.symlink(tmp_path, root / "up")  # folder symlink leading out
    assert resolve_audio(root, "a/x.wav") == ((root / "a" / "x.wav").resolve(), None)
    assert resolve_audio(root, "a/../a/x.wav")[1] is None
    assert resolve_audio(root, str(root / "a" / "x.wav"))[1] is None  # absolute but inside
    assert resolve_audio(root, "alias/x.wav")[1] is None
    assert "'..'" in resolve_audio(root, "a/../../secret.wav")[1]
    assert "absolute path" in resolve_audio(root, str(tmp_path / "secret.wav"))[1]
    assert "symlink" in resolve_audio(root, "up/secret.wav")[1]
    assert resolve_audio(root, "")[1] == "audio path is empty"


@pytest.mark.parametrize(
    "text, lang, bad",
    [
        ("Καλημέρα, κόσμε! 123 «ναι» ;", "el-GR", ""),
        ("Ελλάδα and Greece", "el-GR", "andGrec"),
        ("Здравей, свят — 2024 г.", "bg-BG", ""),
        ("Здравей, world", "bg-BG", "world"),
        ("Señor Müller, ¿qué tal? 5 € 10%", "es-ES", ""),
        ("Hola привет", "es-ES", "привет"),
        ("Hi 👋", "en-US", "👋"),
        ("tab\there", "en-US", "\t"),
        ("e\u0301 decomposed accent", "fr-FR", ""),
        ("anything", "tlh", None),  # no known script: cannot judge
    ],
)
def test_invalid_characters(text, lang, bad):
    got = invalid_characters(text, lang)
    assert got == (None if bad is None else "".join(dict.fromkeys(bad)))


def test_read_metadata_variants_and_errors(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    with pytest.raises(DatasetError, match="no metadata.csv or metadata.jsonl"):
        read_metadata(root)
    (root / "metadata.csv").write_text('\ufeffaudio,text,lang,speaker\nclips/a b.wav,"Hi, you",en-US,s\n\n')
    meta = read_metadata(root)
    assert not meta.has_split and not meta.has_id
    row = meta.rows[0]
    assert (row.line, row.audio, row.text, row.id) == (2, "clips/a b.wav", "Hi, you", "clips__a_b")
    (root / "metadata.jsonl").write_text("{}\n")
    with pytest.raises(DatasetError, match="both metadata.csv and metadata.jsonl"):
        read_metadata(root)
    (root / "metadata.jsonl").unlink()
    (root / "metadata.csv").write_text("audio,text,lang\nx.wav,hi,en-US\n")
    with pytest.raises(DatasetError, match=r"metadata.csv: missing required column\(s\) speaker"):
        read_metadata(root)
    (root / "metadata.csv").write_text("audio,text,lang,speaker\nx.wav,hi, there,en-US,s\n")
    # a bad record is a named row error (metadata_row check), not the whole dataset's
    bad_row = read_metadata(root).rows[0]
    assert bad_row.line == 2 and bad_row.error.startswith("metadata_fields: 5 fields but the header has 4")
    (root / "metadata.csv").write_text("audio,text,lang,speaker\n")
    with pytest.raises(DatasetError, match="no rows"):
        read_metadata(root)
    (root / "metadata.csv").unlink()
    (root / "metadata.jsonl").write_text(
        '{"audio": "a.wav", "text": "x", "lang": "en-US", "speaker": 7}\n{oops\n'
    )
    rows = read_metadata(root).rows
    assert rows[0].error is None and rows[0].speaker == "7"
    assert rows[1].line == 2 and rows[1].error.startswith("metadata_json: not valid JSON")


def test_derive_id_and_default_prompts():
    assert derive_id("clips/el/0001.ogg") == "clips__el__0001"
    assert derive_id("../x y.wav") == "x_y"
    prompts = default_prompt_dictionary()
    assert {"el-GR", "bg-BG", "es-ES", "en-US"} <= set(prompts)


def test_thresholds_decide_pass_warn_fail(clean, tmp_path):
    root, _ = clean
    # the clean clips are 0.6 s: "¿Qué tal? ¡Muy bien, señor!" is 20 letters -> 33 letters/s
    res = validate_dataset(root, tmp_path / "a", data_docs=False, max_chars_per_second=30.0)
    assert res.status == "warned" and res.passed and res.check_counts["chars_per_second"] >= 1
    assert res.summary.startswith("Data validation WARNED")
    # the same check made hard: one row of six fails -> failed, unless 1/6 of rows may fail
    hard = [c for c, spec in CHECKS_BY_NAME.items() if spec.severity == "error"] + ["chars_per_second"]
    kw = dict(data_docs=False, max_chars_per_second=30.0, hard_checks=hard)
    failed = validate_dataset(root, tmp_path / "b", **kw)
    n = failed.n_failed_rows
    assert failed.status == "failed" and not failed.passed and 1 <= n < 6
    tolerated = validate_dataset(root, tmp_path / "c", max_failed_fraction=n / 6, **kw)
    assert tolerated.status == "warned" and tolerated.passed and "(tolerated: " in tolerated.summary
    report = json.loads(tolerated.report_path.read_text())
    assert report["status"] == "warned" and report["params"]["max_chars_per_second"] == 30.0
    for bad in (
        dict(min_chars_per_second=5, max_chars_per_second=2),
        dict(max_clipped=2),
        dict(min_duration=-1),
    ):
        with pytest.raises(ValueError):
            validate_dataset(root, tmp_path / "d", data_docs=False, **bad)


def test_sphere_and_declared_raw_pcm_pass(tmp_path):
    root = clean_dataset(tmp_path / "data")
    x = _speech(8000, seconds=1.0)
    sf.write(root / "clips" / "en.sph", _speech(16000, seconds=1.0), 16000, format="NIST", subtype="PCM_16")
    (root / "clips" / "en_raw.pcm").write_bytes((x * 32767).astype(">i2").tobytes())
    rows = list(csv.DictReader(open(root / "metadata.csv", encoding="utf-8")))
    rows += [
        {"audio": "clips/en.sph", "text": "Good morning.", "lang": "en-US", "speaker": "en_a"},
        {
            "audio": "clips/en_raw.pcm",
            "text": "Good evening.",
            "lang": "en-US",
            "speaker": "en_b",
            "raw_format": "s16be",
            "raw_sample_rate": "8000",
            "raw_channels": "1",
        },
    ]
    write_metadata(root, rows)
    res = validate_dataset(root, tmp_path / "out", data_docs=False)
    assert res.status == "warned" and res.passed, res.summary  # only the 8 kHz sample_rate_min warning
    assert [(f.file, f.check) for f in res.failures] == [("clips/en_raw.pcm", "sample_rate_min")]
    assert res.hours_decodable == pytest.approx((6 * 0.6 + 2.0) / 3600, rel=1e-3)


def test_data_md_check_table_is_generated_from_the_check_records():
    from components.validate_data.checks import CHECKS, checks_table

    doc = (Path(__file__).resolve().parents[2] / "docs" / "DATA.md").read_text(encoding="utf-8")
    assert checks_table() in doc
    assert len({c.name for c in CHECKS}) == len(CHECKS)


def test_data_docs_render_styled_with_no_network(bad):
    """GX's pages load their stylesheets and scripts from public CDNs: offline (air-gapped clusters, a laptop
    on a train) they showed unstyled. Every page of the site, and the one-file kfp artifact, is offline."""
    from components.validate_data.offline_docs import REMOTE_REF

    res, _ = bad
    pages = sorted(res.data_docs_path.parent.rglob("*.html"))
    assert pages
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not REMOTE_REF.search(text), f"{page}: {REMOTE_REF.search(text).group(0)}"
        assert not re.search(r"<(link|script)\b[^>]*(href|src)=[\"']?https?:", text), page
        assert "offline Data Docs styles" in text and ".table th" in text, page
    single = write_single_page(res, res.report_path.parent / "single.html").read_text(encoding="utf-8")
    import html as html_mod

    assert not re.search(r"<(link|script)\b[^>]*(href|src)=[\"']?https?:", html_mod.unescape(single))


def test_the_step_keeps_failures_and_data_docs_where_it_says(clean, tmp_path):
    """The step's summary names failures.csv and the Data Docs site; they were in a temp dir that was gone by
    the time anyone read the summary (the demo printed /tmp/tmp.../failures.csv)."""
    from components.validate_data.core import run_step

    root, _ = clean
    res, _ = run_step(root, tmp_path / "data_docs", tmp_path / "report", details_dir=tmp_path / "validation")
    named = [
        line.split(": ", 1)[1]
        for line in res.summary.splitlines()
        if line.startswith(("All failures:", "Data Docs:"))
    ]
    assert len(named) == 2
    for path in named:
        assert Path(path).is_file() and Path(path).is_relative_to(tmp_path), path
