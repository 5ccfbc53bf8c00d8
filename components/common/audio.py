"""Audio probing, decoding and writing: one implementation for validation, manifests and serving.

Everything goes through libsndfile (via `soundfile`): WAV/RF64/W64 (8/16/24/32-bit integer, 32/64-bit float),
FLAC, OGG (Vorbis/Opus), AIFF, CAF, NIST SPHERE (uncompressed) and, with libsndfile >= 1.1, MP3. Headerless raw
PCM is read when the caller declares its layout (`RawFormat`, from the metadata's `raw_format`,
`raw_sample_rate`, `raw_channels` columns). The container is recognised from the bytes, not the file name; a
name that disagrees with the content is reported (`AudioInfo.extension_ok`) but does not stop decoding.
The module imports only numpy, soundfile and (lazily) soxr or scipy.signal because it is also imported inside
the Triton python-backend process.

Properties are taken from the *decoded* samples, not from headers: headers lie (a truncated WAV still
declares its original length; MP3 frame counts are estimates), and the pipeline must know what the model
will actually hear.
"""

from __future__ import annotations

import io
import math
import os
import stat
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from components.common.audio_checks import (  # noqa: F401  (re-exported: callers catch audio.AudioError)
    MAX_DECODE_BYTES,
    MAX_DECODE_SECONDS,
    MIN_DECODE_RATE,
    AudioError,
    check_container,
    check_decode_size,
    check_sphere,
)
from components.common.io import atomic_write_bytes

TARGET_SR = 16000
_BLOCK = 1 << 16  # frames per decode block: bounded memory per read, and a truncation point we can report
# Headers whose frame count is an estimate (MP3 without an exact Xing/LAME tag): allow this much shortfall.
_ESTIMATED_LENGTH_FORMATS = {"MP3": 0.05}
_UNKNOWN_LENGTH = 1 << 62  # libsndfile reports SF_COUNT_MAX for streams of unknown length


# Headerless PCM encodings a metadata file may declare (`raw_format`), as libsndfile (subtype, endian).
RAW_ENCODINGS: dict[str, tuple[str, str, int]] = {
    "s8": ("PCM_S8", "FILE", 1),
    "u8": ("PCM_U8", "FILE", 1),
    "s16le": ("PCM_16", "LITTLE", 2),
    "s16be": ("PCM_16", "BIG", 2),
    "s24le": ("PCM_24", "LITTLE", 3),
    "s24be": ("PCM_24", "BIG", 3),
    "s32le": ("PCM_32", "LITTLE", 4),
    "s32be": ("PCM_32", "BIG", 4),
    "f32le": ("FLOAT", "LITTLE", 4),
    "f32be": ("FLOAT", "BIG", 4),
    "f64le": ("DOUBLE", "LITTLE", 8),
    "f64be": ("DOUBLE", "BIG", 8),
    "mulaw": ("ULAW", "FILE", 1),
    "alaw": ("ALAW", "FILE", 1),
}
RAW_EXTENSIONS = (".raw", ".pcm", ".s16", ".s16le", ".ulaw", ".alaw")


@dataclass(frozen=True)
class RawFormat:
    """Layout of a headerless PCM file: what the bytes alone cannot say (see docs/DATA.md)."""

    encoding: str  # a key of RAW_ENCODINGS, e.g. "s16le"
    sample_rate: int
    channels: int = 1

    @property
    def frame_bytes(self) -> int:
        return RAW_ENCODINGS[self.encoding][2] * self.channels

    @classmethod
    def parse(cls, encoding: object, sample_rate: object, channels: object = 1) -> RawFormat:
        """From metadata cells (strings or numbers); ValueError names the bad field."""
        enc = str(encoding or "").strip().lower()
        if enc not in RAW_ENCODINGS:
            raise ValueError(f"raw_format {encoding!r} is not one of {', '.join(RAW_ENCODINGS)}")
        try:
            sr = int(float(str(sample_rate).strip()))
        except ValueError:
            raise ValueError(f"raw_sample_rate {sample_rate!r} is not a number") from None
        if not 1000 <= sr <= 384000:
            raise ValueError(f"raw_sample_rate {sr} is outside [1000, 384000] Hz")
        ch_text = str(channels).strip() if channels not in (None, "") else "1"
        try:
            ch = int(float(ch_text))
        except ValueError:
            raise ValueError(f"raw_channels {channels!r} is not a number") from None
        if not 1 <= ch <= 64:
            raise ValueError(f"raw_channels {ch} is outside [1, 64]")
        return cls(enc, sr, ch)

    def to_dict(self) -> dict:
        return asdict(self)


