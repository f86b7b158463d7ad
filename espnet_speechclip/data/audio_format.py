"""Stage 2: check, repair and filter the audio of a Kaldi-style data dir into a dump dir.

Every utterance is read once. What can be repaired is repaired and noted (another sample rate is
resampled, stereo is down-mixed); what cannot is dropped with its reason. Both go to
``<out_dir>/problems.txt`` (``utt<TAB>action<TAB>reason``) and the log; the rest is written as a
data dir with ``speech_shape`` (samples per utterance) for ESPnet's batch sampler. Audio already in
the target format is referenced in place instead of being copied.
"""
from __future__ import annotations

import logging
import multiprocessing
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import soundfile
from tqdm import tqdm

from espnet_speechclip.data.kaldi_dir import read_kaldi_map, spk2utt_from_utt2spk, write_kaldi_map

logger = logging.getLogger(__name__)

PER_UTT_FILES = ("text", "utt2img", "utt2spk", "word_align")


def resample(wav: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (scipy) to ``target`` Hz, float32."""
    from scipy.signal import resample_poly

    gcd = np.gcd(int(rate), int(target))
    return resample_poly(wav, int(target) // gcd, int(rate) // gcd).astype(np.float32)


@dataclass
class AudioResult:
    utt: str
    path: Optional[str]  # None: dropped
    num_samples: int = 0
    notes: Tuple[str, ...] = ()
    problem: str = ""


def check_audio(utt: str, path: str, out_wav_dir: Path, fs: int = 16000, min_sec: float = 0.1,
                max_sec: float = 60.0, silence_peak: float = 1e-4) -> AudioResult:
    """Check one utterance; repair rate/channels by writing a 16-bit mono copy under ``out_wav_dir``."""
    source = Path(path)
    if not source.is_file():
        return AudioResult(utt, None, problem=f"missing wav {path}")
    if source.stat().st_size == 0:
        return AudioResult(utt, None, problem=f"zero-byte wav {path}")
    try:
        data, rate = soundfile.read(str(source), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        return AudioResult(utt, None, problem=f"unreadable wav {path}: {err}")
    notes: List[str] = []
    if data.shape[1] > 1:
        notes.append(f"down-mixed {data.shape[1]} channels")
        data = data.mean(axis=1, keepdims=True)
    wav = data[:, 0]
    if rate != fs:
        wav = resample(wav, rate, fs)
        notes.append(f"resampled {rate} Hz -> {fs} Hz")
    duration = len(wav) / fs
    if len(wav) == 0 or duration < min_sec:
        return AudioResult(utt, None, problem=f"too short ({duration:.3f} s < {min_sec} s)")
    if duration > max_sec:
        return AudioResult(utt, None, problem=f"too long ({duration:.1f} s > {max_sec} s)")
    if float(np.abs(wav).max()) < silence_peak:
        return AudioResult(utt, None, problem="silent (peak amplitude below 1e-4)")
    if not notes:
        return AudioResult(utt, str(source.resolve()), len(wav))
    out = out_wav_dir / f"{utt}.wav"
    soundfile.write(str(out), np.clip(wav, -1.0, 1.0), fs, subtype="PCM_16")
    return AudioResult(utt, str(out.resolve()), len(wav), tuple(notes))


def _check_job(args) -> AudioResult:
    return check_audio(*args)


def format_data_dir(data_dir: str, out_dir: str, fs: int = 16000, min_sec: float = 0.1, max_sec: float = 60.0,
                    max_drop_share: float = 0.1, nj: int = 1) -> Dict[str, int]:
    """Check every utterance of ``data_dir`` and write the kept ones to ``out_dir``.

    Raises ``RuntimeError`` when the split ends up empty or more than ``max_drop_share`` of it is
    dropped (the problems are written first, so nothing is lost).
    """
    src, dst = Path(data_dir), Path(out_dir)
    wav_scp = read_kaldi_map(src / "wav.scp")
    wav_dir = dst / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(utt, path, wav_dir, fs, min_sec, max_sec) for utt, path in wav_scp.items()]
    desc = f"stage 2: {src.name}"
    if nj > 1:
        with multiprocessing.get_context("spawn").Pool(nj) as pool:
            results = list(tqdm(pool.imap(_check_job, jobs, chunksize=32), total=len(jobs), desc=desc))
    else:
        results = [check_audio(*job) for job in tqdm(jobs, desc=desc)]

    kept = {r.utt: r for r in results if r.path is not None}
    with open(dst / "problems.txt", "w") as problems:
        for r in results:
            if r.path is None:
                problems.write(f"{r.utt}\tdropped\t{r.problem}\n")
                logger.warning("%s: %s: dropped (%s)", src.name, r.utt, r.problem)
            for note in r.notes:
                problems.write(f"{r.utt}\trepaired\t{note}\n")
                logger.info("%s: %s: %s", src.name, r.utt, note)
    write_kaldi_map(dst / "wav.scp", {u: r.path for u, r in kept.items()})
    write_kaldi_map(dst / "speech_shape", {u: str(r.num_samples) for u, r in kept.items()})
    for name in PER_UTT_FILES:
        if (src / name).is_file():
            write_kaldi_map(dst / name, {u: v for u, v in read_kaldi_map(src / name).items() if u in kept})
    if (dst / "utt2spk").is_file():
        write_kaldi_map(dst / "spk2utt", spk2utt_from_utt2spk(read_kaldi_map(dst / "utt2spk")))
    if (src / "img.scp").is_file():
        shutil.copyfile(src / "img.scp", dst / "img.scp")
    dropped = len(results) - len(kept)
    repaired = sum(1 for r in results if r.notes)
    logger.info("%s: %d utterances kept, %d dropped, %d repaired (see %s)", src.name, len(kept), dropped,
                repaired, dst / "problems.txt")
    if not kept:
        raise RuntimeError(f"{src}: every utterance was dropped; see {dst / 'problems.txt'}")
    if dropped > max_drop_share * len(results):
        raise RuntimeError(f"{src}: {dropped} of {len(results)} utterances dropped, more than "
                           f"{max_drop_share:.0%}; see {dst / 'problems.txt'}")
    return {"kept": len(kept), "dropped": dropped, "repaired": repaired}
