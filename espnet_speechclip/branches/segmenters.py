"""Keyword segmenters of the cascaded branch: K CLS tokens (SpeechCLIP) or CIF (SpeechCLIP+).

CLS (Shih et al., 2022, §3.3): K = 8 learnable CLS tokens prepended to the frames, one 1-head
Transformer layer (attention + residual + LN), the K outputs projected to CLIP's token width.

CIF (Wang et al., 2024, §3): one self-attention layer over the frames, then CIF weights α and
integrate-and-fire (see ``espnet_speechclip.cif``); at training time α is rescaled so that
S = round(0.05 T) segments fire and the quantity loss |Σα − S| is returned; at most 75 segments so
that SOT + segments + EOT fit CLIP's 77-token context.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from espnet_speechclip.branches.abs_branch import AbsSegmenter, padding_mask
from espnet_speechclip.cif import (
    CIFWeightPredictor,
    integrate_and_fire,
    quantity_loss,
    scale_to_target,
    target_lengths_from_frames,
    uniform_within_segments,
)


class CLSKeywordSegmenter(AbsSegmenter):
    """Args: input_size D, token_width W (CLIP), num_keywords K (SpeechCLIP: 8)."""

    def __init__(self, input_size: int, token_width: int, num_keywords: int = 8, attention_heads: int = 1,
                 linear_units: int = 3072, dropout_rate: float = 0.1):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, num_keywords, input_size) * 0.02)
        self.layer = nn.TransformerEncoderLayer(input_size, attention_heads, linear_units, dropout_rate,
                                                activation="gelu", batch_first=True)
        self.proj = nn.Linear(input_size, token_width)
        self.num_keywords = num_keywords
        self.token_width = token_width

    def output_size(self) -> int:
        return self.token_width

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor, local_frames: Optional[torch.Tensor] = None,
                upstream_frames: Optional[torch.Tensor] = None,
                upstream_lengths: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """frames (B, T, D) -> {"keywords": (B, K, W), "keyword_lengths": (B,) all K}."""
        batch, k = frames.size(0), self.num_keywords
        x = torch.cat([self.cls.expand(batch, -1, -1), frames], dim=1)  # (B, K+T, D)
        x = self.layer(x, src_key_padding_mask=padding_mask(lengths + k, x.size(1)))
        keyword_lengths = torch.full((batch,), k, dtype=torch.long, device=frames.device)
        return {"keywords": self.proj(x[:, :k]), "keyword_lengths": keyword_lengths}


class CIFSegmenter(AbsSegmenter):
    """Args: input_size D, token_width W, target_ratio (SpeechCLIP+: 0.05 segments per frame),
    max_segments (75), threshold β (1.0), tail_threshold (0.5), integrate_from, weights_from,
    detach_weight_input (False), weight_kernel_size (3), upstream_size, local_frame_centre,
    segment_weights ("alpha").

    ``integrate_from`` picks what the segments are made of and ``weights_from`` what α is
    predicted from. "context" (SpeechCLIP+, both): the frames after the self-attention layer.
    "local": the frames before any self-attention (the encoder's input layer, see
    ``encode_frames``). With contextual frames any fixed-rate chunk can carry any word, so
    nothing rewards firing at word ends; with local frames a segment holds only what lies
    between its firings. A contextual α can still fire at a steady rate (it can count frames);
    a local α sees ~0.2 s of sound, so it can only fire on acoustic events.

    ``weights_from: upstream`` (not in SpeechCLIP+) predicts α from the upstream's own frames, at
    its rate (20 ms for the SpokenShapes filterbank, twice the encoder's): CIF then integrates at
    that rate, upstream frame t taking the encoder frame whose receptive field is centred nearest
    to it, i = round((t − c) / r) with r = T_u / T the rate ratio and c = ``local_frame_centre``
    (the upstream frame at the centre of encoder frame 0: 2 for ESPnet's conv1d2, whose frame i
    sees upstream frames 2i..2i+4). Each segment still holds the encoder frames between its fires,
    with the same weights as a CIF over the encoder frames with α summed per frame; only the fire
    times get the finer grid. The target count S stays round(r_S · T) of the encoder frames.

    ``segment_weights``: "alpha" (CIF, SpeechCLIP+) weighs each frame of a segment by its α;
    "uniform" (not in SpeechCLIP+) fires at the same points but makes each segment the mean of the
    frames between its fires (``cif.uniform_within_segments``), so that an α that spikes on word
    ends still gives segments that hold the whole word.

    ``detach_weight_input`` (not in SpeechCLIP+) lets no gradient from α into the frames it is
    predicted from: the losses on α (quantity, a boundary prior, the cascaded loss through the
    segment weights) then train the weight predictor alone, and the encoder only through what
    the segments hold.
    """

    def __init__(self, input_size: int, token_width: int, attention_heads: int = 8, linear_units: int = 3072,
                 dropout_rate: float = 0.1, target_ratio: float = 0.05, max_segments: int = 75,
                 threshold: float = 1.0, tail_threshold: float = 0.5, integrate_from: str = "context",
                 weights_from: str = "context", detach_weight_input: bool = False, weight_kernel_size: int = 3,
                 upstream_size: Optional[int] = None, local_frame_centre: float = 0.0,
                 segment_weights: str = "alpha"):
        super().__init__()
        if segment_weights not in ("alpha", "uniform"):
            raise ValueError(f"segment_weights must be 'alpha' or 'uniform', got {segment_weights!r}")
        self.segment_weights = segment_weights
        if integrate_from not in ("context", "local"):
            raise ValueError(f"integrate_from must be 'context' or 'local', got {integrate_from!r}")
        if weights_from not in ("context", "local", "upstream"):
            raise ValueError(f"weights_from must be 'context', 'local' or 'upstream', got {weights_from!r}")
        if weights_from == "upstream" and upstream_size is None:
            raise ValueError("weights_from 'upstream' needs upstream_size, the upstream's frame width")
        if weight_kernel_size < 1 or weight_kernel_size % 2 == 0:
            raise ValueError(f"weight_kernel_size must be odd and >= 1, got {weight_kernel_size}")
        self.integrate_from = integrate_from
        self.weights_from = weights_from
        self.local_frame_centre = local_frame_centre
        self.layer = nn.TransformerEncoderLayer(input_size, attention_heads, linear_units, dropout_rate,
                                                activation="gelu", batch_first=True)
        weight_input_size = upstream_size if weights_from == "upstream" else input_size
        self.weight_predictor = CIFWeightPredictor(weight_input_size, weight_kernel_size)
        self.detach_weight_input = detach_weight_input
        self.proj = nn.Linear(input_size, token_width)
        self.token_width = token_width
        self.target_ratio = target_ratio
        self.max_segments = max_segments
        self.threshold = threshold
        self.tail_threshold = tail_threshold

    def output_size(self) -> int:
        return self.token_width

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor, local_frames: Optional[torch.Tensor] = None,
                upstream_frames: Optional[torch.Tensor] = None,
                upstream_lengths: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """frames (B, T, D) -> {"keywords" (B, N, W), "keyword_lengths" (B,), "alpha" (B, T_α),
        "alpha_lengths" (B,), "fire_frames" (B, N) on α's frames, "quantity_loss" (),
        "target_lengths" (B,) = S}; T_α = T unless weights_from is upstream (then T_u).
        local_frames (B, T, D) for integrate_from/weights_from local; upstream_frames
        (B, T_u, D_u) and upstream_lengths (B,) for weights_from upstream."""
        if "local" in (self.integrate_from, self.weights_from) and (
                local_frames is None or local_frames.shape != frames.shape):
            raise ValueError("CIF integrate_from/weights_from 'local' needs local_frames shaped like the "
                             f"frames {tuple(frames.shape)}, got "
                             f"{None if local_frames is None else tuple(local_frames.shape)}")
        if self.weights_from == "upstream" and (upstream_frames is None or upstream_lengths is None):
            raise ValueError("CIF weights_from 'upstream' needs upstream_frames and upstream_lengths")
        context = None
        if "context" in (self.integrate_from, self.weights_from):  # unused otherwise: not computed
            context = self.layer(frames, src_key_padding_mask=padding_mask(lengths, frames.size(1)))
        x = local_frames if self.integrate_from == "local" else context
        weight_input = {"local": local_frames, "context": context, "upstream": upstream_frames}[self.weights_from]
        alpha_lengths = lengths
        if self.weights_from == "upstream":
            x = gather_to_rate(x, lengths, upstream_lengths, upstream_frames.size(1), self.local_frame_centre)
            alpha_lengths = upstream_lengths
        if self.detach_weight_input:
            weight_input = weight_input.detach()
        alpha = self.weight_predictor(weight_input, alpha_lengths)  # (B, T_α)
        target = target_lengths_from_frames(lengths, self.target_ratio, self.max_segments)
        q_loss = quantity_loss(alpha, target)
        fire_alpha = scale_to_target(alpha, target) if self.training else alpha
        if self.segment_weights == "uniform":
            fire_alpha = uniform_within_segments(fire_alpha, alpha_lengths, self.threshold)
        segments, counts, fire_frames = integrate_and_fire(x, fire_alpha, alpha_lengths, self.threshold,
                                                           self.tail_threshold)
        if segments.size(1) > self.max_segments:
            segments, fire_frames = segments[:, : self.max_segments], fire_frames[:, : self.max_segments]
            counts = counts.clamp(max=self.max_segments)
        return {"keywords": self.proj(segments), "keyword_lengths": counts, "alpha": alpha,
                "alpha_lengths": alpha_lengths, "fire_frames": fire_frames, "quantity_loss": q_loss,
                "target_lengths": target}


def gather_to_rate(frames: torch.Tensor, lengths: torch.Tensor, fine_lengths: torch.Tensor, num_fine: int,
                   centre: float) -> torch.Tensor:
    """(B, T, D) frames -> (B, T_u, D): fine frame t takes frame clamp(round((t − c) / r), 0, T − 1),
    r = fine_lengths / lengths per utterance; rows at or beyond fine_lengths repeat the last frame."""
    ratio = fine_lengths.to(torch.float32) / lengths.clamp(min=1).to(torch.float32)  # (B,)
    fine = torch.arange(num_fine, device=frames.device, dtype=torch.float32)
    index = torch.round((fine[None, :] - centre) / ratio[:, None]).long()
    index = torch.minimum(index.clamp(min=0), (lengths - 1).clamp(min=0)[:, None])
    return frames.gather(1, index[..., None].expand(-1, -1, frames.size(2)))
