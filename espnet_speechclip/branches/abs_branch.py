"""Abstract bases of the swappable slots. Capabilities are declared as class attributes.

A branch maps the frame views (``frame_views.FrameViews``) to a CLIP-space embedding; a segmenter
maps them to keyword vectors for the cascaded branch; a shared block contextualises the frames
for both branches at once (Hybrid / Hybrid+ of SpeechCLIP+).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Dict, List, Optional

import torch
from torch import nn

from espnet_speechclip.frame_views import FrameViews


class AbsBranch(nn.Module, ABC):
    """views -> dict with "embedding" (B, E) and branch-specific outputs."""

    #: True when the branch yields keywords ("keyword_indices", "keyword_lengths").
    produces_keywords: bool = False

    @abstractmethod
    def output_size(self) -> int:
        """E, the CLIP joint-embedding width the branch produces."""

    @abstractmethod
    def forward(self, views: FrameViews) -> Dict[str, torch.Tensor]:
        ...

    def frame_states(self, views: FrameViews) -> List[torch.Tensor]:
        """The branch's own frame-rate hidden states (B, T, D), for probing; [] if it has none."""
        return []


class AbsSegmenter(nn.Module, ABC):
    """views -> {"keywords" (B, N, W), "keyword_lengths" (B,), ...}; CIF segmenters add "alpha",
    "alpha_lengths", "fire_frames", "quantity_loss", "target_lengths"."""

    #: True when the segmenter predicts CIF weights α and fires segments from them.
    has_cif_weights: bool = False
    #: K when every utterance gets exactly K keywords (CLS tokens), None when the count varies.
    num_keywords: Optional[int] = None

    @abstractmethod
    def output_size(self) -> int:
        """W, the width of the keyword vectors (CLIP's token-embedding width)."""

    @abstractmethod
    def forward(self, views: FrameViews) -> Dict[str, torch.Tensor]:
        ...

    def frame_states(self, views: FrameViews) -> List[torch.Tensor]:
        return []


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, T) True on padded frames, the convention of torch's key_padding_mask."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


def learned_tokens(count: int, size: int, scale: float = 0.02) -> nn.Parameter:
    """(1, count, size) learnable tokens, N(0, scale²) (the reference draws N(0, 1): its weights
    are loaded, not trained here)."""
    return nn.Parameter(torch.randn(1, count, size) * scale)
