"""Speech with exact word times from espeak-ng's C library (``libespeak-ng.so.1``) via ctypes.

espeak-ng's command line prints no word timings, but its library reports, through the synthesis
callback, a word event at the exact output sample where each word starts (``espeak_EVENT.sample``)
and, when asked, one per phoneme. Word boundaries therefore need no forced aligner. Two quirks
of espeak-ng 1.51 are handled here and tested: multi-word dictionary entries such as ``(of a)``
swallow a word's event, and hidden state carried between utterances (see :class:`Espeak`).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import pickle
import warnings

import numpy as np


class EspeakEvent(ctypes.Structure):
    """``espeak_EVENT``: 40 bytes on LP64 (the union starts at byte 32)."""

    class _Id(ctypes.Union):
        _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]

    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int),  # 1-based character offset of the word
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int),  # ms, truncated
                ("sample", ctypes.c_int),  # exact sample index of the event: what we use
                ("user_data", ctypes.c_void_p), ("id", _Id)]


EVENT_WORD, EVENT_PHONEME = 1, 7
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(EspeakEvent))


class Espeak:
    """libespeak-ng in synchronous mode; espeak is process-global state, so one per process.

    Call :meth:`synth` through :meth:`synth_isolated`: espeak keeps hidden state across
    utterances (wavegen's pitch-flutter index is a static that not even espeak_Initialize
    resets), so the same text and settings sound slightly different, with shifted word times,
    depending on what was spoken before. A child forked from a process that has never spoken
    always starts from the same state, making every utterance a function of its job alone
    (and of nothing else: not the worker, not the order). A fork costs ~15 ms, synthesis ~8 ms.
    """

    def __init__(self) -> None:
        self.lib = ctypes.CDLL(ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1")
        self.libc = ctypes.CDLL(None)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        # AUDIO_OUTPUT_SYNCHRONOUS = 2; options 1 = also report phoneme events.
        self.sample_rate = self.lib.espeak_Initialize(2, 0, None, 1)
        if self.sample_rate <= 0:
            raise RuntimeError("espeak_Initialize failed: is libespeak-ng1 / espeak-ng-data installed?")
        self._callback = _CALLBACK(self._collect)  # keep a reference, or ctypes frees it
        self.lib.espeak_SetSynthCallback(self._callback)
        self._chunks: list[np.ndarray] = []
        self._words: list[tuple[int, int]] = []  # (text_position, sample)
        self._phones: list[tuple[str, int]] = []  # (phoneme mnemonic, sample)
        self._spoken = False  # once True, this process's espeak state is no longer pristine

    def _collect(self, wav, num_samples, events) -> int:
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
        i = 0
        while events[i].type != 0:  # the list ends with espeakEVENT_LIST_TERMINATED
            e = events[i]
            if e.type == EVENT_WORD:
                self._words.append((e.text_position, e.sample))
            elif e.type == EVENT_PHONEME:
                self._phones.append((e.id.string.decode("ascii", "replace"), e.sample))
            i += 1
        return 0

    def synth(self, text: str, voice: str, rate: int, pitch: int, seed: int):
        """-> (int16 samples, word events [(text_position, sample)], phoneme events)."""
        self._chunks, self._words, self._phones, self._spoken = [], [], [], True
        # espeak draws from libc rand() (breath noise, Klatt voices): reseed per utterance.
        self.libc.srand(seed)
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        self.lib.espeak_SetParameter(1, rate, 0)  # espeakRATE, words per minute
        self.lib.espeak_SetParameter(3, pitch, 0)  # espeakPITCH, 0-100
        data = text.encode("ascii")
        # position 0, POS_CHARACTER = 1, no end position, espeakCHARS_UTF8 = 1
        if self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 1, None, None) != 0:
            raise RuntimeError(f"espeak_Synth failed on {text!r}")
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return audio, list(self._words), list(self._phones)

    def synth_isolated(self, *args):
        """:meth:`synth` in a forked child of this (never speaking) process; same result."""
        if self._spoken:
            raise RuntimeError("synth() ran in this process: its espeak state is not pristine")
        read_fd, write_fd = os.pipe()
        with warnings.catch_warnings():  # the child needs no lock another thread may hold
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            try:
                os.close(read_fd)
                try:
                    payload = pickle.dumps((True, self.synth(*args)))
                except Exception as e:  # report to the parent rather than die silently
                    payload = pickle.dumps((False, repr(e)))
                with os.fdopen(write_fd, "wb") as f:
                    f.write(payload)
            finally:
                os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        if not data:
            raise RuntimeError(f"espeak child died (wait status {status}) on {args!r}")
        ok, value = pickle.loads(data)
        if not ok:
            raise RuntimeError(f"espeak failed on {args!r}: {value}")
        return value


def align_words(text: str, words: list[tuple[int, int]], phones: list[tuple[str, int]],
                voiced_end: int) -> list[tuple[str, int, int]]:
    """Map espeak events to ``[(word, start_sample, end_sample)]`` for each word of ``text``.

    Word events whose text position is no word start are ignored (espeak 1.51 adds one at
    the clause end). A word with no event was merged into the previous one by a multi-word
    dictionary entry; our grammar meets only ``(of a)``, whose "a" is its last phoneme, so its
    start is the last phoneme event before the next word. A word ends where the next begins;
    the last one where espeak's final pause phoneme starts (else at ``voiced_end``).
    """
    tokens, starts, pos = text.split(), {}, 1
    for i, w in enumerate(tokens):
        starts[pos], pos = i, pos + len(w) + 1
    found: dict[int, int] = {}
    for text_pos, sample in words:
        if text_pos in starts and starts[text_pos] not in found:
            found[starts[text_pos]] = sample
    for i, w in enumerate(tokens):
        if i in found:
            continue
        if w != "a" or i == 0 or tokens[i - 1] != "of" or i - 1 not in found or i + 1 not in found:
            raise ValueError(f"espeak gave no word event for word {i} {w!r} of {text!r}")
        inside = [s for p, s in phones if not p.startswith("_") and found[i - 1] < s < found[i + 1]]
        if not inside:
            raise ValueError(f"no phoneme event to place merged word {w!r} in {text!r}")
        found[i] = inside[-1]
    pauses = [s for p, s in phones if p.startswith("_") and s > found[len(tokens) - 1]]
    bounds = [found[i] for i in range(len(tokens))] + [min(pauses, default=voiced_end)]
    if any(b <= a for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"word boundaries not increasing for {text!r}: {bounds}")
    return [(w, bounds[i], bounds[i + 1]) for i, w in enumerate(tokens)]


def resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Ideal band-limited resampling through the FFT (numpy only), ``len(x) * new // orig`` out.

    ``x`` is zero-padded to a multiple of ``orig / gcd`` input samples so that the rate ratio is
    exact; our clips start and end in silence, so the FFT's periodicity adds no wrap-around.
    numpy only on purpose: scipy in the worker makes each per-utterance fork 3x slower.
    """
    g = math.gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g
    n_in = down * (1 << (-(-len(x) // down) - 1).bit_length())  # FFT-friendly: down * 2^k
    n_out = n_in // down * up
    spec = np.fft.rfft(x, n_in)[: n_out // 2 + 1]
    return np.fft.irfft(spec, n_out)[: len(x) * up // down] * (up / down)


_ENGINE: Espeak | None = None  # this process's engine; it only ever speaks in forked children


def synthesize(text: str, voice: str, rate: int, pitch: int, seed: int, out_rate: int = 16000,
               pad_s: float = 0.1) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Speak ``text``; -> (int16 audio at ``out_rate``, [(word, start_s, end_s)]).

    ``voice`` is an espeak-ng voice name with an optional variant ("en-us+f2"), ``rate`` in
    words per minute (80-450), ``pitch`` 0-100, ``seed`` for espeak's libc ``rand()``. The
    audio keeps exactly ``pad_s`` of silence before the first and after the last voiced
    sample; word times are on that trimmed axis. Same arguments, same bytes.
    """
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = Espeak()
    audio, words, phones = _ENGINE.synth_isolated(text, voice, rate, pitch, seed)
    if not np.any(audio):
        raise ValueError(f"espeak produced silence for {text!r} with voice {voice!r}")
    # Voiced = above 2% of the peak (-34 dB): espeak's pauses are near-digital silence.
    voiced = np.flatnonzero(np.abs(audio.astype(np.int32)) > 0.02 * np.abs(audio).max())
    onset, offset = int(voiced[0]), int(voiced[-1]) + 1
    align = align_words(text, words, phones, offset)
    sr, pad = _ENGINE.sample_rate, int(pad_s * _ENGINE.sample_rate)
    align[0] = (align[0][0], max(align[0][1], onset), align[0][2])
    speech_end = max(offset, align[-1][2])
    # Exactly ``pad`` samples around the speech, zeros where espeak gave less (it has no lead-in).
    lo, hi = max(0, onset - pad), min(len(audio), speech_end + pad)
    audio = np.pad(audio[lo:hi], (pad - (onset - lo), pad - (hi - speech_end)))
    lo = onset - pad  # where the output starts on espeak's time axis (may be negative)
    out = resample(audio.astype(np.float64), sr, out_rate)
    out = np.clip(np.round(out), -32768, 32767).astype(np.int16)
    dur = len(out) / out_rate
    times = [(w, round((s - lo) / sr, 3), min(round((e - lo) / sr, 3), dur)) for w, s, e in align]
    return out, times
