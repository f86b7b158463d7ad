"""Per-utterance checks and the training crop, run by ESPnet's data loader with the utterance id."""
from __future__ import annotations

import zlib
from typing import Dict, Optional

import numpy as np


class SpeechCLIPPreprocessor:
    """Validate audio, crop it at training time, cast image embeddings.

    Args:
        train: crop only when training.
        max_train_samples: random crop length (SpeechCLIP code: 102400 samples = 6.4 s at 16 kHz).
        min_samples: audio shorter than this is an error naming the utterance (one HuBERT frame
            needs 400 samples).
        seed: the crop position is a function of (seed, utterance id), so runs are reproducible.
    """

    def __init__(self, train: bool, max_train_samples: Optional[int] = 102400, min_samples: int = 400,
                 seed: int = 0):
        self.train = train
        self.max_train_samples = max_train_samples
        self.min_samples = min_samples
        self.seed = seed
        self.epoch_calls: Dict[str, int] = {}

    def __call__(self, uid: str, data: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        speech = np.asarray(data["speech"])
        if speech.ndim != 1:
            raise ValueError(f"utterance {uid}: expected mono audio, got shape {speech.shape}")
        if speech.size == 0:
            raise ValueError(f"utterance {uid}: empty audio")
        if speech.size < self.min_samples:
            raise ValueError(f"utterance {uid}: {speech.size} samples, shorter than the upstream's "
                             f"receptive field ({self.min_samples} samples)")
        if self.train and self.max_train_samples and speech.size > self.max_train_samples:
            # Crop position varies per visit but is reproducible for a given seed.
            visit = self.epoch_calls.get(uid, 0)
            self.epoch_calls[uid] = visit + 1
            rng = np.random.default_rng([self.seed, visit, zlib.crc32(uid.encode())])
            start = int(rng.integers(0, speech.size - self.max_train_samples + 1))
            speech = speech[start:start + self.max_train_samples]
        out = dict(data)
        out["speech"] = speech.astype(np.float32)
        if "image_feats" in out:
            out["image_feats"] = np.asarray(out["image_feats"], dtype=np.float32)
        return out
