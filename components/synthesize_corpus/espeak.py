"""libespeak-ng through ctypes, from the `espeakng-loader` wheel (no espeak-ng binary, no apt).

libespeak-ng keeps process-global state that carries from one utterance to the next (function-static
counters in its wave generator, the echo buffer), so the same call gives different samples depending on
what was spoken before. Determinism therefore comes from the caller: a fresh process per chunk of clips, the
chunk spoken in a fixed order, and the random seeds reset before every clip (constants from speak_lib.h of
espeak-ng 1.52).
"""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_INITIALIZE_DONT_EXIT = 0x8000
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
ESPEAK_RATE = 1  # words per minute, 80..450
ESPEAK_PITCH = 3  # 0..100, 50 = the voice's normal pitch
EE_OK = 0

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


def _paths() -> tuple[str, str]:
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover - it is a pinned dependency
        raise RuntimeError("espeakng-loader is not installed (pip install espeakng-loader)") from e
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def espeak_version() -> str:
    """'1.52.0 <data path basename>'-like version string (loading the library does not initialise it)."""
    lib_path, _ = _paths()
    lib = ctypes.CDLL(lib_path)
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    return (lib.espeak_Info(None) or b"").decode("utf-8", "replace")


class Espeak:
    """One initialised libespeak-ng in this process; `synth` returns int16 mono samples at `sample_rate`."""

    def __init__(self) -> None:
        lib_path, data_path = _paths()
        self._lib = lib = ctypes.CDLL(lib_path)
        libc_name = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(libc_name) if libc_name else None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.sample_rate = lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), ESPEAK_INITIALIZE_DONT_EXIT
        )
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed for data path {data_path}")
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, _events):  # called synchronously from espeak_Synth
            if wav and n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0  # 0 = continue

        self._callback = _SYNTH_CALLBACK(collect)  # keep a reference: ctypes does not
        lib.espeak_SetSynthCallback(self._callback)

    def synth(self, voice: str, text: str, rate: int, pitch: int, seed: int = 1) -> np.ndarray:
        """Speak `text` with espeak voice name `voice` (e.g. 'el+m1') at `rate` wpm and `pitch` (0-100)."""
        lib = self._lib
        if lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
            raise ValueError(f"espeak-ng has no voice '{voice}'")
        # Set after the voice: a voice change must not undo them, and each clip states its own values.
        for param, value in ((ESPEAK_RATE, rate), (ESPEAK_PITCH, pitch)):
            if lib.espeak_SetParameter(param, int(value), 0) != EE_OK:
                raise ValueError(f"espeak-ng rejected parameter {param}={value}")
        lib.espeak_ng_SetRandSeed(seed)
        if self._libc is not None:
            self._libc.srand(seed)  # the wave generator also draws noise from libc rand()
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        status = lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None)
        if status != EE_OK:
            raise RuntimeError(f"espeak_Synth failed ({status}) for voice '{voice}', text {text!r}")
        lib.espeak_Synchronize()
        if not self._chunks:
            raise RuntimeError(f"espeak-ng produced no audio for voice '{voice}', text {text!r}")
        return np.concatenate(self._chunks)
