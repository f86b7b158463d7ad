"""SpokenShapes: a synthetic image / spoken-caption corpus generated locally (DESIGN §7).

Images (96x96 RGB PNG, light background) hold 1–3 shapes; each has one templated caption::

    1 shape : a {size} {colour} {shape} {at the top|at the bottom|to the left|to the right|at the center}
    2 shapes: a {size} {colour} {shape} {left of|right of|above|below} a {size} {colour} {shape}
    3 shapes: a {colour} {shape} REL a {colour} {shape} REL a {colour} {shape}   (one REL, a chain)

Sizes of three-shape scenes are drawn at random but not spoken (captions, like real ones, omit
some attributes). "A left of B" and "B right of A" are one scene: every scene (hence caption) is
unique in the whole corpus, so no caption is shared between splits.

Speech comes from espeak-ng's C library through ctypes, with word events giving word boundaries
exactly (no forced aligner): 8 English accents x voice variants, rate and pitch drawn per
utterance. Test speakers use voice variants never heard in train or dev; accents are shared.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import multiprocessing
import os
import pickle
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image, ImageDraw
from tqdm import tqdm

from espnet_speechclip.data.kaldi_dir import validate_data_dir, write_data_dir

logger = logging.getLogger(__name__)

SMALL_SIZES = {"num_train": 40, "num_dev": 10, "num_test": 12}
IMAGE_SIZE, DRAW_SCALE = 96, 4  # drawn at 4x and downsampled: anti-aliased edges
COLOURS = {"red": (220, 35, 35), "green": (35, 160, 55), "blue": (35, 75, 225),
           "yellow": (235, 195, 10), "purple": (140, 45, 175), "black": (25, 25, 25)}
SHAPES = ("circle", "square", "triangle", "star", "cross")
SIZES = {"big": 14, "small": 8}  # radius in px: 28 vs 16 px wide, clearly different
RELATIONS = ("left of", "right of", "above", "below")
POSITIONS = {"at the top": (48, 22), "at the bottom": (48, 74), "to the left": (22, 48),
             "to the right": (74, 48), "at the center": (48, 48)}
NUM_SHAPES_PROB = (0.1, 0.5, 0.4)  # 1, 2, 3 shapes; only 300 one-shape scenes exist

# espeak-ng voices (accent tag -> voice name) and variants ("+m1" ...; whisper avoided).
ACCENTS = {"gb": "en", "us": "en-us", "sco": "en-gb-scotland", "lan": "en-gb-x-gbclan",
           "rp": "en-gb-x-rp", "wmd": "en-gb-x-gbcwmd", "car": "en-029", "nyc": "en-us-nyc"}
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3", "croak")
TEST_VARIANTS = ("m6", "m7", "m8", "f4", "f5")
TRAIN_SPEAKERS = tuple(f"{a}_{TRAIN_VARIANTS[(3 * i + j) % len(TRAIN_VARIANTS)]}"
                       for i, a in enumerate(ACCENTS) for j in range(3))  # 24 speakers
TEST_SPEAKERS = tuple(f"{a}_{TEST_VARIANTS[i % len(TEST_VARIANTS)]}" for i, a in enumerate(ACCENTS))
SPLIT_SPEAKERS = {"train": TRAIN_SPEAKERS, "dev": TRAIN_SPEAKERS, "test": TEST_SPEAKERS}
RATE_WPM, PITCH = (130, 200), (30, 70)  # drawn uniformly per utterance
PAD_S = 0.1  # silence kept before the first and after the last voiced sample


@dataclass(frozen=True)
class Item:
    """One drawn shape: colour / shape / size names and its centre in 96-px coordinates."""
    colour: str
    shape: str
    size: str
    x: float
    y: float


@dataclass(frozen=True)
class Scene:
    """An image description: caption, shapes, RGB background, and a layout-canonical key."""
    caption: str
    items: tuple[Item, ...]
    background: tuple[int, int, int]
    key: tuple


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw one random scene (caption + geometry) from ``rng``."""
    n = int(rng.choice(3, p=NUM_SHAPES_PROB)) + 1
    # (colour, shape, size) per shape; no colour+shape twice, so every mention is unambiguous.
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    names = [(*pairs[i], str(rng.choice(list(SIZES)))) for i in rng.choice(len(pairs), n, replace=False)]
    background = tuple(int(v) for v in rng.integers(228, 252, size=3))
    jit = lambda a: float(rng.uniform(-a, a))  # noqa: E731
    if n == 1:
        pos = str(rng.choice(list(POSITIONS)))
        (c, s, z), (x, y) = names[0], POSITIONS[pos]
        free_x, free_y = (12, 3) if "top" in pos or "bottom" in pos else (3, 12)
        free_x, free_y = (4, 4) if pos == "at the center" else (free_x, free_y)
        items = (Item(c, s, z, x + jit(free_x), y + jit(free_y)),)
        return Scene(f"a {z} {c} {s} {pos}", items, background, ("1", names[0], pos))
    rel = str(rng.choice(RELATIONS))
    slots = (26, 70) if n == 2 else (16, 48, 80)  # centres along the relation axis, spatially ordered
    order = names if rel in ("left of", "above") else names[::-1]  # caption order -> spatial order
    across = 48 + jit(12 if n == 2 else 10)  # shared coordinate: the shapes stay level
    items = []
    for (c, s, z), along in zip(order, slots):
        along, side = along + jit(4 if n == 2 else 1), across + jit(2)
        items.append(Item(c, s, z, along, side) if rel in ("left of", "right of")
                      else Item(c, s, z, side, along))
    spoken = [f"{z} {c} {s}" if n == 2 else f"{c} {s}" for c, s, z in names]
    caption = f" {rel} ".join(f"a {w}" for w in spoken)
    axis = "h" if rel in ("left of", "right of") else "v"
    key = (axis, *(o[:3] if n == 2 else o[:2] for o in order))
    return Scene(caption, tuple(items), background, key)


