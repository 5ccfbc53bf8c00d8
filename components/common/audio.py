"""Audio probing, decoding and writing: one implementation for validation, manifests and serving.

Everything goes through libsndfile (via `soundfile`): WAV/RF64/W64, FLAC, OGG (Vorbis/Opus), AIFF, CAF and,
with libsndfile >= 1.1, MP3. The module imports only numpy, scipy.signal and soundfile because it is also
imported inside the Triton python-backend process.

Properties are taken from the *decoded* samples, not from headers: headers lie (a truncated WAV still
declares its original length; MP3 frame counts are estimates), and the pipeline must know what the model
will actually hear.
"""

from __future__ import annotations

import io
import math
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from components.common.io import atomic_write_bytes

TARGET_SR = 16000
_BLOCK = 1 << 16  # frames per decode block: bounded memory per read, and a truncation point we can report
# Headers whose frame count is an estimate (MP3 without an exact Xing/LAME tag): allow this much shortfall.
_ESTIMATED_LENGTH_FORMATS = {"MP3": 0.05}
_UNKNOWN_LENGTH = 1 << 62  # libsndfile reports SF_COUNT_MAX for streams of unknown length


class AudioError(ValueError):
    """A file cannot be used as audio. `reason` is a short stable code; the message names the file."""

    REASONS = ("missing", "empty_file", "undecodable", "no_audio", "truncated", "corrupt", "non_finite")

    def __init__(self, path: str | os.PathLike, reason: str, detail: str):
        assert reason in self.REASONS, reason
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: {reason}: {detail}")


@dataclass(frozen=True)
class AudioInfo:
    """What the decoded file holds. `frames`/`duration` count decoded samples per channel."""

    sample_rate: int
    channels: int
    frames: int
    duration: float
    format: str  # libsndfile major format, e.g. "WAV", "FLAC", "OGG", "MP3"
    subtype: str  # e.g. "PCM_16", "FLOAT", "VORBIS", "OPUS", "MPEG_LAYER_III"
    peak: float  # max |sample| after decoding to float in [-1, 1]; 0.0 means digital silence

    def to_dict(self) -> dict:
        return asdict(self)


def _wav_declared_data_bytes(path: Path) -> tuple[int, int] | None:
    """(declared, present) byte sizes of a RIFF/WAVE 'data' chunk, or None if not a plain RIFF WAV.

    libsndfile silently shortens a truncated WAV to the bytes present, so the only evidence of truncation
    is the header's declared size; streaming writers declare 0 or 0xFFFFFFFF, which we do not call truncated.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                if csize in (0, 0xFFFFFFFF):
                    return None
                return csize, size - (pos + 8)
            pos += 8 + csize + (csize & 1)
    return None


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, AudioInfo]:
    """Decode a whole file to float32 `(frames, channels)` in [-1, 1] and describe it.

    Raises AudioError: missing, empty_file (0 bytes), undecodable (libsndfile cannot open it), no_audio
    (a valid header but zero frames), truncated (fewer frames than the header declares), corrupt (decoding
    failed midway), non_finite (NaN/inf samples, possible in float WAVs).
    """
    p = Path(path)
    if not p.is_file():
        raise AudioError(p, "missing", "file not found")
    if p.stat().st_size == 0:
        raise AudioError(p, "empty_file", "file is 0 bytes")
    try:
        f = sf.SoundFile(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(p, "undecodable", f"libsndfile cannot open it ({_sf_message(e)})") from None
    with f:
        declared, sr, ch, fmt, subtype = f.frames, f.samplerate, f.channels, f.format, f.subtype
        blocks: list[np.ndarray] = []
        got = 0
        try:
            while True:
                block = f.read(frames=_BLOCK, dtype="float32", always_2d=True)
                if not len(block):
                    break
                blocks.append(block)
                got += len(block)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(
                p, "corrupt", f"decoding failed after {got} of {declared} frames ({_sf_message(e)})"
            ) from None
    if got == 0:
        raise AudioError(p, "no_audio", f"{fmt} header but no audio frames")
    tolerance = _ESTIMATED_LENGTH_FORMATS.get(fmt, 0.0)
    if 0 < declared < _UNKNOWN_LENGTH and got < declared * (1 - tolerance):
        raise AudioError(p, "truncated", f"decoded {got} of {declared} frames the header declares")
    if fmt == "WAV":
        sizes = _wav_declared_data_bytes(p)
        if sizes and sizes[1] < sizes[0]:
            raise AudioError(p, "truncated", f"'data' chunk declares {sizes[0]} bytes, file holds {sizes[1]}")
    data = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    if not np.isfinite(data).all():
        raise AudioError(p, "non_finite", f"{int((~np.isfinite(data)).sum())} NaN/inf samples")
    peak = float(np.abs(data).max())
    return data, AudioInfo(sr, ch, got, got / sr, fmt, subtype, peak)


def _sf_message(e: Exception) -> str:
    msg = str(e)
    return msg.split(": ", 1)[-1] if msg.startswith("Error opening") else msg


def probe_audio(path: str | os.PathLike) -> AudioInfo:
    """Decode the file and return its properties (raises AudioError with a named reason)."""
    return read_audio(path)[1]


def to_mono(audio: np.ndarray) -> np.ndarray:
    """`(frames, channels)` -> `(frames,)` by averaging channels.

    Averaging (not picking channel 0) keeps speech recorded on either side; for phase-inverted channels it
    would cancel, which no common recording setup produces.
    """
    if audio.ndim == 1:
        return audio
    if audio.ndim != 2:
        raise ValueError(f"expected (frames,) or (frames, channels), got shape {audio.shape}")
    return audio.mean(axis=1, dtype=np.float32) if audio.shape[1] > 1 else audio[:, 0]


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = TARGET_SR) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly: anti-aliasing FIR, exact rational ratio)."""
    if orig_sr == target_sr:
        return np.ascontiguousarray(audio, dtype=np.float32)
    from scipy.signal import resample_poly  # lazy: most serving requests are already 16 kHz

    g = math.gcd(int(orig_sr), int(target_sr))
    out = resample_poly(audio.astype(np.float32, copy=False), target_sr // g, orig_sr // g, axis=0)
    return np.ascontiguousarray(out, dtype=np.float32)


def decode(path: str | os.PathLike, target_sr: int = TARGET_SR) -> tuple[np.ndarray, AudioInfo]:
    """Mono float32 at `target_sr` plus the source's AudioInfo (one decode for both)."""
    data, info = read_audio(path)
    return resample(to_mono(data), info.sample_rate, target_sr), info


def load_audio(path: str | os.PathLike, target_sr: int = TARGET_SR) -> np.ndarray:
    """Float32 mono at `target_sr` (stereo is averaged to mono; other rates are resampled)."""
    return decode(path, target_sr)[0]


def write_wav16(
    path: str | os.PathLike, audio: np.ndarray, sr: int = TARGET_SR, durable: bool = False
) -> None:
    """Write mono float audio as PCM16 WAV atomically (samples are clipped to [-1, 1] first).

    `durable=True` also fsyncs (survives power loss); the default only guarantees all-or-nothing.
    """
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"{path}: write_wav16 expects mono (frames,), got shape {audio.shape}")
    if not np.isfinite(audio).all():
        raise ValueError(f"{path}: refusing to write NaN/inf samples")
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), sr, format="WAV", subtype="PCM_16")
    # fsync only when asked: converting a corpus writes thousands of clips, and one fsync each (~10 ms here)
    # dominated the conversion time; the temp-file + rename still means no reader ever sees half a file
    atomic_write_bytes(path, buf.getvalue(), durable=durable)
