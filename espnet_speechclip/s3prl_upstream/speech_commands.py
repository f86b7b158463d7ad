"""SpokenShapes isolated words in the Speech Commands v0.01 layout, for s3prl's ``speech_commands``
downstream (SUPERB keyword spotting), which has 12 fixed classes: 10 command words, ``_unknown_``
and ``_silence_``.

Ten SpokenShapes words take the ten command slots (``CLASS_MAP``, written to ``class_map.txt``);
ten more are the unknown words; background-noise files give the silence class. Layout::

    <out>/train/<slot>/<speaker hash>_nohash_<n>.wav   slots, plus unknown words under their own name
    <out>/train/_background_noise_/noise_<i>.wav      (s3prl cuts 1 s silence clips from these)
    <out>/test/{<slot>,_unknown_,_silence_}/*.wav     test speakers: voices never used in train/dev

s3prl assigns a train-dir file to dev when the SHA-1 of its speaker hash falls in the first 10 %
(``split_dataset``), so each speaker's hash is chosen to land in dev or in train as intended: dev
speakers are SpokenShapes training voices held out from the probe's train split. Clips are 1 s
(words centred, zero-padded), 16 kHz, 16-bit, spoken by espeak-ng like the corpus.
"""
from __future__ import annotations

import hashlib
import logging
import multiprocessing
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import soundfile
from tqdm import tqdm

from espnet_speechclip.data.espeak_tts import synthesize
from espnet_speechclip.data.spoken_shapes import ACCENTS, TEST_SPEAKERS, TRAIN_SPEAKERS

logger = logging.getLogger(__name__)
CLASS_MAP = {"yes": "red", "no": "green", "up": "blue", "down": "yellow", "left": "left", "right": "right",
             "on": "circle", "off": "square", "stop": "triangle", "go": "star"}
UNKNOWN_WORDS = ("purple", "black", "cross", "big", "small", "above", "below", "top", "bottom", "center")
SAMPLE_RATE, CLIP_SAMPLES = 16000, 16000


def _bucket(speaker_hash: str) -> float:
    """s3prl's split_dataset percentage for a speaker hash (Speech Commands' own recipe)."""
    max_per_class = 2 ** 27 - 1
    value = int(hashlib.sha1(speaker_hash.encode("utf-8")).hexdigest(), 16)
    return (value % (max_per_class + 1)) * (100.0 / max_per_class)


def speaker_hash(speaker: str, dev: bool) -> str:
    """An 8-hex-digit id for ``speaker`` that s3prl puts in dev (bucket < 10) or train (bucket >= 20)."""
    for k in range(10000):
        candidate = hashlib.sha1(f"{speaker}:{k}".encode()).hexdigest()[:8]
        bucket = _bucket(candidate)
        if (bucket < 10) if dev else (bucket >= 20):
            return candidate
    raise RuntimeError(f"no speaker hash found for {speaker}")


def _synth(job: Tuple) -> None:
    word, speaker, rate, pitch, seed, path = job
    accent, variant = speaker.split("_")
    audio, _ = synthesize(word, f"{ACCENTS[accent]}+{variant}", rate, pitch, seed, pad_s=0.05)
    audio = audio[:CLIP_SAMPLES]
    left = (CLIP_SAMPLES - len(audio)) // 2
    soundfile.write(path, np.pad(audio, (left, CLIP_SAMPLES - len(audio) - left)), SAMPLE_RATE, subtype="PCM_16")


