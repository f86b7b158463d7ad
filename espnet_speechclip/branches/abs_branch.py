"""Abstract bases of the swappable slots: a branch maps frames to a CLIP-space embedding."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Dict, Optional

import torch
from torch import nn


class AbsBranch(nn.Module, ABC):
    """frames (B, T, D), lengths (B,) -> dict with "embedding" (B, E) and branch-specific outputs.

    ``local_frames`` (B, T, D), optional: the same frames before any self-attention;
    ``upstream_frames`` (B, T_u, D_u) and ``upstream_lengths`` (B,), optional: the upstream's
    frames at its own rate, before the encoder (see ``ESPnetSpeechCLIPModel.encode_frames``).
    Branches that do not use them ignore them."""

    @abstractmethod
    def output_size(self) -> int:
        """E, the CLIP joint-embedding width the branch produces."""

    @abstractmethod
    def forward(self, frames: torch.Tensor, lengths: torch.Tensor, local_frames: Optional[torch.Tensor] = None,
                upstream_frames: Optional[torch.Tensor] = None,
                upstream_lengths: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        ...


class AbsSegmenter(nn.Module, ABC):
    """frames (B, T, D) -> keyword vectors (B, N, W), counts (B,), and whatever the segmenter reports
    ("alpha", "fire_frames", "quantity_loss", "target_lengths" for CIF)."""

    @abstractmethod
    def output_size(self) -> int:
        """W, the width of the keyword vectors (CLIP's token-embedding width)."""

    @abstractmethod
    def forward(self, frames: torch.Tensor, lengths: torch.Tensor, local_frames: Optional[torch.Tensor] = None,
                upstream_frames: Optional[torch.Tensor] = None,
                upstream_lengths: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        ...


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, T) True on padded frames, the convention of torch's key_padding_mask."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]
