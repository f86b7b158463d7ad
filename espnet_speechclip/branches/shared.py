"""The attention block that Hybrid and Hybrid+ (SpeechCLIP+, Wang et al., 2024) share between
their branches.

    [p; k_1..k_K; h'_1..h'_T] = Block([CLS_p; CLS_1..CLS_K; h_1..h_T])

Hybrid: one parallel token and K = 8 keyword tokens (reference ``KW_HybridBranch``); the parallel
head projects p, the cascaded branch reads k. Hybrid+: one parallel token and no keyword tokens
(``KW_HybridBranchPlus``); CIF integrates the contextual frames h'. The block is LN(x + MHA(x))
(``attention_norm``) in every reference configuration.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from espnet_speechclip.branches.abs_branch import learned_tokens, padding_mask
from espnet_speechclip.branches.blocks import AbsFrameBlock, build_block
from espnet_speechclip.frame_views import FrameViews


class SharedCLSBlock(nn.Module):
    """Args: parallel_tokens (1, P, D) with P ∈ {0, 1}, keyword_tokens (1, K, D) or None, block."""

    def __init__(self, parallel_tokens: nn.Parameter, keyword_tokens: nn.Parameter, block: AbsFrameBlock):
        super().__init__()
        self.parallel_cls = parallel_tokens
        self.keyword_cls = keyword_tokens
        self.block = block
        self.num_tokens = parallel_tokens.size(1) + keyword_tokens.size(1)

    @classmethod
    def from_config(cls, input_size: int, num_parallel_tokens: int = 1, num_keyword_tokens: int = 0,
                    block: str = "attention_norm", block_conf: dict = None, token_std: float = 1.0
                    ) -> "SharedCLSBlock":
        """token_std: the tokens' initial N(0, σ²) (reference: σ = 1)."""
        if num_parallel_tokens not in (0, 1):
            raise ValueError(f"num_parallel_tokens must be 0 or 1, got {num_parallel_tokens}")
        return cls(learned_tokens(num_parallel_tokens, input_size, token_std),
                   learned_tokens(num_keyword_tokens, input_size, token_std),
                   build_block(block, input_size, dict(block_conf or {})))

    def output_size(self) -> int:
        return self.block.output_size()

    def _inputs(self, views: FrameViews):
        batch = views.frames.size(0)
        tokens = torch.cat([self.parallel_cls, self.keyword_cls], dim=1).expand(batch, -1, -1)
        x = torch.cat([tokens, views.frames], dim=1)  # (B, P+K+T, D)
        return x, padding_mask(views.lengths + self.num_tokens, x.size(1))

    def forward(self, views: FrameViews) -> FrameViews:
        """views -> views whose frames are the block's frame outputs, with tokens "parallel"
        (B, P, D) and "keywords" (B, K, D)."""
        out = self.block(*self._inputs(views))
        p = self.parallel_cls.size(1)
        tokens = {"keywords": out[:, p: self.num_tokens]}
        if p:
            tokens["parallel"] = out[:, :p]
        return views.with_frames(out[:, self.num_tokens:], **tokens)

    def frame_states(self, views: FrameViews) -> List[torch.Tensor]:
        return [s[:, self.num_tokens:] for s in self.block.states(*self._inputs(views))[1:]]