def draw_scene(scene: Scene) -> Image.Image:
    """Render ``scene`` as a 96x96 RGB image (pure: the geometry is all in the scene)."""
    k = DRAW_SCALE
    img = Image.new("RGB", (IMAGE_SIZE * k, IMAGE_SIZE * k), scene.background)
    draw = ImageDraw.Draw(img)
    for it in scene.items:
        cx, cy, r, fill = it.x * k, it.y * k, SIZES[it.size] * k, COLOURS[it.colour]
        if it.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif it.shape == "square":
            h = 0.85 * r  # about the circle's visual weight
            draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
        elif it.shape == "triangle":
            pts = [(cx + r * np.cos(a), cy + 0.15 * r + r * np.sin(a)) for a in np.radians([-90, 30, 150])]
            draw.polygon(pts, fill=fill)
        elif it.shape == "star":
            radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)  # 5 outer, 5 inner points
            angles = np.radians(np.arange(10) * 36 - 90)
            pts = list(zip(cx + radii * np.cos(angles), cy + radii * np.sin(angles)))
            draw.polygon(pts, fill=fill)
        elif it.shape == "cross":
            a, w = 0.95 * r, 0.33 * r
            draw.rectangle([cx - a, cy - w, cx + a, cy + w], fill=fill)
            draw.rectangle([cx - w, cy - a, cx + w, cy + a], fill=fill)
        else:
            raise ValueError(f"unknown shape {it.shape!r}")
    return img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)


# ---- espeak-ng through ctypes (speak_lib.h, API revision 12) --------------------------------
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
    always starts from the same state, making every utterance a function of its job alone.
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
        self._chunks, self._words, self._phones = [], [], []
        # espeak draws from libc rand() (pitch flutter, noise): reseed for reproducible audio.
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


_ENGINE: Espeak | None = None