# Extension -> libsndfile major formats the content may have. Unknown extensions are not judged.
_EXTENSION_FORMATS = {
    ".wav": {"WAV", "WAVEX", "RF64", "W64"},
    ".wave": {"WAV", "WAVEX", "RF64", "W64"},
    ".rf64": {"RF64", "WAV", "WAVEX"},
    ".w64": {"W64"},
    ".flac": {"FLAC"},
    ".ogg": {"OGG"},
    ".oga": {"OGG"},
    ".opus": {"OGG"},
    ".mp3": {"MP3"},
    ".aif": {"AIFF"},
    ".aiff": {"AIFF"},
    ".aifc": {"AIFF"},
    ".sph": {"NIST"},
    ".nist": {"NIST"},
    ".caf": {"CAF"},
    ".au": {"AU"},
    ".snd": {"AU"},
    **{ext: {"RAW"} for ext in RAW_EXTENSIONS},
}
# Magic bytes of containers, to catch a file declared headerless that is not.
_MAGIC = {
    b"RIFF": "WAV",
    b"RF64": "RF64",
    b"fLaC": "FLAC",
    b"OggS": "OGG",
    b"FORM": "AIFF",
    b"NIST": "NIST",
    b"ID3": "MP3",
    b"caff": "CAF",
    b".snd": "AU",
}


def extension_matches(path: str | os.PathLike, fmt: str) -> bool:
    """False when the file name's extension names another container than the decoded one."""
    allowed = _EXTENSION_FORMATS.get(Path(path).suffix.lower())
    return allowed is None or fmt in allowed


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
    rms_dbfs: float = 0.0  # loudness of the whole clip (dB re full scale, all channels); -inf for silence
    clipped: float = 0.0  # share of samples at |x| >= CLIP_LEVEL (hard clipping shows as runs at full scale)
    extension_ok: bool = True  # the file name's extension agrees with the decoded container

    def to_dict(self) -> dict:
        return asdict(self)


def walk_riff(read_at, size: int):
    """Yield (chunk id, declared size, body offset) of a RIFF/WAVE file's chunks, from offset 12 on.

    `read_at(offset, n)` returns up to n bytes (a slice of bytes in memory, or a seek+read on a file): the
    one chunk walker for the fast in-memory decoder and for the truncation check of libsndfile's path."""
    pos = 12
    while pos + 8 <= size:
        head = read_at(pos, 8)
        if len(head) < 8:
            return
        csize = struct.unpack("<I", head[4:])[0]
        yield head[:4], csize, pos + 8
        pos += 8 + csize + (csize & 1)


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

        def read_at(offset: int, n: int) -> bytes:
            f.seek(offset)
            return f.read(n)

        for cid, csize, body in walk_riff(read_at, size):
            if cid == b"data":
                return None if csize in (0, 0xFFFFFFFF) else (csize, size - body)
    return None


# WAVE format tags the fast reader decodes itself: (tag, bits) -> (libsndfile subtype, numpy dtype, scale)
_WAV_FAST = {
    (1, 8): ("PCM_U8", "u1", 1.0 / 0x80),
    (1, 16): ("PCM_16", "<i2", 1.0 / 0x8000),
    (1, 24): ("PCM_24", None, 1.0 / 0x800000),
    (1, 32): ("PCM_32", "<i4", 1.0 / 0x80000000),
    (3, 32): ("FLOAT", "<f4", None),
    (3, 64): ("DOUBLE", "<f8", None),
}
WAV_FAST_MAX = 64 << 20  # bigger files go through libsndfile's blockwise decoding (bounded memory)


