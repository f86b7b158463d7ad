"""Abstract bases of the swappable slots: a branch maps frames to a CLIP-space embedding."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Dict

import torch
from torch import nn


class AbsBranch(nn.Module, ABC):
    """frames (B, T, D), lengths (B,) -> dict with "embedding" (B, E) and branch-specific outputs."""

    @abstractmethod
    def output_size(self) -> int:
        """E, the CLIP joint-embedding width the branch produces."""

    @abstractmethod
    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> Dict[str, torch.Tensor]:
        ...


class AbsSegmenter(nn.Module, ABC):
    """frames (B, T, D) -> keyword vectors (B, N, W), counts (B,), and whatever the segmenter reports
    ("alpha", "fire_frames", "quantity_loss" for CIF)."""

    @abstractmethod
    def output_size(self) -> int:
        """W, the width of the keyword vectors (CLIP's token-embedding width)."""

    @abstractmethod
    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> Dict[str, torch.Tensor]:
        ...


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, T) True on padded frames, the convention of torch's key_padding_mask."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]
