"""Parallel SpeechCLIP branch (Shih et al., 2022, §3.2).

A learnable CLS token is prepended to the frames, one post-LN Transformer encoder layer runs over
[CLS; h_1..h_T], and the CLS output, layer-normalised and projected, is the utterance embedding
compared with the CLIP image embedding. Sizes from the SpeechCLIP code: base d=768, 8 heads,
FFN 3072, GELU, dropout 0.1; large d=1024, FFN 4096; projection to 512 (ViT-B/32) / 768 (ViT-L/14).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from espnet_speechclip.branches.abs_branch import AbsBranch, padding_mask


class ParallelBranch(AbsBranch):
    """Args: input_size D (upstream/encoder width), embed_dim E (CLIP joint width), and the
    Transformer layer's sizes."""

    def __init__(self, input_size: int, embed_dim: int, num_layers: int = 1, attention_heads: int = 8,
                 linear_units: int = 3072, dropout_rate: float = 0.1):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, input_size) * 0.02)
        layer = nn.TransformerEncoderLayer(input_size, attention_heads, linear_units, dropout_rate,
                                           activation="gelu", batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(input_size)
        self.proj = nn.Linear(input_size, embed_dim)
        self.embed_dim = embed_dim

    def output_size(self) -> int:
        return self.embed_dim

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor, local_frames: Optional[torch.Tensor] = None,
                upstream_frames: Optional[torch.Tensor] = None,
                upstream_lengths: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """frames (B, T, D), lengths (B,) -> {"embedding": (B, E)}; local and upstream frames unused."""
        batch = frames.size(0)
        x = torch.cat([self.cls.expand(batch, -1, -1), frames], dim=1)  # (B, 1+T, D)
        mask = padding_mask(lengths + 1, x.size(1))
        x = self.encoder(x, src_key_padding_mask=mask)
        return {"embedding": self.proj(self.norm(x[:, 0]))}