def read_wav_fast(
    path: Path, blob: bytes, max_seconds: float | None = None
) -> tuple[np.ndarray, int, int, str, str] | None:
    """Decode a plain RIFF/WAVE file already in memory with numpy -> read_samples' tuple, or None when the
    file is anything else (RF64, compressed codecs, streaming sizes, odd layouts): the caller then uses
    libsndfile. Bit-identical to libsndfile's float conversion (same scale factors, float32 arithmetic);
    skipping libsndfile's open costs ~0.3 ms a clip, half of a short WAV's conversion. Raises AudioError
    truncated / no_audio with the same reasons as the libsndfile path."""
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        return None
    fmt = None
    for cid, size, body in walk_riff(lambda offset, n: blob[offset : offset + n], len(blob)):
        if cid == b"fmt ":
            if size < 16 or body + size > len(blob):
                return None
            tag, ch, sr, _, align, bits = struct.unpack_from("<HHIIHH", blob, body)
            # WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the real tag
            if tag == 0xFFFE and size >= 40:
                bits = struct.unpack_from("<H", blob, body + 18)[0] or bits  # wValidBitsPerSample
                tag = struct.unpack_from("<H", blob, body + 24)[0]
            fmt = (tag, bits, ch, sr, align)
        elif cid == b"data":
            if fmt is None or size in (0, 0xFFFFFFFF):
                return None
            tag, bits, ch, sr, align = fmt
            kind = _WAV_FAST.get((tag, bits))
            if kind is None or ch < 1 or sr < 1 or align != ch * bits // 8:
                return None
            present = len(blob) - body
            frames = min(size, present) // align
            if frames == 0:  # checked first, as on the libsndfile path (a header-only file is no_audio)
                raise AudioError(path, "no_audio", "WAV header but no audio frames")
            check_decode_size(path, size // align, sr, ch, max_seconds)
            if present < size:
                raise AudioError(
                    path, "truncated", f"'data' chunk declares {size} bytes, file holds {present}"
                )
            subtype, dtype, scale = kind
            raw = np.frombuffer(blob, np.uint8, frames * align, body)
            if dtype is None:  # 24-bit: place the 3 bytes in the top of an int32 (sign comes for free)
                wide = np.zeros((frames * ch, 4), np.uint8)
                wide[:, 1:] = raw.reshape(-1, 3)
                x = wide.view("<i4").reshape(-1).astype(np.float32) * np.float32(scale / 256)
            elif subtype == "PCM_U8":
                x = (raw.astype(np.float32) - np.float32(128)) * np.float32(scale)
            elif scale is None:
                x = raw.view(dtype).astype(np.float32)
            else:
                x = raw.view(dtype).astype(np.float32) * np.float32(scale)
            return x.reshape(frames, ch), int(sr), int(ch), "WAV", subtype
    return None


def wav_bytes_for_fast_path(path: str | os.PathLike, raw: RawFormat | None, size: int) -> bytes | None:
    """The file's bytes when `read_wav_fast` may decode it (a .wav/.wave name, no declared raw layout, at
    most WAV_FAST_MAX bytes), else None: the caller reads a WAV once and can hash the same bytes."""
    if raw is None and size <= WAV_FAST_MAX and str(path).lower().endswith((".wav", ".wave")):
        return Path(path).read_bytes()
    return None


def _open(p: Path, raw: RawFormat | None) -> sf.SoundFile:
    if raw is None:
        if p.suffix.lower() in RAW_EXTENSIONS:
            with p.open("rb") as f:
                head = f.read(4)
            if not any(head.startswith(m) for m in _MAGIC):
                raise AudioError(
                    p,
                    "undecodable",
                    "headerless PCM: declare raw_format, raw_sample_rate and raw_channels in the metadata",
                )
            # a header after all: soundfile would treat the name as RAW, so hand libsndfile the bytes instead
            return sf.SoundFile(io.BytesIO(p.read_bytes()))
        check_sphere(p)
        check_container(p)
        return sf.SoundFile(str(p))
    if raw.encoding not in RAW_ENCODINGS:
        raise AudioError(
            p, "bad_raw_format", f"raw_format {raw.encoding!r} is not one of {', '.join(RAW_ENCODINGS)}"
        )
    with p.open("rb") as f:
        head = f.read(8)
    for magic, fmt in _MAGIC.items():
        if head.startswith(magic):
            raise AudioError(
                p,
                "raw_has_header",
                f"declared headerless {raw.encoding} but the file starts with a {fmt} header",
            )
    size = p.stat().st_size
    if size % raw.frame_bytes:
        raise AudioError(
            p,
            "truncated",
            f"{size} bytes is not a whole number of {raw.encoding} x {raw.channels} ch frames "
            f"({raw.frame_bytes} bytes each)",
        )
    subtype, endian, _ = RAW_ENCODINGS[raw.encoding]
    return sf.SoundFile(
        str(p),
        samplerate=raw.sample_rate,
        channels=raw.channels,
        subtype=subtype,
        endian=endian,
        format="RAW",
    )


CLIP_LEVEL = 0.999  # |x| at or above this is full scale (PCM16 full scale is 32767/32768 = 0.99997)


def read_audio(
    path: str | os.PathLike,
    raw: RawFormat | None = None,
    blob: bytes | None = None,
    max_seconds: float | None = None,
) -> tuple[np.ndarray, AudioInfo]:
    """Decode a whole file to float32 `(frames, channels)` in [-1, 1] and describe it.

    `raw` declares the layout of a headerless PCM file (required for .raw/.pcm files without a header).
    Raises AudioError: missing, empty_file (0 bytes), undecodable (libsndfile cannot open it), unsupported
    (a known container with a codec libsndfile lacks), no_audio (a valid header but zero frames), truncated
    (fewer frames than the header declares), corrupt (decoding failed midway), non_finite (NaN/inf samples,
    possible in float files), bad_raw_format / raw_has_header (a wrong raw declaration).
    """
    p = Path(path)
    data, sr, ch, fmt, subtype = read_samples(p, raw, blob, max_seconds)
    got = len(data)
    peak = max(float(data.max()), -float(data.min()))
    # counting full-scale samples needs a pass over |x|: only when the peak says there can be any
    clipped = float(np.count_nonzero(np.abs(data) >= CLIP_LEVEL)) / data.size if peak >= CLIP_LEVEL else 0.0
    flat = data.reshape(-1)
    power = float(np.dot(flat, flat)) / flat.size
    rms_dbfs = 10.0 * math.log10(power) if power > 0 else float("-inf")
    ext_ok = raw is not None or extension_matches(p, fmt)
    return data, AudioInfo(sr, ch, got, got / sr, fmt, subtype, peak, rms_dbfs, clipped, ext_ok)


def _read_libsndfile(
    p: Path, raw: RawFormat | None, max_seconds: float | None = None
) -> tuple[np.ndarray, int, int, str, str]:
    """read_samples' decoder for everything read_wav_fast does not take: blockwise libsndfile decoding with
    the header/length checks (undecodable, corrupt, no_audio, truncated, too_large). The size cap is checked
    on the header's frame count before the first read, and on the running count for streams whose length
    the header does not state (or understates)."""
    try:
        f = _open(p, raw)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(p, "undecodable", f"libsndfile cannot open it ({_sf_message(e)})") from None
    with f:
        declared, sr, ch, fmt, subtype = f.frames, f.samplerate, f.channels, f.format, f.subtype
        check_decode_size(p, declared if 0 < declared < _UNKNOWN_LENGTH else 0, sr, ch, max_seconds)
        cap_frames = int((MAX_DECODE_SECONDS if max_seconds is None else max_seconds) * sr)
        blocks: list[np.ndarray] = []
        got = 0
        # first read: the declared length (+1 frame to see the end) in one call when it is plausible
        first = declared + 1 if 0 < declared < _BLOCK * 64 else _BLOCK
        try:
            while True:
                block = f.read(frames=first if not blocks else _BLOCK, dtype="float32", always_2d=True)
                if not len(block):
                    break
                blocks.append(block)
                got += len(block)
                if got > cap_frames:  # a stream longer than its header said: stop before it grows further
                    check_decode_size(p, got, sr, ch, max_seconds)
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
    return data, sr, ch, fmt, subtype


def read_samples(
    path: str | os.PathLike,
    raw: RawFormat | None = None,
    blob: bytes | None = None,
    max_seconds: float | None = None,
) -> tuple[np.ndarray, int, int, str, str]:
    """Decode and check a file without the loudness statistics: (float32 (frames, channels), rate, channels,
    libsndfile format, subtype). Same checks and AudioError reasons as `read_audio`, which adds the statistics;
    the manifest builder, which needs only the samples, calls this directly. `blob`, the file's bytes when
    the caller has already read them (to hash them), lets a plain WAV be decoded without reading it again."""
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        raise AudioError(p, "missing", "file not found")
    if st.st_size == 0:
        raise AudioError(p, "empty_file", "file is 0 bytes")
    if blob is None:
        blob = wav_bytes_for_fast_path(p, raw, st.st_size)
    fast = read_wav_fast(p, blob, max_seconds) if raw is None and blob is not None else None
    data, sr, ch, fmt, subtype = fast or _read_libsndfile(p, raw, max_seconds)
    if subtype in ("FLOAT", "DOUBLE", "VORBIS", "OPUS", "MPEG_LAYER_III") and not np.isfinite(data).all():
        raise AudioError(p, "non_finite", f"{int((~np.isfinite(data)).sum())} NaN/inf samples")
    return data, sr, ch, fmt, subtype


def _sf_message(e: Exception) -> str:
    msg = str(e)
    return msg.split(": ", 1)[-1] if msg.startswith("Error opening") else msg


def probe_audio(
    path: str | os.PathLike,
    raw: RawFormat | None = None,
    blob: bytes | None = None,
    max_seconds: float | None = None,
) -> AudioInfo:
    """Decode the file and return its properties (raises AudioError with a named reason); `blob` as in
    read_samples; `max_seconds` caps what is decoded (default MAX_DECODE_SECONDS; refused as too_large)."""
    return read_audio(path, raw, blob, max_seconds)[1]


def to_mono(audio: np.ndarray) -> np.ndarray:
    """`(frames, channels)` -> `(frames,)` by averaging channels.

    Averaging (not picking channel 0) keeps speech recorded on either side; for phase-inverted channels it
    would cancel, which no common recording setup produces.
    """
    if audio.ndim == 1:
        return audio
    if audio.ndim != 2:
        raise ValueError(f"expected (frames,) or (frames, channels), got shape {audio.shape}")
    n = audio.shape[1]
    if n == 1:
        return audio[:, 0]
    # column adds instead of audio.mean(axis=1): numpy's reduction over a 2-wide axis is ~5x slower
    out = audio[:, 0].astype(np.float32, copy=True)
    for c in range(1, n):
        out += audio[:, c]
    out *= np.float32(1.0 / n)
    return out


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = TARGET_SR) -> np.ndarray:
    """Band-limited resampling to `target_sr`; output length is ceil(len * target_sr / orig_sr).

    soxr ("HQ": linear-phase, passband to 0.91 x Nyquist, > 100 dB stop-band) when installed: about 4x
    faster than scipy's polyphase FIR on 44.1 kHz input and the same resampler librosa uses. Otherwise
    scipy.signal.resample_poly (anti-aliasing FIR, exact rational ratio), e.g. in a lean serving image.
    """
    if orig_sr == target_sr:
        return np.ascontiguousarray(audio, dtype=np.float32)
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    n_out = -(-len(audio) * int(target_sr) // int(orig_sr))
    try:
        import soxr
    except ImportError:  # lazy: most serving requests are already 16 kHz
        soxr = None
    if soxr is not None:
        out = soxr.resample(audio, orig_sr, target_sr, quality="HQ")
    else:
        from scipy.signal import resample_poly

        g = math.gcd(int(orig_sr), int(target_sr))
        out = resample_poly(audio, target_sr // g, orig_sr // g, axis=0)
    if len(out) != n_out:  # soxr rounds the length; one contract for both back ends
        out = (
            out[:n_out]
            if len(out) > n_out
            else np.concatenate([out, np.zeros((n_out - len(out),) + out.shape[1:], out.dtype)])
        )
    return np.ascontiguousarray(out, dtype=np.float32)


def decode_mono(
    path: str | os.PathLike,
    target_sr: int = TARGET_SR,
    raw: RawFormat | None = None,
    blob: bytes | None = None,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Mono float32 at `target_sr`, without the loudness statistics of `decode` (same checks and errors)."""
    data, sr, _, _, _ = read_samples(path, raw, blob, max_seconds)
    return resample(to_mono(data), sr, target_sr)


def decode(
    path: str | os.PathLike, target_sr: int = TARGET_SR, raw: RawFormat | None = None
) -> tuple[np.ndarray, AudioInfo]:
    """Mono float32 at `target_sr` plus the source's AudioInfo (one decode for both)."""
    data, info = read_audio(path, raw)
    return resample(to_mono(data), info.sample_rate, target_sr), info


def load_audio(path: str | os.PathLike, target_sr: int = TARGET_SR, strict_rate: bool = False) -> np.ndarray:
    """Float32 mono at `target_sr` (stereo is averaged to mono; other rates are resampled by `resample`): the
    one audio loader of the pipeline, the serving client, the benchmarks and the tests. `strict_rate`: a file
    at another rate is a ValueError instead (the manifests hold 16 kHz WAVs written by build_manifest, so
    another rate there means a manifest that build_manifest did not write)."""
    data, sr, _, _, _ = read_samples(path)
    if strict_rate and sr != target_sr:
        raise ValueError(
            f"{path}: sample rate {sr} Hz, expected {target_sr} Hz (build_manifest writes the manifests' audio "
            "at 16 kHz)"
        )
    return resample(to_mono(data), sr, target_sr)


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
    # fsync only when asked: converting a corpus writes thousands of clips, and one fsync each (~10 ms here)
    # dominated the conversion time; the temp-file + rename still means no reader ever sees half a file
    atomic_write_bytes(path, wav16_bytes(audio, sr), durable=durable)


def wav16_bytes(audio: np.ndarray, sr: int = TARGET_SR) -> bytes:
    """A canonical 44-byte-header PCM16 mono WAV of float audio in [-1, 1] (clipped), rounded to nearest.

    Built with numpy rather than libsndfile: for short clips, opening a libsndfile handle on a BytesIO cost
    as much as the conversion itself. Same layout libsndfile writes (RIFF/WAVE, 'fmt ' PCM, 'data').
    """
    # clip(rint(clip(x, -1, 1) * 32768), -32768, 32767) in one temporary: x * 32768 is exact in float32
    pcm = np.multiply(audio, np.float32(32768.0), dtype=np.result_type(audio, np.float32))
    np.clip(pcm, -32768.0, 32767.0, out=pcm)
    np.rint(pcm, out=pcm)
    pcm = pcm.astype("<i2").tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(pcm),
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        int(sr),
        int(sr) * 2,
        2,
        16,
        b"data",
        len(pcm),
    )
    return header + pcm
