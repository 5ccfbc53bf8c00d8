"""fingerprint_data: the cache key covers exactly what validate_data and build_manifest read."""

from __future__ import annotations

import json
import os

import pytest

from components.fingerprint_data.__main__ import main
from components.fingerprint_data.core import fingerprint


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    (root / "clips").mkdir(parents=True)
    (root / "clips" / "a.wav").write_bytes(b"A" * 100)
    (root / "clips" / "b.wav").write_bytes(b"B" * 50)
    rows = [{"audio": f"clips/{n}.wav", "text": "x", "lang": "es-ES", "speaker": n} for n in "ab"]
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_fingerprint_is_stable_and_counts_what_is_read(data):
    fp = fingerprint(data)
    assert fp == fingerprint(data).__class__(fp.sha256, 3, fp.n_bytes, fp.seconds) and len(fp.sha256) == 64
    assert fp.n_bytes == 150 + (data / "metadata.jsonl").stat().st_size
    assert fingerprint(data).sha256 == fp.sha256


def test_fingerprint_moves_with_content_names_and_metadata_only(data):
    base = fingerprint(data).sha256
    (data / "notes.txt").write_text("not read by any step")
    (data / ".git").mkdir()
    assert fingerprint(data).sha256 == base
    (data / "clips" / "b.wav").write_bytes(b"C" * 50)  # same size, other bytes
    changed = fingerprint(data).sha256
    assert changed != base
    (data / "clips" / "b.wav").rename(data / "clips" / "c.wav")  # the row now points at a missing file
    missing = fingerprint(data).sha256
    assert missing != changed
    text = (data / "metadata.jsonl").read_text().replace("b.wav", "c.wav")
    (data / "metadata.jsonl").write_text(text)
    assert fingerprint(data).sha256 not in (base, changed, missing)


def test_fingerprint_names_links_out_of_the_root_and_survives_bad_metadata(data, tmp_path):
    outside = tmp_path / "secret.wav"
    outside.write_bytes(b"S" * 10)
    os.symlink(outside, data / "clips" / "out.wav")
    before = fingerprint(data).sha256
    outside.write_bytes(b"T" * 10)  # refused by the steps, so not read: the key does not follow it
    assert fingerprint(data).sha256 == before
    (data / "metadata.jsonl").write_text("")  # no rows: the metadata bytes alone are the key
    assert len(fingerprint(data).sha256) == 64


def test_cli(data, capsys, tmp_path):
    assert main([str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["n_files"] == 3
    assert main([str(tmp_path / "nope")]) == 2
