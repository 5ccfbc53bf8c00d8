"""A hostile-input corpus, generated here: >= 30 kinds of broken audio files and metadata records.

The data stage must handle or reject every one with a named reason: validate_data names a failing check for
each bad line, build_manifest (given the validation report, and without it) leaves each rejected line out and
lists it with a reason code, and no line is ever lost silently: every line of the metadata ends in a manifest
or in the skipped list. Nothing may raise.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from components.build_manifest.core import build_manifests
from components.common.manifest import read_manifest
from components.materialize_data.core import DataVersionError, dvc_md5
from components.validate_data.core import validate_dataset


def _tone(sr: int = 16000, seconds: float = 0.8, freq: float = 220.0) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(sr * seconds)) / sr)).astype(np.float32)


def _wav_header(sr: int, channels: int, bits: int, data_bytes: int, tag: int = 1) -> bytes:
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, sr, sr * align, align, bits)
    riff = struct.pack("<I", (36 + data_bytes) & 0xFFFFFFFF)
    return (
        b"RIFF" + riff + b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data_bytes)
    )


class Corpus:
    """Writes files under `root` and metadata lines; remembers what each line must be reported as."""

    def __init__(self, root: Path):
        self.root = root
        (root / "clips").mkdir(parents=True)
        self.lines: list[str] = []
        self.expect: dict[int, str | None] = {}  # line -> check that must fail (None: must be accepted)
        self.n = 0

    def file(self, name: str, data: bytes | None = None, audio: np.ndarray | None = None, sr: int = 16000,
             **kw) -> str:  # fmt: skip
        path = self.root / "clips" / name
        if audio is not None:
            sf.write(path, audio, sr, **kw)
        elif data is not None:
            path.write_bytes(data)
        return f"clips/{name}"

    def good(self) -> str:
        self.n += 1
        return self.file(f"good{self.n}.wav", audio=_tone(freq=150 + 23 * self.n))

    def row(
        self, expect: str | None, audio: str | None = None, raw_line: str | None = None, **fields
    ) -> None:
        self.n += 1
        rec = {
            "audio": audio if audio is not None else self.good(),
            "text": "Hola, buenos días.",
            "lang": "es-ES",
            "speaker": f"spk{self.n}",
            "id": f"row{self.n}",
        }
        rec.update(fields)
        self.lines.append(raw_line if raw_line is not None else json.dumps(rec, ensure_ascii=False))
        self.expect[len(self.lines)] = expect

    def write(self, extra: bytes = b"") -> None:
        (self.root / "metadata.jsonl").write_bytes("\n".join(self.lines).encode("utf-8") + b"\n" + extra)


def hostile_corpus(root: Path, outside: Path) -> Corpus:
    c = Corpus(root)
    tone = _tone()
    pcm = (tone * 32767).astype("<i2").tobytes()
    # --- accepted, as controls (clean rows in several speakers so the seeded split has material)
    for _ in range(4):
        c.row(None)
    _broken_audio(c, tone, pcm)
    # --- handled: decoded anyway (a warning at most), so they must reach the manifests
    c.row(None, c.file("flac_named.wav", audio=_tone(freq=610), format="FLAC"))  # wrong extension
    c.row(
        None, c.file("stream.wav", _wav_header(16000, 1, 16, 0xFFFFFFFF) + pcm[:-2] + b"\x00\x10")
    )  # streamed
    c.row(None, c.file("silent.wav", audio=np.zeros(16000, np.float32)), text="Hola.")  # silence: a warning
    _hostile_paths(c, root, outside)
    # --- identical audio under two speakers: both copies rejected
    dup = c.file("dup_a.wav", audio=_tone(freq=999))
    (root / "clips" / "dup_b.wav").write_bytes((root / "clips" / "dup_a.wav").read_bytes())
    c.row("audio_unique", dup)
    c.row("audio_unique", "clips/dup_b.wav")
    _hostile_records(c)
    return c


def _broken_audio(c: Corpus, tone: np.ndarray, pcm: bytes) -> None:
    # --- broken audio files
    c.row("audio_decodable", c.file("empty.wav", b""))  # 0 bytes
    c.row("audio_decodable", c.file("header_only.wav", _wav_header(16000, 1, 16, 0)))
    c.row(
        "audio_decodable", c.file("truncated.wav", _wav_header(16000, 1, 16, len(pcm)) + pcm[: len(pcm) // 3])
    )
    c.row("audio_decodable", c.file("text.wav", b"this is not audio at all\n" * 20))
    c.row("audio_decodable", c.file("page.flac", b"<!DOCTYPE html><html><body>404</body></html>" * 10))
    c.row("audio_decodable", c.file("random.mp3", np.random.default_rng(1).bytes(4096)))
    c.row("audio_decodable", c.file("undeclared.pcm", pcm))  # raw PCM, no layout declared
    c.row("audio_decodable", c.file("has_header.raw", _wav_header(16000, 1, 16, len(pcm)) + pcm),
          raw_format="s16le", raw_sample_rate="16000")  # fmt: skip
    c.row("audio_decodable", c.file("badfmt.raw", pcm), raw_format="s13le", raw_sample_rate="16000")
    c.row(
        "audio_decodable", c.file("partial.raw", pcm + b"\x01"), raw_format="s16le", raw_sample_rate="16000"
    )
    nan = tone.copy()
    nan[100] = np.nan
    c.row("audio_decodable", c.file("nan.wav", audio=nan, subtype="FLOAT"))
    c.row(
        "audio_decodable", c.file("one_hz.wav", _wav_header(1, 1, 8, 1 << 16) + bytes(1 << 16))
    )  # size bomb
    c.row("audio_decodable", c.file("zero_channels.wav", _wav_header(16000, 0, 16, 1000) + bytes(1000)))
    c.row("audio_decodable", c.file("shorten.sph", b"NIST_1A\n   1024\nsample_coding -s11 pcm,embedded-shorten-v2.00\n"
                                   b"sample_count -i 16000\nend_head\n".ljust(1024, b" ") + bytes(2000)))  # fmt: skip
    c.row(
        "audio_decodable", c.file("odd_tag.wav", _wav_header(16000, 1, 16, len(pcm), tag=0x55) + pcm)
    )  # MP3 tag
    c.row("duration_in_range", c.file("tiny.wav", audio=_tone(seconds=0.05)))


def _hostile_paths(c: Corpus, root: Path, outside: Path) -> None:
    # --- paths
    c.row("audio_exists", "clips/missing.wav")
    c.row("audio_exists", "clips")  # a folder
    c.row("audio_in_root", "../outside.wav")
    c.row("audio_in_root", str(outside))
    os.symlink(outside, root / "clips" / "link_out.wav")
    c.row("audio_in_root", "clips/link_out.wav")
    os.symlink("loop_b.wav", root / "clips" / "loop_a.wav")
    os.symlink("loop_a.wav", root / "clips" / "loop_b.wav")
    c.row("audio_exists", "clips/loop_a.wav")
    c.row("metadata_row", "clips/a\x00b.wav")  # a NUL byte, JSON-escaped


def _hostile_records(c: Corpus) -> None:
    # --- metadata records
    c.row("metadata_row", text="Hola\u2028adiós.")  # U+2028 inside a JSON string
    c.row("metadata_row", text="Hola\u0085.")  # NEXT LINE
    c.row("metadata_row", text="Hola\u0007.")  # BEL
    c.row("metadata_row", raw_line='{"audio": "clips/x.wav", "text": oops}')
    c.row("metadata_row", raw_line='["clips/x.wav", "Hola.", "es-ES", "s"]')
    c.row("metadata_row", text=["Hola", "adiós"])
    c.row(
        "metadata_row",
        raw_line='{"audio": "clips/x.wav", "text": "raw\x00nul", "lang": "es-ES", "speaker": "s"}',
    )
    c.row("text_present", text="")
    c.row("speaker_present", speaker="")
    c.row("lang_known", lang="xx-XX")
    c.row("text_script", text="Здравей, свят.")
    c.row("text_script", text="Hola 😀.")
    c.row("id_format", id="../../etc/passwd")
    c.row("id_unique", id="twin")
    c.row("id_unique", id="twin")
    c.row(None, lang="es")  # an alias of es-US: accepted, renamed
    # a line that is not UTF-8 (Latin-1 'í')
    c.write(
        b'{"audio": "clips/good1.wav", "text": "d\xedas", "lang": "es-ES", "speaker": "q", "id": "latin1"}\n'
    )
    c.lines.append("<latin-1 line>")
    c.expect[len(c.lines)] = "metadata_row"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    outside = base / "outside.wav"
    sf.write(outside, _tone(), 16000)
    root = base / "data"
    corpus = hostile_corpus(root, outside)
    val = validate_dataset(root, base / "val", data_docs=False, max_failed_fraction=1.0)
    return base, root, corpus, val


def test_the_corpus_has_at_least_30_kinds_of_broken_input(hostile):
    _, _, corpus, _ = hostile
    assert sum(1 for v in corpus.expect.values() if v is not None) >= 30


def test_validation_names_a_reason_for_every_broken_line_and_passes_the_rest(hostile):
    _, _, corpus, val = hostile
    assert val.n_rows == len(corpus.lines)
    failed: dict[int, set[str]] = {}
    for f in val.failures:
        assert f.reason, f
        if f.severity == "error":
            failed.setdefault(f.line, set()).add(f.check)
    for line, check in corpus.expect.items():
        if check is None:
            assert line not in failed, (line, corpus.lines[line - 1], failed.get(line))
        else:
            assert check in failed.get(line, set()), (line, corpus.lines[line - 1][:120], failed.get(line))


@pytest.mark.parametrize("with_report", [True, False])
def test_build_never_crashes_and_never_drops_silently(hostile, with_report):
    base, root, corpus, val = hostile
    out = base / f"m{int(with_report)}"
    res = build_manifests(root, out, val_ratio=0.2, test_ratio=0.2, workers=1,
                          validation=val.report_path if with_report else None)  # fmt: skip
    in_manifest = {r["id"] for s in ("train", "val", "test") for r in read_manifest(out / f"{s}.jsonl")}
    skipped = {s["line"]: s["reason"] for s in res.skipped}
    accepted_lines = {line for line, check in corpus.expect.items() if check is None}
    assert len(in_manifest) + len(skipped) == len(corpus.lines)  # every line is accounted for
    assert all(reason.split(":", 1)[0].strip() for reason in skipped.values())
    assert not set(skipped) & accepted_lines, {k: skipped[k] for k in set(skipped) & accepted_lines}
    if with_report:  # exactly the rejected lines are left out
        assert set(skipped) == {r["line"] for r in val.rejected_rows}
    rows = [r for s in ("train", "val", "test") for r in read_manifest(out / f"{s}.jsonl")]
    assert {r["lang"] for r in rows} == {"es-ES", "es-US"}


def test_dvc_md5_names_the_file_it_cannot_hash_in_the_hostile_corpus(hostile):
    """The lineage's md5 is DVC's: a folder `dvc add` cannot hash (a symlink loop) is refused by name."""
    _, root, _, _ = hostile
    with pytest.raises(DataVersionError, match=r"loop_a\.wav.*symbolic links.*dvc add"):
        dvc_md5(root)
