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

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor,
                local_frames: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """frames (B, T, D) -> {"keywords": (B, K, W), "keyword_lengths": (B,) all K}."""
        batch, k = frames.size(0), self.num_keywords
        x = torch.cat([self.cls.expand(batch, -1, -1), frames], dim=1)  # (B, K+T, D)
        x = self.layer(x, src_key_padding_mask=padding_mask(lengths + k, x.size(1)))
        keyword_lengths = torch.full((batch,), k, dtype=torch.long, device=frames.device)
        return {"keywords": self.proj(x[:, :k]), "keyword_lengths": keyword_lengths}


class CIFSegmenter(AbsSegmenter):
    """Args: input_size D, token_width W, target_ratio (SpeechCLIP+: 0.05 segments per frame),
    max_segments (75), threshold β (1.0), tail_threshold (0.5), integrate_from, weights_from,
    detach_weight_input (False).

    ``integrate_from`` picks what the segments are made of and ``weights_from`` what α is
    predicted from. "context" (SpeechCLIP+, both): the frames after the self-attention layer.
    "local": the frames before any self-attention (the encoder's input layer, see
    ``encode_frames``). With contextual frames any fixed-rate chunk can carry any word, so
    nothing rewards firing at word ends; with local frames a segment holds only what lies
    between its firings. A contextual α can still fire at a steady rate (it can count frames);
    a local α sees ~0.2 s of sound, so it can only fire on acoustic events.

    ``detach_weight_input`` (not in SpeechCLIP+) lets no gradient from α into the frames it is
    predicted from: the losses on α (quantity, a boundary prior, the cascaded loss through the
    segment weights) then train the weight predictor alone, and the encoder only through what
    the segments hold.
    """

    def __init__(self, input_size: int, token_width: int, attention_heads: int = 8, linear_units: int = 3072,
                 dropout_rate: float = 0.1, target_ratio: float = 0.05, max_segments: int = 75,
                 threshold: float = 1.0, tail_threshold: float = 0.5, integrate_from: str = "context",
                 weights_from: str = "context", detach_weight_input: bool = False):
        super().__init__()
        for name, value in (("integrate_from", integrate_from), ("weights_from", weights_from)):
            if value not in ("context", "local"):
                raise ValueError(f"{name} must be 'context' or 'local', got {value!r}")
        self.integrate_from = integrate_from
        self.weights_from = weights_from
        self.layer = nn.TransformerEncoderLayer(input_size, attention_heads, linear_units, dropout_rate,
                                                activation="gelu", batch_first=True)
        self.weight_predictor = CIFWeightPredictor(input_size)
        self.detach_weight_input = detach_weight_input
        self.proj = nn.Linear(input_size, token_width)
        self.token_width = token_width
        self.target_ratio = target_ratio
        self.max_segments = max_segments
        self.threshold = threshold
        self.tail_threshold = tail_threshold

    def output_size(self) -> int:
        return self.token_width

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor,
                local_frames: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """frames (B, T, D) -> {"keywords" (B, N, W), "keyword_lengths" (B,), "alpha" (B, T),
        "fire_frames" (B, N), "quantity_loss" (), "target_lengths" (B,) = S};
        local_frames (B, T, D) for integrate_from/weights_from local."""
        x = self.layer(frames, src_key_padding_mask=padding_mask(lengths, frames.size(1)))
        if "local" in (self.integrate_from, self.weights_from) and (
                local_frames is None or local_frames.shape != frames.shape):
            raise ValueError("CIF integrate_from/weights_from 'local' needs local_frames shaped like the "
                             f"frames {tuple(frames.shape)}, got "
                             f"{None if local_frames is None else tuple(local_frames.shape)}")
        weight_input = local_frames if self.weights_from == "local" else x
        if self.detach_weight_input:
            weight_input = weight_input.detach()
        alpha = self.weight_predictor(weight_input, lengths)  # (B, T)
        target = target_lengths_from_frames(lengths, self.target_ratio, self.max_segments)
        q_loss = quantity_loss(alpha, target)
        fire_alpha = scale_to_target(alpha, target) if self.training else alpha
        if self.integrate_from == "local":
            x = local_frames
        segments, counts, fire_frames = integrate_and_fire(x, fire_alpha, lengths, self.threshold,
                                                           self.tail_threshold)
        if segments.size(1) > self.max_segments:
            segments, fire_frames = segments[:, : self.max_segments], fire_frames[:, : self.max_segments]
            counts = counts.clamp(max=self.max_segments)
        return {"keywords": self.proj(segments), "keyword_lengths": counts, "alpha": alpha,
                "fire_frames": fire_frames, "quantity_loss": q_loss, "target_lengths": target}
