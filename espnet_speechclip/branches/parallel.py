"""Parallel SpeechCLIP branch (Shih et al., 2022, §3.2) and its head on a shared block.

    e = W · LN(Block([CLS; h_1..h_T])_0) + b

A learnable CLS token is prepended to the frames, one post-LN Transformer encoder layer runs over
[CLS; h], and the CLS output, layer-normalised and projected, is the utterance embedding compared
with the CLIP image embedding. Sizes from the SpeechCLIP configs: base d=768, 8 heads, FFN 3072,
GELU, dropout 0.1; large d=1024, FFN 4096; projection to 512 (ViT-B/32) / 768 (ViT-L/14).

In Hybrid / Hybrid+ (SpeechCLIP+) the CLS token lives in the shared block instead
(``branches.shared``) and the branch is only its projection: ``SharedTokenParallel``.
"""
from __future__ import annotations

from typing import Dict, List

import torch
from torch import nn

from espnet_speechclip.branches.abs_branch import AbsBranch, learned_tokens, padding_mask
from espnet_speechclip.branches.blocks import AbsFrameBlock, TransformerBlock, build_projection
from espnet_speechclip.frame_views import FrameViews


class ParallelBranch(AbsBranch):
    """Args: cls (1, 1, D) token, block over [CLS; frames], norm on the CLS output, projection
    D -> E. ``from_config`` builds the SpeechCLIP parts."""

    def __init__(self, cls: nn.Parameter, block: AbsFrameBlock, norm: nn.Module, projection: nn.Module,
                 embed_dim: int):
        super().__init__()
        self.cls = cls
        self.block = block
        self.norm = norm
        self.proj = projection
        self.embed_dim = embed_dim

    @classmethod
    def from_config(cls, input_size: int, embed_dim: int, num_layers: int = 1, attention_heads: int = 8,
                    linear_units: int = 3072, dropout_rate: float = 0.1) -> "ParallelBranch":
        token = learned_tokens(1, input_size)  # drawn first: the same initial weights as before the parts
        block = TransformerBlock(input_size, attention_heads, linear_units, dropout_rate, num_layers)
        return cls(token, block, nn.LayerNorm(input_size), nn.Linear(input_size, embed_dim), embed_dim)

    def output_size(self) -> int:
        return self.embed_dim

    def _run(self, views: FrameViews, states: bool):
        frames = views.frames
        x = torch.cat([self.cls.expand(frames.size(0), -1, -1), frames], dim=1)  # (B, 1+T, D)
        mask = padding_mask(views.lengths + 1, x.size(1))
        return self.block.states(x, mask) if states else self.block(x, mask)

    def forward(self, views: FrameViews) -> Dict[str, torch.Tensor]:
        """views.frames (B, T, D) -> {"embedding": (B, E)}."""
        return {"embedding": self.proj(self.norm(self._run(views, states=False)[:, 0]))}

    def frame_states(self, views: FrameViews) -> List[torch.Tensor]:
        """Each layer's output at the frame positions (B, T, D), before the final norm."""
        return [s[:, 1:] for s in self._run(views, states=True)[1:]]


class SharedTokenParallel(AbsBranch):
    """Hybrid / Hybrid+ parallel head: e = Projection(shared block's parallel token).
    Projection: ``linear`` (base, Hybrid+) or ``mlp`` (large Hybrid, units [1024, 1024, 768])."""

    def __init__(self, projection: nn.Module, embed_dim: int):
        super().__init__()
        self.proj = projection
        self.embed_dim = embed_dim

    @classmethod
    def from_config(cls, input_size: int, embed_dim: int, projection: str = "linear",
                    projection_conf: dict = None) -> "SharedTokenParallel":
        return cls(build_projection(projection, input_size, embed_dim, dict(projection_conf or {})), embed_dim)

    def output_size(self) -> int:
        return self.embed_dim

    def forward(self, views: FrameViews) -> Dict[str, torch.Tensor]:
        if "parallel" not in views.tokens:
            raise ValueError("parallel: shared_cls reads the shared block's parallel token: set shared_block: "
                             "cls_attention with num_parallel_tokens: 1")
        return {"embedding": self.proj(views.tokens["parallel"][:, 0])}
