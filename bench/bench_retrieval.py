"""Speed and memory of ``retrieval_recall`` at SpokenCOCO scale, against a naive float64 version.

Usage:
    tools/venv/bin/python bench/bench_retrieval.py               # 25,020 utts x 5,000 images x 512
    tools/venv/bin/python bench/bench_retrieval.py --skip-naive  # chunked version only

The gallery has 5,000 images with 5 captions each plus a 6th caption for the first 20 (25,020
utterances, the size of the SpokenCOCO test set). Peak memory is the growth of this process's
``ru_maxrss`` high-water mark over the run, measured after the embeddings exist; the chunked
version runs first so its figure is not hidden by the naive one's larger peak.
"""
from __future__ import annotations

import argparse
import resource
import time
from typing import Callable, Dict, Tuple

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mib, print_result, ratio, reset_peak_rss  # noqa: E402

from espnet_speechclip.metrics import retrieval_recall

Result = Dict[str, Dict[str, float]]


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def naive_recall(speech: torch.Tensor, images: torch.Tensor, utt2img: torch.Tensor) -> Result:
    """Full N x M float64 similarity matrix, same pessimistic tie rule, k in (1, 5, 10)."""
    s = speech.double().numpy()
    g = images.double().numpy()
    s /= np.linalg.norm(s, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    u2i = utt2img.numpy()
    sims = s @ g.T  # (N, M) float64
    relevant = u2i[:, None] == np.arange(len(g))[None, :]  # (N, M) bool
    own = sims[np.arange(len(s)), u2i]
    s2i_rank = 1 + (sims >= own[:, None]).sum(1) - 1  # minus the relevant image itself
    best = np.where(relevant, sims, -np.inf).max(0)  # (M,) best caption per image
    i2s_rank = 1 + ((sims >= best[None, :]) & ~relevant).sum(0)
    return {
        "speech_to_image": {f"r{k}": float((s2i_rank <= k).mean()) for k in (1, 5, 10)},
        "image_to_speech": {f"r{k}": float((i2s_rank <= k).mean()) for k in (1, 5, 10)},
    }


def timed(fn: Callable[[], Result], repeats: int) -> Tuple[float, float, Result]:
    """Best wall time of ``repeats`` runs, peak-RSS growth (MiB) and the result."""
    rss_before = max_rss_mib()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, max_rss_mib() - rss_before, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=5000)
    parser.add_argument("--captions_per_image", type=int, default=5)
    parser.add_argument("--extra_captions", type=int, default=20)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunk_size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-naive", dest="skip_naive", action="store_true")
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    images = torch.randn(args.num_images, args.dim, generator=gen)
    utt2img = torch.cat([
        torch.arange(args.num_images).repeat_interleave(args.captions_per_image),
        torch.arange(args.extra_captions),
    ])
    # Noisy copies of the image vectors, so recalls are neither 0 nor 1.
    speech = images[utt2img] + 8.0 * torch.randn(len(utt2img), args.dim, generator=gen)

    print(f"N={len(utt2img):,} utterances, M={args.num_images:,} images, D={args.dim}, "
          f"torch threads={torch.get_num_threads()}, chunk_size={args.chunk_size}, "
          f"process max RSS before timing: {max_rss_mib():.0f} MiB")
    rows = []
    # The memory target is the whole process's peak while the recalls are computed
    # (embeddings included): the kernel's high-water mark, reset just before.
    window = reset_peak_rss()
    fast_t, fast_mem, fast = timed(
        lambda: retrieval_recall(speech, images, utt2img, chunk_size=args.chunk_size), args.repeats
    )
    rows.append(("chunked float32 (retrieval_recall)", fast_t, fast_mem, fast))
    process_peak = peak_rss_mib()
    if not args.skip_naive:
        naive_t, naive_mem, naive = timed(
            lambda: naive_recall(speech, images, utt2img), args.repeats
        )
        rows.append(("naive full-matrix float64", naive_t, naive_mem, naive))

    print(f"{'method':<36} {'best s':>8} {'peak +MiB':>10}  {'S->I r1/r5/r10':<20} I->S r1/r5/r10")
    for name, seconds, mem, res in rows:
        s2i = "/".join(f"{res['speech_to_image'][k]:.3f}" for k in ("r1", "r5", "r10"))
        i2s = "/".join(f"{res['image_to_speech'][k]:.3f}" for k in ("r1", "r5", "r10"))
        print(f"{name:<36} {seconds:>8.2f} {mem:>10.0f}  {s2i:<20} {i2s}")
    if len(rows) == 2:
        diff = max(abs(fast[d][k] - naive[d][k]) for d in fast for k in fast[d])
        print(f"naive / chunked time: {naive_t / fast_t:.1f}x; "
              f"max |recall difference| = {diff:.2e}")

    print(f"process peak RSS while the chunked recalls ran: {process_peak:.0f} MiB"
          + ("" if window else " (whole-process peak: VmHWM could not be reset)"))
    print_result("retrieval", [ratio("retrieval: chunked best time (s)", fast_t, "<= 5"),
                               ratio("retrieval: process peak RSS (GiB)", process_peak / 1024, "<= 1.0")],
                 utterances=len(utt2img), images=args.num_images, chunk_size=args.chunk_size,
                 naive_s=None if args.skip_naive else naive_t)


if __name__ == "__main__":
    main()
