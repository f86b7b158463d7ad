"""Continuous Integrate-and-Fire (CIF) and its quantity loss.

CIF (Dong & Xu, "CIF: Continuous Integrate-and-Fire for End-to-End Speech Recognition", ICASSP 2020)
turns a frame sequence h_1..h_T with weights α_t ∈ [0, 1] into a shorter sequence of segments.
Weights are integrated left to right; when the accumulated weight reaches the threshold β the
segment fires:

    c_n = Σ_t w_{n,t} h_t,    Σ_t w_{n,t} = β,

where a frame whose α crosses the threshold is split: the part that completes segment n goes to
c_n, the remainder starts segment n+1. SpeechCLIP+ (Wang et al., 2024, §3) uses CIF to replace the
K fixed CLS tokens of cascaded SpeechCLIP, with

    α_t = sigmoid(Linear(ReLU(Conv1d_k=3(h))_t)),                 (weight predictor)
    α'_t = α_t · S / Σ_t α_t    (training only, S = round(0.05 T)), (weight scaling)
    L_q = | Σ_t α_t − S |,                                          (quantity loss)

and at inference a tail whose leftover weight is at least 0.5 fires once more.

Vectorised form used here: with the cumulative sums C_t = Σ_{τ≤t} α_τ and C_0 = 0, frame t covers
the interval [C_{t-1}, C_t] of the weight axis and segment n the interval [nβ, (n+1)β), so

    w_{n,t} = max(0, min(C_t, (n+1)β) − max(C_{t-1}, nβ)),

which is the sequential rule exactly, computed as one (B, N, T) matrix and one batched matmul.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn


def integrate_and_fire(
    frames: torch.Tensor,
    alpha: torch.Tensor,
    lengths: torch.Tensor,
    threshold: float = 1.0,
    tail_threshold: float = 0.5,
    min_segments: int = 0,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integrate frames into segments wherever the accumulated weight reaches ``threshold``.

    Args:
        frames: (B, T, D) frame features.
        alpha: (B, T) weights in [0, 1]; frames at or beyond ``lengths`` are ignored.
        lengths: (B,) number of valid frames per utterance.
        threshold: β, the accumulated weight at which a segment fires.
        tail_threshold: a leftover weight ≥ this after the last frame fires one more
            segment, scaled up to ``threshold`` (the scale factor is treated as a constant,
            as in torch-cif, so gradients are those of the unscaled tail).
        min_segments: 0 or 1. With 1 (the SpeechCLIP+ reference code), an utterance whose total
            weight stays below ``threshold`` still gives one segment, its unscaled α-weighted
            sum, and fires no tail (the reference counts clip(floor(Σα), 1, 75) segments).

    Returns:
        segments: (B, N, D), zero beyond each utterance's count.
        segment_lengths: (B,) number of segments per utterance (may be 0).
        fire_frames: (B, N) frame index at which each segment fired, -1 beyond the count.
    """
    if frames.dim() != 3 or alpha.shape != frames.shape[:2]:
        raise ValueError(
            f"integrate_and_fire: expected frames (B, T, D) and alpha (B, T), "
            f"got {tuple(frames.shape)} and {tuple(alpha.shape)}"
        )
    if lengths.shape != (frames.size(0),):
        raise ValueError(f"integrate_and_fire: lengths must be (B,), got {tuple(lengths.shape)}")
    batch, num_frames, _ = frames.shape
    device = frames.device
    valid = torch.arange(num_frames, device=device)[None, :] < lengths[:, None]  # (B, T)
    # float64 accumulation keeps firing decisions identical to a left-to-right running sum
    # for long utterances; the result is cast back before touching the frames.
    alpha64 = alpha.to(torch.float64).masked_fill(~valid, 0.0)
    csum = alpha64.cumsum(dim=1)  # (B, T)
    prev = csum - alpha64
    total = csum[:, -1] if num_frames > 0 else alpha64.new_zeros(batch)

    with torch.no_grad():
        full = torch.floor(total / threshold).long()  # (B,) complete segments
        tail = total - full.to(torch.float64) * threshold
        has_tail = tail >= tail_threshold
        if min_segments not in (0, 1):
            raise ValueError(f"min_segments must be 0 or 1, got {min_segments}")
        forced = (full == 0) & torch.tensor(min_segments == 1, device=device)  # (B,) one unscaled segment
        has_tail = has_tail & ~forced
        counts = torch.maximum(full + has_tail.long(), forced.long())
    max_segments = int(counts.max().item()) if batch > 0 else 0

    index = torch.arange(max_segments, device=device, dtype=torch.float64)  # (N,)
    seg_end = ((index + 1) * threshold)[None, :, None]  # (1, N, 1)
    present = index[None, :] < counts[:, None]  # (B, N)
    with torch.no_grad():
        is_tail = (index[None, :] == full[:, None]) & has_tail[:, None]
        scale = torch.where(is_tail, threshold / tail.clamp(min=1e-12)[:, None], 1.0)
        scale = scale.masked_fill(~present, 0.0)
    if max_segments <= DENSE_MAX_SEGMENTS:
        segments = _dense_segments(frames, csum, prev, index, threshold, scale)
    else:
        segments = _scattered_segments(frames, csum, prev, max_segments, threshold, scale)

    with torch.no_grad():
        # Segment n fires at the first frame whose running sum reaches (n+1)β; the tail fires
        # at the last valid frame.
        fire_at = torch.searchsorted(csum.contiguous(), (seg_end[..., 0]).expand(batch, -1).contiguous())
        at_end = is_tail | (forced[:, None] & (index[None, :] == 0))
        fire_at = torch.where(at_end, (lengths - 1)[:, None].to(fire_at.dtype), fire_at)
        fire_frames = fire_at.masked_fill(~present, -1)
    return segments, counts, fire_frames


