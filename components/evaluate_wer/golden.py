"""The golden set: a few gated clips with the exact text the gated candidate produced, stored at gate time and
replayed through Triton after each load (post-deploy parity, infra/k8s/base/triton/sync_champion.py).

Layout (`<evaluation out_dir>/golden/`, logged to MLflow under `evaluation/golden`):
    golden.json   {"att_context_size", "set_sha256", "items": [{"audio", "sha256", "lang", "text"}]}
    <i>.wav       16 kHz mono PCM16 clips
`text` is the candidate's offline transcript of the clip *as stored* (PCM16), i.e. what `asr_offline` must
return for it. Every clip's sha256 is checked before it is used, and `set_sha256` covers the whole list, so a
swapped clip or an edited text is refused by name instead of "passing".
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

GOLDEN_DIR = "golden"
GOLDEN_FILE = "golden.json"
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class GoldenItem:
    audio: str  #: file name inside the golden dir
    sha256: str  #: of the WAV file's bytes
    lang: str
    text: str  #: the gated model's offline transcript of this clip


@dataclass
class ParityReport:
    passed: bool
    checked: int
    mismatches: list[dict] = field(default_factory=list)  #: [{audio, lang, expected, got}]

    def to_dict(self) -> dict:
        return asdict(self)


def _wav_bytes(audio: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, dtype=np.float32), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def _set_sha(items: Sequence[GoldenItem]) -> str:
    return hashlib.sha256(json.dumps([asdict(i) for i in items], sort_keys=True).encode()).hexdigest()


def pick(langs: Sequence[str], per_lang: int) -> list[int]:
    """Indices of the first `per_lang` utterances of each language (deterministic, every language covered)."""
    seen: dict[str, int] = {}
    out = []
    for i, lg in enumerate(langs):
        if seen.get(lg, 0) < per_lang:
            seen[lg] = seen.get(lg, 0) + 1
            out.append(i)
    return out


def write_golden_set(
    out_dir: str | os.PathLike,
    audios: Sequence[np.ndarray],
    langs: Sequence[str],
    transcribe: Callable[[list[np.ndarray], list[str]], list[str]],
    att_context_size: list[int] | None,
    per_lang: int = 2,
) -> Path:
    """Store `per_lang` clips per language with `transcribe`'s text of the stored (PCM16) clip -> the dir."""
    from components.common.io import atomic_write_bytes, atomic_write_text

    d = Path(out_dir) / GOLDEN_DIR
    d.mkdir(parents=True, exist_ok=True)
    idx = pick(langs, per_lang)
    blobs = [_wav_bytes(audios[i]) for i in idx]
    stored = [_decode(b) for b in blobs]  # what Triton will be sent: the PCM16 clip, not the float original
    texts = transcribe(stored, [langs[i] for i in idx]) if idx else []
    items = []
    for n, (i, blob, text) in enumerate(zip(idx, blobs, texts, strict=True)):
        name = f"{n}.wav"
        atomic_write_bytes(d / name, blob)
        items.append(GoldenItem(name, hashlib.sha256(blob).hexdigest(), langs[i], text))
    doc = {
        "att_context_size": att_context_size,
        "set_sha256": _set_sha(items),
        "items": [asdict(i) for i in items],
    }
    atomic_write_text(d / GOLDEN_FILE, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    log.info("golden set: %d clips (%s) in %s", len(items), ", ".join(sorted(set(langs))), d)
    return d


def _decode(blob: bytes) -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(io.BytesIO(blob), dtype="float32")
    if rate != SAMPLE_RATE:
        raise ValueError(f"golden clip at {rate} Hz, expected {SAMPLE_RATE}")
    return audio


def load_golden_set(golden_dir: str | os.PathLike) -> tuple[list[GoldenItem], list[np.ndarray]]:
    """Items and their audio, every hash checked; ValueError names the file and what is wrong."""
    d = Path(golden_dir)
    f = d / GOLDEN_FILE
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
        items = [GoldenItem(**it) for it in doc["items"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{f}: not a golden set ({type(e).__name__}: {e})") from None
    if not items:
        raise ValueError(f"{f}: the golden set is empty")
    if _set_sha(items) != doc.get("set_sha256"):
        raise ValueError(f"{f}: set_sha256 does not match its items (edited after the gate?)")
    audios = []
    for it in items:
        blob = (d / it.audio).read_bytes()
        if hashlib.sha256(blob).hexdigest() != it.sha256:
            raise ValueError(f"{d / it.audio}: sha256 differs from {f} (clip replaced after the gate?)")
        audios.append(_decode(blob))
    return items, audios


def check_parity(golden_dir: str | os.PathLike, transcribe: Callable[[np.ndarray, str], str]) -> ParityReport:
    """Transcribe every golden clip with `transcribe(audio, lang)` (e.g. through Triton); pass = all equal."""
    items, audios = load_golden_set(golden_dir)
    bad = []
    for it, audio in zip(items, audios, strict=True):
        got = transcribe(audio, it.lang)
        if got != it.text:
            bad.append({"audio": it.audio, "lang": it.lang, "expected": it.text, "got": got})
    return ParityReport(passed=not bad, checked=len(items), mismatches=bad)