def _noise(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Low-level coloured noise (white noise through a one-pole low-pass), int16."""
    from scipy.signal import lfilter

    white = rng.standard_normal(int(seconds * SAMPLE_RATE))
    pole = float(rng.uniform(0.0, 0.95))
    coloured = lfilter([1 - pole], [1, -pole], white)
    coloured *= float(rng.uniform(200, 2000)) / (np.abs(coloured).max() + 1e-9)
    return coloured.astype(np.int16)


def export_speech_commands(out_dir: str, num_train_speakers: int = 24, num_dev_speakers: int = 4,
                           num_test_speakers: int = 8, num_noise_files: int = 4, seed: int = 0,
                           nj: int = 2) -> Dict[str, int]:
    """Write the train and test roots under ``out_dir``; returns clip counts per split.

    Every speaker says every word once (rate and pitch drawn per clip, as in the corpus).
    """
    if num_dev_speakers >= num_train_speakers:
        raise ValueError(f"num_dev_speakers={num_dev_speakers} must be below num_train_speakers={num_train_speakers}")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    train_speakers = list(TRAIN_SPEAKERS[:num_train_speakers])
    test_speakers = list(TEST_SPEAKERS[:num_test_speakers])
    dev = set(train_speakers[:num_dev_speakers])
    slot_of = {word: slot for slot, word in CLASS_MAP.items()}
    jobs, counts = [], {"train": 0, "dev": 0, "test": 0}
    for split, speakers in (("train", train_speakers), ("test", test_speakers)):
        for speaker in speakers:
            spk_hash = speaker_hash(speaker, dev=speaker in dev)
            for word in list(CLASS_MAP.values()) + list(UNKNOWN_WORDS):
                label = slot_of.get(word, word if split == "train" else "_unknown_")
                directory = out / split / label
                directory.mkdir(parents=True, exist_ok=True)
                n = UNKNOWN_WORDS.index(word) if label == "_unknown_" else 0  # several unknown words per speaker
                path = directory / f"{spk_hash}_nohash_{n}.wav"
                jobs.append((word, speaker, int(rng.integers(130, 200)), int(rng.integers(30, 70)),
                             int(rng.integers(2 ** 31)), str(path)))
                counts["dev" if speaker in dev else split] += 1
    with multiprocessing.get_context("spawn").Pool(max(1, nj)) as pool:
        for _ in tqdm(pool.imap_unordered(_synth, jobs, chunksize=8), total=len(jobs), desc="speech commands"):
            pass
    noise_dir = out / "train" / "_background_noise_"
    noise_dir.mkdir(parents=True, exist_ok=True)
    for i in range(num_noise_files):
        soundfile.write(noise_dir / f"noise_{i}.wav", _noise(rng, 5.0), SAMPLE_RATE, subtype="PCM_16")
    silence_dir = out / "test" / "_silence_"
    silence_dir.mkdir(parents=True, exist_ok=True)
    for i in range(num_test_speakers * 2):
        soundfile.write(silence_dir / f"noise_{i:03d}.wav", _noise(rng, 1.0), SAMPLE_RATE, subtype="PCM_16")
    counts["test"] += num_test_speakers * 2
    (out / "class_map.txt").write_text("".join(f"{slot} {word}\n" for slot, word in CLASS_MAP.items())
                                       + "".join(f"_unknown_ {w}\n" for w in UNKNOWN_WORDS) + "_silence_ noise\n")
    logger.info("Speech Commands layout in %s: %s clips (+%d noise files)", out, counts, num_noise_files)
    return counts


def superb_config(train_root: str, test_root: str, total_steps: int, eval_step: int, batch_size: int = 32,
                  num_workers: int = 2, lr: float = 1.0e-4) -> Dict:
    """s3prl speech_commands settings of the SUPERB protocol (linear projector to 256, mean pooling,
    linear classifier, Adam 1e-4, gradient clipping 1, dev-selected checkpoint); only the step counts,
    loader workers and data roots differ from the benchmark's 200k-step run."""
    return {
        "runner": {"total_steps": total_steps, "gradient_clipping": 1, "gradient_accumulate_steps": 1,
                   "log_step": max(1, eval_step // 2), "eval_step": eval_step, "save_step": eval_step,
                   "max_keep": 1, "eval_dataloaders": ["dev"]},
        "optimizer": {"name": "TorchOptim", "torch_optim_name": "Adam", "lr": lr},
        "downstream_expert": {
            "datarc": {"speech_commands_root": train_root, "speech_commands_test_root": test_root,
                       "num_workers": num_workers, "batch_size": batch_size},
            "modelrc": {"projector_dim": 256, "select": "UtteranceLevel", "UtteranceLevel": {"pooling": "MeanPooling"}},
        },
    }
