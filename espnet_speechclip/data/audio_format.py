"""Stage 2: check, repair and filter a Kaldi-style data dir (audio and images) into a dump dir.

First the dir's consistency (``dir_check``: duplicated ids, unknown images, transcripts), then every
image a kept utterance uses (``image_check``), then every utterance's audio, read once. What can be
repaired is repaired and noted (another sample rate is resampled, stereo is down-mixed, a grayscale
image is converted); what cannot is dropped with its reason. Both go to ``<out_dir>/problems.txt``
(``id<TAB>action<TAB>reason``, action ``dropped``, ``repaired`` or ``ignored``) and the log; the rest
is written as a data dir with ``speech_shape`` (samples per utterance) for ESPnet's batch sampler.
Audio and images already in the target format are referenced in place instead of being copied.
"""
from __future__ import annotations

import io
import logging
import multiprocessing
import re
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import soundfile
from tqdm import tqdm

from espnet_speechclip.data.dir_check import ProblemReport, check_data_dir
from espnet_speechclip.data.image_check import check_images
from espnet_speechclip.data.kaldi_dir import spk2utt_from_utt2spk, write_kaldi_map

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
    if path.endswith("|"):
        # A Kaldi pipe ("sox x.flac -t wav - |"): run it here; ESPnet's sound reader cannot.
        try:
            proc = subprocess.run(path[:-1], shell=True, capture_output=True, timeout=600)
        except subprocess.TimeoutExpired:
            return AudioResult(utt, None, problem=f"pipe command timed out: {path}")
        if proc.returncode != 0 or not proc.stdout:
            err = proc.stderr.decode(errors="replace").strip()[-200:]
            return AudioResult(utt, None, problem=f"pipe command failed (exit {proc.returncode}): {path}: {err}")
        source, stream = None, io.BytesIO(proc.stdout)
    else:
        source = Path(path)
        if not source.is_file():
            return AudioResult(utt, None, problem=f"missing wav {path}")
        if source.stat().st_size == 0:
            return AudioResult(utt, None, problem=f"zero-byte wav {path}")
        stream = str(source)
    try:
        data, rate = soundfile.read(stream, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        return AudioResult(utt, None, problem=f"unreadable wav {path}: {err}")
    if not np.isfinite(data).all():
        return AudioResult(utt, None, problem=f"non-finite samples (NaN or inf) in {path}")
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
    if source is None:
        notes.append("decoded from a pipe command")
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

    Raises ``RuntimeError`` when the split ends up empty or more than ``max_drop_share`` of its
    utterances is dropped (the problems are written first, so nothing is lost).
    """
    src, dst = Path(data_dir), Path(out_dir)
    dst.mkdir(parents=True, exist_ok=True)
    report = ProblemReport(src.name)
    checked = check_data_dir(src, report, PER_UTT_FILES)
    utt2img = checked.per_utt["utt2img"]

    images = check_images(checked.img_scp, sorted({utt2img[u] for u in checked.wav_scp}), dst / "images", nj=nj)
    for image_id, result in sorted(images.items()):
        if result.path is None:
            report.ignore(image_id, f"image: {result.problem}")
        elif result.note:
            report.repair(image_id, f"image: {result.note}")
    for utt in checked.utts:
        if images[utt2img[utt]].path is None:
            report.drop(utt, f"unusable image: {utt2img[utt]}: {images[utt2img[utt]].problem}")

    wav_dir = dst / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(utt, checked.wav_scp[utt], wav_dir, fs, min_sec, max_sec) for utt in checked.utts
            if utt not in report.dropped]
    desc = f"stage 2: {src.name}"
    if nj > 1:
        with multiprocessing.get_context("spawn").Pool(nj) as pool:
            results = list(tqdm(pool.imap(_check_job, jobs, chunksize=32), total=len(jobs), desc=desc))
    else:
        results = [check_audio(*job) for job in tqdm(jobs, desc=desc)]
    for r in results:
        if r.path is None:
            report.drop(r.utt, r.problem)
        for note in r.notes:
            report.repair(r.utt, note)
    report.write(dst / "problems.txt")

    kept = {r.utt: r for r in results if r.path is not None}
    write_kaldi_map(dst / "wav.scp", {u: r.path for u, r in kept.items()})
    write_kaldi_map(dst / "speech_shape", {u: str(r.num_samples) for u, r in kept.items()})
    for name, mapping in checked.per_utt.items():
        write_kaldi_map(dst / name, {u: v for u, v in mapping.items() if u in kept})
    if "utt2spk" in checked.per_utt:
        write_kaldi_map(dst / "spk2utt", spk2utt_from_utt2spk({u: checked.per_utt["utt2spk"][u] for u in kept}))
    write_kaldi_map(dst / "img.scp", {i: images[i].path for i in sorted({utt2img[u] for u in kept})})

    dropped = checked.num_utts - len(kept)
    repaired = len({k for k, action, _ in report.lines if action == "repaired"})
    # The reason's leading words ("missing wav", "too short", ...) without ids, paths or figures.
    reasons = Counter(re.split(r"""[:(/'"]| \d""", reason)[0].strip() for _, action, reason in report.lines
                      if action == "dropped")
    logger.info("%s: %d of %d utterances kept, %d dropped, %d utterances/images repaired (see %s)%s", src.name,
                len(kept), checked.num_utts, dropped, repaired, dst / "problems.txt",
                "".join(f"\n  dropped for {why}: {n}" for why, n in reasons.most_common()))
    if not kept:
        raise RuntimeError(f"{src}: every utterance was dropped; see {dst / 'problems.txt'}")
    if dropped > max_drop_share * checked.num_utts:
        raise RuntimeError(f"{src}: {dropped} of {checked.num_utts} utterances dropped, more than "
                           f"{max_drop_share:.0%} (--max_drop_share); see {dst / 'problems.txt'}")
    return {"kept": len(kept), "dropped": dropped, "repaired": repaired}
