"""Speed of ``integrate_and_fire`` (forward + backward, CPU) against torch-cif and a per-frame loop.

Usage:
    tools/venv/bin/pip install torch-cif==0.2.0   # optional peer; its column is skipped without it
    tools/venv/bin/python bench/bench_cif.py
    tools/venv/bin/python bench/bench_cif.py --batch 8 --repeats 3   # quicker

Setting (issue 6): B=32 utterances of T=500 frames (valid lengths uniform in [250, 500]), D=768,
alpha = sigmoid(randn), float32, torch threads = 2. Each timed call builds the outputs from leaf
``frames`` and ``alpha`` tensors, takes ``(segments * probe).sum()`` with a fixed random probe and
back-propagates to both leaves.

Two modes:
  inference  no target lengths: fire at the threshold, plus the tail rule (leftover >= 0.5).
             Ours: ``integrate_and_fire``; torch-cif: ``cif_function`` without ``target_lengths``.
  training   S = round(0.05 * length) clipped to [1, 75] (SpeechCLIP+). Ours:
             ``scale_to_target(alpha, S)`` then ``integrate_and_fire``; torch-cif:
             ``cif_function(..., target_lengths=S, eps=0.0)``. torch-cif scales to ``S + eps``
             (default eps=1e-4), which shifts every weight by a relative eps/S; the check uses
             eps=0 so both scale to exactly S, and the default-eps difference is printed as well.

Before timing, outputs (segment counts, and segment values of the valid segments) are checked
within ``--tol`` (1e-5) against torch-cif and against the loop run in float64 on the first
utterances; our kernel run in float64 on the whole batch is printed as a second reference, so a
failed comparison shows which side is off. Gradient differences are printed (relative to the
largest gradient), not checked. The loop is timed (best of 3) on the first few utterances only
(``--loop-batch``, default 4) and its time is scaled to the full batch by the number of valid
frames (its cost is linear in frames); the printed line says so. The implementations are timed
round-robin (one call of each per round, best round kept), so a slow spell of the shared machine
hits all of them. Timings varied by up to ~2.5x between runs on a shared 2-core machine; see
bench/README.md.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, Dict, List, Optional, Tuple

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_result, ratio as make_ratio  # noqa: E402

from espnet_speechclip.cif import integrate_and_fire, scale_to_target, target_lengths_from_frames

try:
    import torch_cif
except ImportError:  # the peer column is optional
    torch_cif = None

Outputs = Tuple[torch.Tensor, torch.Tensor]  # segments (B, N, D), counts (B,)


# ----------------------------------------------------------------------------------------------
# The three implementations, each (frames, alpha, lengths, targets-or-None) -> (segments, counts).
# ``alpha`` is the raw sigmoid output over all T frames (padding not zeroed).
# ----------------------------------------------------------------------------------------------
def valid_mask(lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
    return torch.arange(num_frames)[None, :] < lengths[:, None]


def ours(frames, alpha, lengths, targets) -> Outputs:
    if targets is not None:
        alpha = scale_to_target(alpha.masked_fill(~valid_mask(lengths, alpha.size(1)), 0.0), targets)
    segments, counts, _ = integrate_and_fire(frames, alpha, lengths)
    return segments, counts


def make_torch_cif(eps: float) -> Callable[..., Outputs]:
    def peer(frames, alpha, lengths, targets) -> Outputs:
        out = torch_cif.cif_function(
            frames, alpha, beta=1.0, tail_thres=0.5,
            padding_mask=~valid_mask(lengths, alpha.size(1)), target_lengths=targets, eps=eps,
        )
        return out["cif_out"][0], out["cif_lengths"][0]
    return peer


def loop_one(frames, alpha, length: int, threshold=1.0, tail_threshold=0.5) -> List[torch.Tensor]:
    """Sequential CIF over one utterance (same rule as ``naive_cif`` in test/test_cif.py)."""
    segments = []
    acc = frames.new_zeros(())
    state = frames.new_zeros(frames.size(-1))
    for t in range(length):
        a = alpha[t]
        while acc + a >= threshold:
            part = threshold - acc
            segments.append(state + part * frames[t])
            a = a - part
            acc = frames.new_zeros(())
            state = frames.new_zeros(frames.size(-1))
        acc = acc + a
        state = state + a * frames[t]
    if length > 0 and acc >= tail_threshold:
        segments.append(state * (threshold / acc.detach()))
    return segments


def loop(frames, alpha, lengths, targets) -> Outputs:
    if targets is not None:
        alpha = scale_to_target(alpha.masked_fill(~valid_mask(lengths, alpha.size(1)), 0.0), targets)
    per_utt = [loop_one(frames[b], alpha[b], int(lengths[b])) for b in range(frames.size(0))]
    counts = torch.tensor([len(s) for s in per_utt])
    n_max = int(counts.max()) if len(per_utt) else 0
    rows = [
        torch.cat([torch.stack(s) if s else frames.new_zeros(0, frames.size(-1)),
                   frames.new_zeros(n_max - len(s), frames.size(-1))])
        for s in per_utt
    ]
    return torch.stack(rows), counts


# ----------------------------------------------------------------------------------------------
def forward_backward(fn, frames, alpha, lengths, targets, probe) -> Tuple[Outputs, torch.Tensor, torch.Tensor]:
    """One forward + backward from fresh leaves; returns outputs and the two gradients."""
    x = frames.detach().clone().requires_grad_(True)
    a = alpha.detach().clone().requires_grad_(True)
    segments, counts = fn(x, a, lengths, targets)
    n = segments.size(1)
    (segments * probe[: segments.size(0), :n]).sum().backward()
    return (segments.detach(), counts), x.grad, a.grad


def best_time(fn, args, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        forward_backward(fn, *args)
        best = min(best, time.perf_counter() - start)
    return best


def compare(ref: Outputs, other: Outputs) -> Tuple[int, float]:
    """(number of utterances whose counts differ, max |difference| over valid segments)."""
    (seg_a, cnt_a), (seg_b, cnt_b) = ref, other
    mismatched = int((cnt_a != cnt_b).sum())
    diff = 0.0
    for b in range(cnt_a.numel()):
        k = int(min(cnt_a[b], cnt_b[b]))
        if k:
            diff = max(diff, float((seg_a[b, :k] - seg_b[b, :k]).abs().max()))
    return mismatched, diff


def rel_grad_diff(grads, ref_grads) -> Tuple[float, ...]:
    """max|g - g_ref| / max|g_ref| for each gradient."""
    return tuple(float((g - r).abs().max() / r.abs().max().clamp(min=1e-30)) for g, r in zip(grads, ref_grads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-batch", dest="loop_batch", type=int, default=4)
    parser.add_argument("--loop-repeats", dest="loop_repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tol", type=float, default=1e-5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    B, T, D = args.batch, args.frames, args.dim
    frames = torch.randn(B, T, D, generator=gen)
    alpha = torch.sigmoid(torch.randn(B, T, generator=gen))
    lengths = torch.randint(T // 2, T + 1, (B,), generator=gen)
    lengths[0] = T
    targets = target_lengths_from_frames(lengths, ratio=0.05, max_segments=75)
    n_max = T + 1  # more segments than any mode can produce (alpha < 1)
    probe = torch.randn(B, n_max, D, generator=gen)
    lb = min(args.loop_batch, B)
    loop_scale = float(lengths.sum()) / float(lengths[:lb].sum())

    print(f"B={B}, T={T}, D={D}, lengths in [{int(lengths.min())}, {int(lengths.max())}] "
          f"({int(lengths.sum())} valid frames), float32, CPU, torch {torch.__version__}, "
          f"threads={torch.get_num_threads()}, best of {args.repeats} (loop: best of {args.loop_repeats})")
    if torch_cif is None:
        print("torch-cif is not installed: skipping its column "
              "(tools/venv/bin/pip install torch-cif==0.2.0 to include it)")
    else:
        print(f"peer: torch-cif {torch_cif.__version__}")
    print(f"loop: timed on the first {lb} utterances ({int(lengths[:lb].sum())} frames) and scaled "
          f"x{loop_scale:.2f} to the batch's {int(lengths.sum())} frames")

    summary: Dict[str, Dict[str, Optional[float]]] = {}
    failures: List[str] = []
    for mode in ("inference", "training"):
        tgt = targets if mode == "training" else None
        full_args = (frames, alpha, lengths, tgt, probe)
        small_args = (frames[:lb], alpha[:lb], lengths[:lb], None if tgt is None else tgt[:lb], probe)

        out_ours, gx, ga = forward_backward(ours, *full_args)
        print(f"\n[{mode}] segments per utterance: {int(out_ours[1].min())}..{int(out_ours[1].max())}")

        # --- correctness -------------------------------------------------------------------
        # References: the sequential loop in float64 on the first utterances, and our kernel in
        # float64 on the whole batch (equal to the loop to 1e-10 in test/test_cif.py).
        as64 = (frames.double(), alpha.double(), lengths, tgt, probe.double())
        ref64, rx, ra = forward_backward(ours, *as64)
        loop64 = forward_backward(loop, frames[:lb].double(), alpha[:lb].double(), lengths[:lb],
                                  None if tgt is None else tgt[:lb], probe.double())[0]
        mism, diff = compare((out_ours[0][:lb], out_ours[1][:lb]), loop64)
        ok = mism == 0 and diff <= args.tol
        print(f"  ours vs float64 loop (first {lb}): count mismatches={mism}, "
              f"max|seg diff|={diff:.2e} -> {'OK' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"{mode}: ours vs loop")
        mism, diff = compare(out_ours, ref64)
        gdiff = rel_grad_diff((gx, ga), (rx, ra))
        print(f"  ours vs float64 ours (all {B}): count mismatches={mism}, max|seg diff|={diff:.2e}, "
              f"rel. grad diff (frames, alpha)={gdiff[0]:.1e}, {gdiff[1]:.1e}")
        if torch_cif is not None:
            out_peer, px, pa = forward_backward(make_torch_cif(0.0), *full_args)
            mism, diff = compare(out_ours, out_peer)
            ok = mism == 0 and diff <= args.tol
            gdiff = rel_grad_diff((gx, ga), (px, pa))
            print(f"  ours vs torch-cif (eps=0): count mismatches={mism}, max|seg diff|={diff:.2e}, "
                  f"rel. grad diff (frames, alpha)={gdiff[0]:.1e}, {gdiff[1]:.1e} "
                  f"-> {'OK' if ok else 'FAIL'}")
            if not ok:
                failures.append(f"{mode}: ours vs torch-cif")
            mism, diff = compare(out_peer, ref64)
            print(f"  torch-cif vs float64 ours (all {B}): count mismatches={mism}, max|seg diff|={diff:.2e}"
                  "  (torch-cif accumulates its cumsum in float32)")
            if mode == "training":
                mism, diff = compare(out_ours, forward_backward(make_torch_cif(1e-4), *full_args)[0])
                print(f"  (torch-cif default eps=1e-4 scales to S+1e-4: vs ours count mismatches={mism}, "
                      f"max|seg diff|={diff:.2e}; not used for the check)")

        # --- timing -------------------------------------------------------------------------
        # Round-robin: each round times every implementation once, so a slow spell of the shared
        # machine hits all of them rather than one; the best round of each is kept.
        timed = {"ours": (ours, full_args, args.repeats), "loop": (loop, small_args, args.loop_repeats)}
        if torch_cif:
            timed["torch-cif"] = (make_torch_cif(0.0), full_args, args.repeats)
        best = {name: float("inf") for name in timed}
        for round_ in range(max(args.repeats, args.loop_repeats)):
            for name, (fn, fn_args, rounds) in timed.items():
                if round_ < rounds:
                    best[name] = min(best[name], best_time(fn, fn_args, 1))
        summary[mode] = {"ours": best["ours"], "torch-cif": best.get("torch-cif"),
                         "loop": best["loop"] * loop_scale}

    print(f"\n{'mode':<10} {'ours ms':>9} {'torch-cif ms':>13} {'loop ms (scaled)':>17} "
          f"{'torch-cif/ours':>15} {'loop/ours':>10}")
    for mode, t in summary.items():
        peer = f"{t['torch-cif'] * 1e3:>13.1f}" if t["torch-cif"] else f"{'skipped':>13}"
        ratio = f"{t['torch-cif'] / t['ours']:>14.2f}x" if t["torch-cif"] else f"{'-':>15}"
        print(f"{mode:<10} {t['ours'] * 1e3:>9.1f} {peer} {t['loop'] * 1e3:>17.0f} "
              f"{ratio} {t['loop'] / t['ours']:>9.1f}x")
    print("targets: torch-cif/ours >= 1.5x, loop/ours >= 20x")
    print(f"checks within {args.tol:g}: " + ("all passed" if not failures else
          "FAILED: " + "; ".join(failures) + " (see the float64 reference lines above for which side is off)"))
    ratios = []
    for mode, t in summary.items():
        ratios.append(make_ratio(f"CIF {mode}: torch-cif / ours time", t["torch-cif"] / t["ours"] if t["torch-cif"] else None,
                            ">= 1.5"))
        ratios.append(make_ratio(f"CIF {mode}: loop / ours time", t["loop"] / t["ours"], ">= 20"))
    print_result("cif", ratios, failures=failures, torch_cif=torch_cif is not None, batch=B, frames=T, dim=D,
                 ms={mode: {k: (v * 1e3 if v else None) for k, v in t.items()} for mode, t in summary.items()})


if __name__ == "__main__":
    main()
