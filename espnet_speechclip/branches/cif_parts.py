"""The parts a CIF segmenter is assembled from, each chosen in ``CIFSegmenter.from_config``.

With α the CIF weights, T valid frames and S the target count (see ``espnet_speechclip.cif``):

    weight source    what α is predicted from and at which rate the segments are integrated
                     (context: the block's frames; local: the frames before self-attention;
                     upstream: the upstream's own frames, finer than the encoder's)
    weight predictor α = sigmoid(Linear(ReLU(Conv1d(h))))          this plugin (``cif.CIFWeightPredictor``):
                                                                    padded frames zeroed
                     α = sigmoid(Linear(Drop(ReLU(Drop(Conv1d(h))))))  reference: dropout 0.5, the
                     conv sees the padded frames as the block leaves them
    target           S = clip(round(r · T), 1, S_max)               this plugin (r = 0.05)
                     S = round(T / 20), unclipped                   reference
    scaling          α' = α · (S + ε_s) / Σα in training            reference: ε_s = 1e-5, only
                     during the first ``steps`` training batches (5,000 for the paper configs)
    pooling          segments weigh frames by α (CIF) or evenly between fires (``uniform``)
    firing           count = floor(Σα) (+1 for a tail ≥ 0.5 at inference), ≤ S_max; the reference
                     gives at least one segment (the unscaled sum when Σα < 1) and no tail in
                     training
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from espnet_speechclip.cif import integrate_and_fire, scale_to_target, target_lengths_from_frames, uniform_within_segments


class ReferenceCIFWeights(nn.Module):
    """SpeechCLIP+ ``CIF`` weights: ``num_layers`` × (Conv1d → Dropout → ReLU), then Dropout →
    Linear → sigmoid, clipped to [0, 1] and zeroed on padding. The conv reads the padded frames as
    they are (a frame next to the padding sees it). Dropout p = 0.5 (``nn.Dropout()``; the configs'
    ``conv_cif_dropout`` is never read by the reference code). SpokenCOCO's large Cascaded+ has two
    conv layers of width 5; every other published model one of width 3."""

    def __init__(self, input_size: int, kernel_size: int = 3, dropout_rate: float = 0.5, num_layers: int = 1):
        super().__init__()
        layers = []
        for _ in range(num_layers):
            layers += [nn.Conv1d(input_size, input_size, kernel_size, padding=kernel_size // 2),
                       nn.Dropout(dropout_rate), nn.ReLU()]
        self.conv = nn.Sequential(*layers)
        self.proj_dropout = nn.Dropout(dropout_rate)
        self.proj = nn.Linear(input_size, 1)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = torch.arange(frames.size(1), device=frames.device)[None, :] < lengths[:, None]
        hidden = self.conv(frames.transpose(1, 2)).transpose(1, 2)
        alpha = torch.sigmoid(self.proj(self.proj_dropout(hidden))).clip(0.0, 1.0).squeeze(-1)
        return alpha.masked_fill(~valid, 0.0)


class RatioTarget:
    """S = clip(round(ratio · T), 1, max_segments) (this plugin; SpeechCLIP+ §3 gives r = 0.05)."""

    def __init__(self, ratio: float, max_segments: int):
        self.ratio, self.max_segments = ratio, max_segments

    def __call__(self, lengths: torch.Tensor) -> torch.Tensor:
        return target_lengths_from_frames(lengths, self.ratio, self.max_segments)


class FramesPerSegmentTarget:
    """S = round(T / n), unclipped (reference ``(audio_feat_len / 20).round()``, n = 20)."""

    def __init__(self, frames_per_segment: int = 20):
        self.frames_per_segment = frames_per_segment

    def __call__(self, lengths: torch.Tensor) -> torch.Tensor:
        return (lengths / self.frames_per_segment).round().long()


class ScaleToTarget(nn.Module):
    """α' = α · (S + sum_eps) / Σα while training (``cif.scale_to_target``; the reference adds
    sum_eps = 1e-5 so that floor(Σα') = S despite rounding).

    ``steps``: scale only during the first ``steps`` training batches (reference ``scaling_step``;
    the count is a buffer, so it survives resume); None scales throughout.
    """

    def __init__(self, sum_eps: float = 0.0, steps: Optional[int] = None):
        super().__init__()
        self.sum_eps, self.steps = sum_eps, steps
        if steps is not None:
            self.register_buffer("num_batches", torch.zeros((), dtype=torch.long))

    def forward(self, alpha: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return alpha
        if self.steps is not None:
            active = int(self.num_batches) < self.steps
            self.num_batches += 1
            if not active:
                return alpha
        return scale_to_target(alpha, target, sum_eps=self.sum_eps)


@dataclass
class Firing:
    """Integrate-and-fire with its count rule. threshold β; tail_threshold; max_segments;
    min_segments (reference: 1, the unscaled sum when Σα < β); tail_in_training (reference: no)."""

    threshold: float = 1.0
    tail_threshold: float = 0.5
    max_segments: int = 75
    min_segments: int = 0
    tail_in_training: bool = True

    def __call__(self, frames: torch.Tensor, alpha: torch.Tensor, lengths: torch.Tensor,
                 training: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tail = self.tail_threshold if (self.tail_in_training or not training) else math.inf
        segments, counts, fires = integrate_and_fire(frames, alpha, lengths, self.threshold, tail,
                                                     min_segments=self.min_segments)
        if segments.size(1) > self.max_segments:
            segments, fires = segments[:, : self.max_segments], fires[:, : self.max_segments]
            counts = counts.clamp(max=self.max_segments)
        return segments, counts, fires


class AlphaWeightedSegments:
    """CIF's own segments: frame t weighs α_t in its segment."""

    def __call__(self, alpha: torch.Tensor, lengths: torch.Tensor, threshold: float) -> torch.Tensor:
        return alpha


class UniformSegments:
    """Same fires, each segment the plain mean of its frames (``cif.uniform_within_segments``)."""

    def __call__(self, alpha: torch.Tensor, lengths: torch.Tensor, threshold: float) -> torch.Tensor:
        return uniform_within_segments(alpha, lengths, threshold)
