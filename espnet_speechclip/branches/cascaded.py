"""Cascaded branch (SpeechCLIP §3.3, SpeechCLIP+ §3): segmenter -> VQ bridge -> frozen CLIP text.

    k = Segmenter(h),  q = VQ(BN(k)),  e = CLIP_text([SOT, q_1..q_N, EOT])[EOT]

The embedding e is contrasted with the image embedding like any caption CLIP would encode.
"""
from __future__ import annotations

from typing import Dict, List

import torch

from espnet_speechclip.branches.abs_branch import AbsBranch, AbsSegmenter
from espnet_speechclip.clip_adapter import FrozenCLIP
from espnet_speechclip.frame_views import FrameViews
from espnet_speechclip.vq_bridge import VQBridge


class CascadedBranch(AbsBranch):
    """Args: segmenter (CLS tokens or CIF), bridge (VQ onto CLIP's token table), clip (frozen)."""

    produces_keywords = True

    def __init__(self, segmenter: AbsSegmenter, bridge: VQBridge, clip: FrozenCLIP):
        super().__init__()
        if segmenter.output_size() != bridge.output_size():
            raise ValueError(f"segmenter width {segmenter.output_size()} != token table width "
                             f"{bridge.output_size()}")
        self.segmenter = segmenter
        self.bridge = bridge
        self.clip = clip

    def output_size(self) -> int:
        return self.clip.embed_dim

    def forward(self, views: FrameViews) -> Dict[str, torch.Tensor]:
        """views -> {"embedding" (B, E), "keyword_indices" (B, N) rows of the reduced vocabulary,
        "keyword_lengths" (B,), "keyword_similarity" (B, N, V), "normed_keywords" (B, N, W), plus
        the segmenter's outputs}."""
        out = dict(self.segmenter(views))
        bridged = self.bridge(out["keywords"], out["keyword_lengths"])
        out["embedding"] = self.clip.encode_token_embeddings(bridged["quantized"], out["keyword_lengths"])
        out["keyword_indices"] = bridged["indices"]
        out["keyword_similarity"] = bridged["similarity"]
        out["normed_keywords"] = bridged["normed"]
        return out

    def frame_states(self, views: FrameViews) -> List[torch.Tensor]:
        return self.segmenter.frame_states(views)
