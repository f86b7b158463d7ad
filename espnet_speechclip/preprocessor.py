"""Per-utterance checks and the training crop, run by ESPnet's data loader with the utterance id."""
from __future__ import annotations

import random
import zlib
from typing import Dict, List, Optional

import numpy as np
import torch
from espnet2.layers.augmentation import DataAugmentation

SAMPLE_RATE = 16000


class SpeechCLIPPreprocessor:
    """Validate audio, crop it at training time, cast image embeddings.

    Args:
        train: crop only when training.
        max_train_samples: random crop length (SpeechCLIP code: 102400 samples = 6.4 s at 16 kHz).
        min_samples: audio shorter than this is an error naming the utterance (one HuBERT frame
            needs 400 samples).
        seed: the crop position is a function of (seed, torch's per-epoch seed, utterance id), so
            it changes from epoch to epoch and runs are reproducible.
        data_aug_effects, data_aug_num, data_aug_prob: ESPnet's ``DataAugmentation`` on training
            audio, with the same meaning as in ESPnet's ``CommonPreprocessor`` (speed perturbation
            stands in for unseen speakers: it shifts pitch and formants together).
    """

    def __init__(self, train: bool, max_train_samples: Optional[int] = 102400, min_samples: int = 400,
                 seed: int = 0, data_aug_effects: Optional[List] = None, data_aug_num: List[int] = (1, 1),
                 data_aug_prob: float = 0.0):
        if not 0.0 <= data_aug_prob <= 1.0:
            raise ValueError(f"data_aug_prob must be in [0, 1], got {data_aug_prob}")
        self.train = train
        self.max_train_samples = max_train_samples
        self.min_samples = min_samples
        self.seed = seed
        self.data_aug = DataAugmentation(data_aug_effects, apply_n=list(data_aug_num)) if data_aug_effects else None
        self.data_aug_prob = data_aug_prob

    def _rng(self, uid: str) -> np.random.Generator:
        # torch.initial_seed() is ESPnet's per-epoch seed in the main process and the DataLoader's
        # per-epoch worker seed in a worker: a counter kept here would be reset in every new worker.
        return np.random.default_rng([self.seed, torch.initial_seed() % 2**32, zlib.crc32(uid.encode())])

    def __call__(self, uid: str, data: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        speech = np.asarray(data["speech"])
        if speech.ndim != 1:
            raise ValueError(f"utterance {uid}: expected mono audio, got shape {speech.shape}")
        if speech.size == 0:
            raise ValueError(f"utterance {uid}: empty audio")
        if speech.size < self.min_samples:
            raise ValueError(f"utterance {uid}: {speech.size} samples, shorter than the upstream's "
                             f"receptive field ({self.min_samples} samples)")
        rng = self._rng(uid) if self.train else None
        if self.train and self.data_aug is not None and rng.random() < self.data_aug_prob:
            # DataAugmentation draws from the global `random` and numpy RNGs: seed them from the
            # same per-epoch state, and leave them as they were.
            states = random.getstate(), np.random.get_state()
            random.seed(int(rng.integers(2**31)))
            np.random.seed(int(rng.integers(2**31)))
            speech = np.asarray(self.data_aug(speech.astype(np.float32), SAMPLE_RATE))
            random.setstate(states[0])
            np.random.set_state(states[1])
        if self.train and self.max_train_samples and speech.size > self.max_train_samples:
            start = int(rng.integers(0, speech.size - self.max_train_samples + 1))
            speech = speech[start:start + self.max_train_samples]
        out = dict(data)
        out["speech"] = speech.astype(np.float32)
        if "image_feats" in out:
            out["image_feats"] = np.asarray(out["image_feats"], dtype=np.float32)
        return out