# Up to this many segments one (B, N, T) weight matrix and a matmul is fastest (training: N ~ 0.05 T);
# beyond it each frame is scattered into the segments it touches, whose cost does not grow with N
# (bench/bench_cif.py measured both).
DENSE_MAX_SEGMENTS = 64


def _overlap(csum: torch.Tensor, prev: torch.Tensor, seg_start: torch.Tensor, threshold: float) -> torch.Tensor:
    """w = max(0, min(C_t, (n+1)β) − max(C_{t−1}, nβ)), broadcast over the given segment starts."""
    return (torch.minimum(csum, seg_start + threshold) - torch.maximum(prev, seg_start)).clamp(min=0.0)


def _dense_segments(frames, csum, prev, index, threshold, scale) -> torch.Tensor:
    weights = _overlap(csum[:, None, :], prev[:, None, :], (index * threshold)[None, :, None], threshold)
    weights = weights * scale[:, :, None]  # (B, N, T)
    return torch.bmm(weights.to(frames.dtype), frames)  # (B, N, D)


def _scattered_segments(frames, csum, prev, num_segments, threshold, scale) -> torch.Tensor:
    """Frame t touches segments ⌊C_{t−1}/β⌋ .. ⌊C_t/β⌋ only: add it there (same weights).

    Every frame goes to the segment it starts in; the frames that cross a firing point also go,
    with their remainder, to the next segment(s). With α ≤ β that is one frame per segment, so
    the second part costs N rows, not T.
    """
    batch, num_frames, dim = frames.shape
    with torch.no_grad():
        first = torch.floor(prev / threshold).long()
        span = (torch.floor(csum / threshold).long() - first).clamp(min=0)
        steps = int(span.max().item()) if span.numel() else 0
        # Weight beyond the last kept segment lands in an extra row that is dropped.
        scale_pad = torch.cat([scale, scale.new_zeros(batch, 1)], dim=1)
        row_offset = (torch.arange(batch, device=frames.device) * (num_segments + 1))[:, None]

    def weights_and_rows(step: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Each frame's weight in, and flat output row of, segment ⌊C_{t−1}/β⌋ + step."""
        seg = (first + step).clamp(max=num_segments)
        weight = _overlap(csum, prev, (first + step).to(csum.dtype) * threshold, threshold)
        weight = (weight * scale_pad.gather(1, seg)).to(frames.dtype).reshape(-1)
        return weight, (seg + row_offset).reshape(-1)

    weight, rows = weights_and_rows(0)
    extra_weights, extra_rows, picked = [weight[:0]], [rows[:0]], [rows[:0]]
    for step in range(1, steps + 1):
        with torch.no_grad():
            crossing = (span >= step).reshape(-1).nonzero().squeeze(1)
        step_weight, step_rows = weights_and_rows(step)
        extra_weights.append(step_weight[crossing])
        extra_rows.append(step_rows[crossing])
        picked.append(crossing)
    out = _AddWeightedRows.apply(frames.reshape(batch * num_frames, dim), weight, torch.cat(extra_weights), rows,
                                 torch.cat(extra_rows), torch.cat(picked), batch * (num_segments + 1))
    return out.view(batch, num_segments + 1, dim)[:, :num_segments]


class _AddWeightedRows(torch.autograd.Function):
    """out[rows_t] += w_t · F_t for every frame t, and out[rows_k] += w_k · F[picked_k] for the
    crossing frames. Its own backward gathers each output gradient once and writes the frame
    gradient in place: half the memory traffic of the same ops under autograd (bench_cif.py)."""

    @staticmethod
    def forward(ctx, frames, weight, extra_weight, rows, extra_rows, picked, num_rows):
        out = frames.new_zeros(num_rows, frames.size(1))
        out.index_add_(0, rows, weight[:, None] * frames)
        picked_frames = frames.index_select(0, picked)
        out.index_add_(0, extra_rows, extra_weight[:, None] * picked_frames)
        ctx.save_for_backward(frames, weight, extra_weight, rows, extra_rows, picked, picked_frames)
        return out

    @staticmethod
    def backward(ctx, grad):
        frames, weight, extra_weight, rows, extra_rows, picked, picked_frames = ctx.saved_tensors
        grad_rows = grad.index_select(0, rows)
        grad_extra = grad.index_select(0, extra_rows)
        grad_weight = torch.linalg.vecdot(grad_rows, frames) if ctx.needs_input_grad[1] else None
        grad_extra_weight = torch.linalg.vecdot(grad_extra, picked_frames) if ctx.needs_input_grad[2] else None
        grad_frames = None
        if ctx.needs_input_grad[0]:
            grad_frames = grad_rows.mul_(weight[:, None])
            grad_frames.index_add_(0, picked, grad_extra * extra_weight[:, None])
        return grad_frames, grad_weight, grad_extra_weight, None, None, None, None


def uniform_within_segments(alpha: torch.Tensor, lengths: torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
    """α̃: weights that fire where α fires but spread each segment's mass evenly over its span.

    Not in SpeechCLIP+. CIF weighs frame t by α_t inside its segment, so when α is a train of
    spikes on word ends (as a boundary prior makes it) a segment is little more than its last
    frame. With τ_n the fractional frame position at which the running sum C of α reaches nβ
    (frame t spanning [t, t+1], τ_n = t + (nβ − C_{t−1}) / α_t), and L the valid frames,

        C̃ = the piecewise-linear function through (0, 0), (τ_1, β), …, (τ_F, Fβ), (L, Σα),
        α̃_t = C̃(t + 1) − C̃(t),

    so CIF over α̃ fires in the same frames at the same fractions, keeps the same tail, and
    segment n is the plain mean of the frames (and frame parts) between τ_{n−1} and τ_n.
    Differentiable in α through the τ_n and Σα. alpha (B, T), zero beyond lengths (B,).
    """
    batch, num_frames = alpha.shape
    valid = torch.arange(num_frames, device=alpha.device)[None, :] < lengths[:, None]
    alpha64 = alpha.to(torch.float64).masked_fill(~valid, 0.0)
    csum = alpha64.cumsum(dim=1)
    total = csum[:, -1] if num_frames > 0 else alpha64.new_zeros(batch)
    with torch.no_grad():
        full = torch.floor(total / threshold).long()
    max_full = int(full.max().item()) if batch > 0 else 0
    index = torch.arange(1, max_full + 1, device=alpha.device)
    reached = (index[None, :] * threshold).to(torch.float64).expand(batch, -1).contiguous()  # (B, F)
    fired = index[None, :] <= full[:, None]
    with torch.no_grad():
        frame = torch.searchsorted(csum.contiguous(), reached).clamp(max=max(num_frames - 1, 0))
    before = (csum - alpha64).gather(1, frame)
    tau = frame.to(torch.float64) + (reached - before) / alpha64.gather(1, frame).clamp(min=1e-12)
    end = lengths.to(torch.float64)[:, None]
    # Knots (x, y) of C̃; segments that do not fire sit at (L, Σα), which leaves C̃ unchanged.
    knot_x = torch.cat([torch.zeros_like(end), torch.where(fired, tau, end), end], dim=1)
    knot_y = torch.cat([torch.zeros_like(end), torch.where(fired, reached, total[:, None]), total[:, None]], dim=1)
    ends = torch.minimum(torch.arange(1, num_frames + 1, device=alpha.device, dtype=torch.float64)[None, :], end)
    with torch.no_grad():
        right = torch.searchsorted(knot_x.contiguous(), ends.contiguous()).clamp(min=1, max=knot_x.size(1) - 1)
    x0, x1 = knot_x.gather(1, right - 1), knot_x.gather(1, right)
    y0, y1 = knot_y.gather(1, right - 1), knot_y.gather(1, right)
    cumulative = y0 + (ends - x0) * (y1 - y0) / (x1 - x0).clamp(min=1e-12)
    smoothed = torch.diff(cumulative, dim=1, prepend=torch.zeros_like(end))
    return smoothed.masked_fill(~valid, 0.0).to(alpha.dtype)


def scale_to_target(alpha: torch.Tensor, target_lengths: torch.Tensor, eps: float = 1e-6,
                    sum_eps: float = 0.0) -> torch.Tensor:
    """Training-time weight scaling α'_t = α_t · (S + sum_eps) / Σ α (SpeechCLIP+ §3), so exactly S
    segments fire (the reference code adds sum_eps = 1e-5 against rounding below S).

    Args:
        alpha: (B, T) weights, already zero on padded frames.
        target_lengths: (B,) target segment counts S.
    """
    total = alpha.sum(dim=1, keepdim=True)
    return alpha * ((target_lengths[:, None].to(alpha.dtype) + sum_eps) / total.clamp(min=eps))


def target_lengths_from_frames(lengths: torch.Tensor, ratio: float, max_segments: int) -> torch.Tensor:
    """S = round(ratio · T) clipped to [1, max_segments] (SpeechCLIP+: ratio 0.05, at most 75 segments)."""
    return torch.round(lengths.to(torch.float32) * ratio).long().clamp(min=1, max=max_segments)


def quantity_loss(alpha: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """L_q = mean_b |Σ_t α_{b,t} − S_b| on the unscaled weights (padding already zeroed)."""
    return (alpha.sum(dim=1) - target_lengths.to(alpha.dtype)).abs().mean()


class CIFWeightPredictor(nn.Module):
    """α = sigmoid(Linear(ReLU(Conv1d(D, D, k=3)))), zero on padding (SpeechCLIP+ CIF module)."""

    def __init__(self, input_size: int, kernel_size: int = 3):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"weight_kernel_size must be odd and >= 1, got {kernel_size}")
        self.conv = nn.Conv1d(input_size, input_size, kernel_size, padding=kernel_size // 2)
        self.proj = nn.Linear(input_size, 1)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """frames (B, T, D), lengths (B,) -> alpha (B, T)."""
        valid = torch.arange(frames.size(1), device=frames.device)[None, :] < lengths[:, None]
        hidden = frames.masked_fill(~valid[..., None], 0.0)
        hidden = torch.relu(self.conv(hidden.transpose(1, 2))).transpose(1, 2)
        alpha = torch.sigmoid(self.proj(hidden).squeeze(-1))
        return alpha.masked_fill(~valid, 0.0)