def synthesize(text: str, voice: str, rate: int, pitch: int, seed: int,
               out_rate: int = 16000) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Speak ``text``; -> (int16 audio at ``out_rate``, [(word, start_s, end_s)]).

    Silence is trimmed to ``PAD_S`` around the voiced part and the times shifted with it.
    """
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = Espeak()
    audio, words, phones = _ENGINE.synth_isolated(text, voice, rate, pitch, seed)
    voiced = np.flatnonzero(np.abs(audio.astype(np.int32)) > 0.02 * np.abs(audio).max())
    onset, offset = int(voiced[0]), int(voiced[-1]) + 1
    align = align_words(text, words, phones, offset)
    sr, pad = _ENGINE.sample_rate, int(PAD_S * _ENGINE.sample_rate)
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


def _synth_job(job: tuple) -> tuple[str, float, list[tuple[str, float, float]]]:
    """Pool worker: synthesise one utterance and write its wav."""
    utt, text, voice, rate, pitch, seed, wav_path = job
    audio, times = synthesize(text, voice, rate, pitch, seed)
    soundfile.write(wav_path, audio, 16000, subtype="PCM_16")
    return utt, len(audio) / 16000, times


def _unique_scenes(rng: np.random.Generator, n: int, used: set) -> list[Scene]:
    scenes = []
    for _ in range(200 * n + 1000):  # rejection sampling; the scene space is ~60k
        if len(scenes) == n:
            return scenes
        scene = sample_scene(rng)
        if scene.key not in used:
            used.add(scene.key)
            scenes.append(scene)
    raise RuntimeError(f"could not draw {n} unique scenes")


def prepare_spoken_shapes(corpus_dir: str | Path, data_dir: str | Path, *, num_train: int = 1500,
                          num_dev: int = 150, num_test: int = 250, captions_per_image: int = 2,
                          seed: int = 0, nj: int = 2) -> dict[str, dict[str, float]]:
    """Generate SpokenShapes and write Kaldi-style dirs ``data_dir/{train,dev,test}``.

    Images go to ``corpus_dir/images/<split>/<imgid>.png``, audio to
    ``corpus_dir/wav/<split>/<utt>.wav`` (16 kHz, 16-bit mono). Utterance ids are
    ``<speaker>-<split>_<image index>_<n>``. Deterministic for a given ``seed`` and any ``nj``.
    Returns ``{split: {"images", "utterances", "seconds"}}``.
    """
    corpus_dir, data_dir = Path(corpus_dir).absolute(), Path(data_dir)
    rng = np.random.default_rng(seed)
    sizes, used = {"train": num_train, "dev": num_dev, "test": num_test}, set()
    jobs, meta = [], {}
    for split, num in sizes.items():
        if captions_per_image > len(SPLIT_SPEAKERS[split]):
            raise ValueError(f"captions_per_image={captions_per_image} > {split} speakers")
        (corpus_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        (corpus_dir / "wav" / split).mkdir(parents=True, exist_ok=True)
        meta[split] = {"img_scp": {}, "text": {}, "utt2img": {}, "utt2spk": {}, "wav_scp": {}}
        m = meta[split]
        for idx, scene in enumerate(_unique_scenes(rng, num, used)):
            img_id = f"{split}_{idx:05d}"
            m["img_scp"][img_id] = str(corpus_dir / "images" / split / f"{img_id}.png")
            draw_scene(scene).save(m["img_scp"][img_id])
            speakers = rng.choice(SPLIT_SPEAKERS[split], size=captions_per_image, replace=False)
            for n, spk in enumerate(speakers):
                utt = f"{spk}-{img_id}_{n}"
                accent, variant = spk.split("_")
                wav = str(corpus_dir / "wav" / split / f"{utt}.wav")
                jobs.append((utt, scene.caption, f"{ACCENTS[accent]}+{variant}",
                             int(rng.integers(*RATE_WPM, endpoint=True)),
                             int(rng.integers(*PITCH, endpoint=True)), int(rng.integers(2**31)), wav))
                m["text"][utt], m["utt2img"][utt], m["utt2spk"][utt] = scene.caption, img_id, str(spk)
                m["wav_scp"][utt] = wav
    logger.info("drew %d images; synthesising %d utterances with %d job(s)",
                sum(sizes.values()), len(jobs), nj)
    results = {}
    # Workers are spawned even for nj=1: each forks per utterance (see Espeak), and forking this
    # process, which may run torch threads, is unsafe; a fresh interpreter is not.
    with multiprocessing.get_context("spawn").Pool(max(1, nj)) as pool:
        jobs_done = pool.imap_unordered(_synth_job, jobs, chunksize=16)
        for utt, dur, times in tqdm(jobs_done, total=len(jobs), desc="espeak-ng", unit="utt"):
            results[utt] = (dur, times)
    counts = {}
    for split, m in meta.items():
        align = {u: results[u][1] for u in m["text"]}
        write_data_dir(data_dir / split, wav_scp=m["wav_scp"], text=m["text"], utt2img=m["utt2img"],
                       img_scp=m["img_scp"], utt2spk=m["utt2spk"], word_align=align)
        validate_data_dir(data_dir / split)
        assert len(m["img_scp"]) == sizes[split], (split, len(m["img_scp"]))
        per_image = Counter(m["utt2img"].values())
        assert set(per_image) == set(m["img_scp"]), split
        assert set(per_image.values()) == {captions_per_image}, (split, per_image)
        counts[split] = {"images": sizes[split], "utterances": len(m["text"]),
                         "seconds": round(sum(results[u][0] for u in m["text"]), 2)}
        logger.info("%s: %s", split, counts[split])
    return counts
