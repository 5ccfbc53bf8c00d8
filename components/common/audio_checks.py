"""Why a file cannot be used as audio: `AudioError` and its reason codes, the decode caps checked before any
sample is allocated, and the container checks libsndfile does not make itself (NIST SPHERE compression and
truncation). Kept apart from audio.py's decoders so what can be refused reads as one list."""

from __future__ import annotations

import os
from pathlib import Path

# Decode caps, checked from the header (or, for streams of unknown length, while reading) before samples are
# allocated: 10 h of silence is a few MB of FLAC and ~4.6 GB of float32; a WAV header claiming 1 Hz and 1 M
# frames would resample to ~64 GB. 600 s is 20x the validation's default max_duration (30 s), so a clip that
# is merely too long is still decoded and reported with its real duration.
MAX_DECODE_SECONDS = 600.0
MAX_DECODE_BYTES = 1 << 30  # float32 samples x channels of one file
MIN_DECODE_RATE = 1000  # Hz: below this a header is nonsense, and resampling it up costs 16000/rate x memory


class AudioError(ValueError):
    """A file cannot be used as audio. `reason` is a short stable code; the message names the file."""

    REASONS = (
        "missing",  # no such file
        "empty_file",  # 0 bytes
        "undecodable",  # libsndfile recognises no audio container (text, HTML, random bytes, undeclared raw)
        "unsupported",  # a known container with a codec libsndfile lacks (shorten-compressed SPHERE)
        "no_audio",  # a valid header and no frames
        "truncated",  # fewer frames/bytes than the header declares, or a partial last raw frame
        "corrupt",  # decoding failed midway
        "non_finite",  # NaN/inf samples (float files)
        "bad_raw_format",  # the metadata's raw PCM declaration is invalid
        "raw_has_header",  # declared headerless, but the bytes start with a known container header
        "too_large",  # header or streaming probe says it exceeds the decode cap (refused before allocating)
    )

    def __init__(self, path: str | os.PathLike, reason: str, detail: str):
        assert reason in self.REASONS, reason
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: {reason}: {detail}")


def check_decode_size(
    path: str | os.PathLike, frames: int, sample_rate: int, channels: int, max_seconds: float | None = None
) -> None:
    """Raise AudioError too_large/unsupported when decoding `frames` would exceed the caps (module docs)."""
    cap = MAX_DECODE_SECONDS if max_seconds is None else max_seconds
    if sample_rate < MIN_DECODE_RATE:
        raise AudioError(
            path, "too_large", f"sample rate {sample_rate} Hz < {MIN_DECODE_RATE} Hz (a bogus header?)"
        )
    seconds = frames / sample_rate
    if seconds > cap:
        raise AudioError(path, "too_large", f"{seconds:.0f} s of audio > the decode cap of {cap:g} s")
    if frames * channels * 4 > MAX_DECODE_BYTES:
        raise AudioError(
            path,
            "too_large",
            f"{frames} frames x {channels} channels would take {frames * channels * 4 >> 20} MiB "
            f"> {MAX_DECODE_BYTES >> 20} MiB",
        )


def _sphere_header(path: Path) -> dict[str, str] | None:
    """Fields of a NIST SPHERE header ('NIST_1A'), or None for other files.

    libsndfile shortens a truncated SPHERE file to the bytes present and cannot decode compressed ones
    (shorten, wavpack), so we read `sample_count` and `sample_coding` ourselves to name those cases.
    """
    with path.open("rb") as f:
        head = f.read(1024)
    if not head.startswith(b"NIST_1A"):
        return None
    fields: dict[str, str] = {}
    for line in head.split(b"\n")[2:]:
        if line.startswith(b"end_head"):
            break
        parts = line.decode("ascii", "replace").split(None, 2)
        if len(parts) == 3:
            fields[parts[0]] = parts[2].strip()
    try:
        fields["_header_bytes"] = str(int(head.split(b"\n")[1].strip()))
    except (IndexError, ValueError):
        pass
    return fields


def check_sphere(p: Path) -> None:
    hdr = _sphere_header(p)
    if hdr is None:
        return
    coding = hdr.get("sample_coding", "pcm").lower()
    if any(c in coding for c in ("shorten", "wavpack", "shn")):
        raise AudioError(
            p, "unsupported", f"NIST SPHERE with {coding!r} compression (decompress it first, e.g. sph2pipe)"
        )
    try:
        count = int(hdr["sample_count"])
        nbytes = int(hdr.get("sample_n_bytes", "2")) * int(hdr.get("channel_count", "1"))
        header = int(hdr.get("_header_bytes", "1024"))
    except (KeyError, ValueError):
        return
    present = p.stat().st_size - header
    if present < count * nbytes:
        raise AudioError(
            p,
            "truncated",
            f"SPHERE header declares {count} frames ({count * nbytes} bytes), file holds {present}",
        )


# Containers libsndfile cannot open, recognised by their first bytes (issue 16: users bring phone/web audio).
_CONVERT = "convert it first, e.g. `ffmpeg -i in.m4a -ar 16000 -ac 1 out.flac` (Opus in Ogg is decoded as is)"


def _container_of(head: bytes) -> str | None:
    if head[4:8] == b"ftyp":
        return "MP4/M4A (AAC or ALAC)"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "WebM/Matroska (Opus, Vorbis or AAC)"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "ASF/WMA"
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xF6) == 0xF0:  # ADTS sync word, layer 0
        return "AAC (ADTS)"
    return None


def check_container(p: Path) -> None:
    """AudioError `unsupported`, naming the container and what to do, for MP4/M4A, WebM/Matroska, WMA and raw
    AAC: no decoder here reads them (libsndfile has no AAC/MP4/Matroska support), so they are refused by
    name rather than reported as `undecodable`."""
    try:
        with p.open("rb") as f:
            head = f.read(16)
    except OSError:
        return
    container = _container_of(head)
    if container:
        raise AudioError(p, "unsupported", f"{container} is not decoded here; {_CONVERT}")
