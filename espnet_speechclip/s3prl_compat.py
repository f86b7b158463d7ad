"""Make s3prl 0.4.18 importable with torchaudio >= 2.9.

Why this exists: torchaudio 2.9 removed ``set_audio_backend`` and the ``sox_effects`` module, and
``torchaudio.load`` now needs the separate ``torchcodec`` package. s3prl 0.4.18 (the last release)
calls ``set_audio_backend`` at import time in several upstreams, so ``import s3prl.hub`` fails, and
its downstream datasets load audio with ``torchaudio.load`` and ``sox_effects``. ``apply()`` restores
those three names with equivalents built on soundfile and the sox command line; it must run before
s3prl is first imported and is a no-op when torchaudio still has them.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import soundfile
import torch

logger = logging.getLogger(__name__)
_applied = False


def _load_with_soundfile(filepath, frame_offset: int = 0, num_frames: int = -1, normalize: bool = True,
                         channels_first: bool = True, **_ignored) -> Tuple[torch.Tensor, int]:
    """torchaudio.load's contract: float32 in [-1, 1], (channels, time) by default."""
    stop = None if num_frames is None or num_frames < 0 else frame_offset + num_frames
    data, rate = soundfile.read(str(filepath), start=frame_offset, stop=stop, dtype="float32", always_2d=True)
    wav = torch.from_numpy(np.ascontiguousarray(data.T if channels_first else data))
    return wav, rate


def _run_sox(input_path: str, effects: Sequence[Sequence[str]], channels_first: bool) -> Tuple[torch.Tensor, int]:
    if shutil.which("sox") is None:
        raise RuntimeError("sox effects need the `sox` command (Debian package sox; tools/install.sh installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "out.wav")
        cmd = ["sox", input_path, "-t", "wav", "-e", "floating-point", "-b", "32", out]
        for effect in effects:
            cmd += [str(part) for part in effect]
        subprocess.run(cmd, check=True, capture_output=True)
        return _load_with_soundfile(out, channels_first=channels_first)


def apply_effects_tensor(tensor: torch.Tensor, sample_rate: int, effects: List[List[str]],
                         channels_first: bool = True) -> Tuple[torch.Tensor, int]:
    """The removed torchaudio.sox_effects.apply_effects_tensor, through the sox command line."""
    data = tensor.detach().cpu().numpy()
    data = data.T if channels_first else data
    with tempfile.TemporaryDirectory() as tmp:
        src = str(Path(tmp) / "in.wav")
        soundfile.write(src, data, sample_rate, subtype="FLOAT")
        return _run_sox(src, effects, channels_first)


def apply_effects_file(path, effects: List[List[str]], normalize: bool = True, channels_first: bool = True,
                       format=None) -> Tuple[torch.Tensor, int]:
    """The removed torchaudio.sox_effects.apply_effects_file, through the sox command line."""
    return _run_sox(str(path), effects, channels_first)


def apply() -> None:
    """Patch torchaudio in place (idempotent). Call before the first ``import s3prl``."""
    global _applied
    if _applied:
        return
    import torchaudio

    if not hasattr(torchaudio, "set_audio_backend"):
        torchaudio.set_audio_backend = lambda backend=None: None
    if "torchaudio.sox_effects" not in sys.modules and not hasattr(torchaudio, "sox_effects"):
        module = types.ModuleType("torchaudio.sox_effects")
        module.apply_effects_tensor = apply_effects_tensor
        module.apply_effects_file = apply_effects_file
        sys.modules["torchaudio.sox_effects"] = module
        torchaudio.sox_effects = module
    try:
        import torchcodec  # noqa: F401
    except ImportError:
        torchaudio.load = _load_with_soundfile
    _applied = True
    logger.debug("s3prl compatibility shims applied to torchaudio %s", torchaudio.__version__)


def import_s3prl_hub():
    """Import ``s3prl.hub`` lazily (it pulls in ESPnet and transformers, ~15 s) with the shims applied."""
    apply()
    from s3prl import hub

    return hub
