"""Keyword segmenters of the cascaded branch: K CLS tokens (SpeechCLIP) or CIF (SpeechCLIP+).

CLS (Shih et al., 2022, §3.3): K = 8 learnable tokens prepended to the frames, one block
(reference: LN(x + MHA(x)), 1 head), the K token outputs projected to CLIP's token width:

    k_1..k_K = Projection(Block([CLS_1..CLS_K; h])_{1..K})

CIF (Wang et al., 2024, §3): a block over the frames (none when a shared block already ran), CIF
weights α, integrate-and-fire, the segments projected to CLIP's token width; at training time α
is rescaled so that S segments fire and the quantity loss |Σα − S| is returned. The CIF parts
(weight source, weight predictor, target, scaling, pooling, firing rule) are chosen in
``CIFSegmenter.from_config``; see ``branches.cif_parts`` for each choice and its equation.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import nn

from espnet_speechclip.branches.abs_branch import AbsSegmenter, learned_tokens, padding_mask
from espnet_speechclip.branches.blocks import AbsFrameBlock, build_block, build_projection
from espnet_speechclip.branches.cif_parts import (
    AlphaWeightedSegments,
    Firing,
    FramesPerSegmentTarget,
    RatioTarget,
    ReferenceCIFWeights,
    ScaleToTarget,
    UniformSegments,
)
from espnet_speechclip.branches.weight_sources import WEIGHT_SOURCES, UpstreamFrames
from espnet_speechclip.cif import CIFWeightPredictor, quantity_loss
from espnet_speechclip.frame_views import FrameViews


class CLSKeywordSegmenter(AbsSegmenter):
    """Args: cls (1, K, D) tokens, block over [CLS; frames], projection D -> W."""

    def __init__(self, cls: nn.Parameter, block: AbsFrameBlock, projection: nn.Module, token_width: int):
        super().__init__()
        self.cls = cls
        self.block = block
        self.proj = projection
        self.num_keywords = cls.size(1)
        self.token_width = token_width

    @classmethod
    def from_config(cls, input_size: int, token_width: int, num_keywords: int = 8, block: str = "transformer",
                    projection: str = "linear", projection_conf: dict = None, token_std: float = 0.02,
                    **block_conf) -> "CLSKeywordSegmenter":
        """block: ``transformer`` (this plugin's default) or ``attention_norm`` (reference), with its
        options (attention_heads, linear_units, dropout_rate); token_std: initial N(0, σ²) of the
        tokens (reference: 1)."""
        tokens = learned_tokens(num_keywords, input_size, token_std)
        if block == "transformer":  # one layer, the keyword block of this plugin's configs
            block_conf = {"attention_heads": 1, **block_conf}
        body = build_block(block, input_size, block_conf)
        return cls(tokens, body, build_projection(projection, input_size, token_width, dict(projection_conf or {})),
                   token_width)

    def output_size(self) -> int:
        return self.token_width

    def _inputs(self, views: FrameViews):
        x = torch.cat([self.cls.expand(views.frames.size(0), -1, -1), views.frames], dim=1)  # (B, K+T, D)
        return x, padding_mask(views.lengths + self.num_keywords, x.size(1))

    def forward(self, views: FrameViews) -> Dict[str, torch.Tensor]:
        """-> {"keywords": (B, K, W), "keyword_lengths": (B,) all K}."""
        x = self.block(*self._inputs(views))
        lengths = torch.full((x.size(0),), self.num_keywords, dtype=torch.long, device=x.device)
        return {"keywords": self.proj(x[:, : self.num_keywords]), "keyword_lengths": lengths}

    def frame_states(self, views: FrameViews) -> List[torch.Tensor]:
        return [s[:, self.num_keywords:] for s in self.block.states(*self._inputs(views))[1:]]


class SharedTokenKeywords(AbsSegmenter):
    """Hybrid (SpeechCLIP+): k_1..k_K = Projection(the shared block's keyword tokens)."""

    def __init__(self, projection: nn.Module, num_keywords: int, token_width: int):
        super().__init__()
        self.proj = projection
        self.num_keywords = num_keywords
        self.token_width = token_width

    @classmethod
    def from_config(cls, input_size: int, token_width: int, num_keywords: int = 8, projection: str = "linear",
                    projection_conf: dict = None) -> "SharedTokenKeywords":
        return cls(build_projection(projection, input_size, token_width, dict(projection_conf or {})), num_keywords,
                   token_width)

    def output_size(self) -> int:
        return self.token_width

    def forward(self, views: FrameViews) -> Dict[str, torch.Tensor]:
        tokens = views.tokens.get("keywords")
        if tokens is None or tokens.size(1) != self.num_keywords:
            raise ValueError(f"segmenter: shared_cls reads {self.num_keywords} keyword tokens of the shared block, got "
                             f"{None if tokens is None else tokens.size(1)}: set shared_block_conf "
                             f"num_keyword_tokens: {self.num_keywords}")
        lengths = torch.full((tokens.size(0),), self.num_keywords, dtype=torch.long, device=tokens.device)
        return {"keywords": self.proj(tokens), "keyword_lengths": lengths}


class CIFSegmenter(AbsSegmenter):
    """Args: block (or None: the frames are already contextual), integrate_source and
    weight_source (which view is integrated / predicts α, ``weight_sources``), weight_predictor,
    target, scaling, pooling, firing, projection D -> W."""

    has_cif_weights = True

    def __init__(self, block: Optional[AbsFrameBlock], integrate_source, weight_source, weight_predictor: nn.Module,
                 target, scaling: ScaleToTarget, pooling, firing: Firing, projection: nn.Module, token_width: int):
        super().__init__()
        self.block = block
        self.integrate_source = integrate_source
        self.weight_source = weight_source
        self.weight_predictor = weight_predictor
        self.target = target
        self.scaling = scaling
        self.pooling = pooling
        self.firing = firing
        self.proj = projection
        self.token_width = token_width
        self.reads_context = integrate_source.reads_context or weight_source.reads_context

    @classmethod
    def from_config(cls, input_size: int, token_width: int, upstream_size: int, block: str = "transformer",
                    integrate_from: str = "context", weights_from: str = "context", detach_weight_input: bool = False,
                    weight_predictor: str = "conv", weight_kernel_size: int = 3, weight_dropout_rate: float = 0.5,
                    weight_layers: int = 1,
                    target: str = "ratio", target_ratio: float = 0.05, frames_per_segment: int = 20,
                    max_segments: int = 75, scaling_steps: Optional[int] = None, scaling_sum_eps: float = 0.0,
                    threshold: float = 1.0, tail_threshold: float = 0.5, min_segments: int = 0,
                    tail_in_training: bool = True, local_frame_centre: float = 0.0, segment_weights: str = "alpha",
                    projection: str = "linear", projection_conf: dict = None, **block_conf) -> "CIFSegmenter":
        """Reference (SpeechCLIP+) choices: block attention_norm (or ``none`` under a shared block),
        weight_predictor reference, target frames_per_segment (20), scaling_steps 5000 (base),
        scaling_sum_eps 1e-5, min_segments 1, tail_in_training false. This plugin's defaults:
        block transformer, weight_predictor conv, target ratio, scaling throughout."""
        body = None if block == "none" else build_block(block, input_size, block_conf)
        if body is None and block_conf:
            raise TypeError(f"block: none takes no block options, got {sorted(block_conf)}")
        for name, value in (("integrate_from", integrate_from), ("weights_from", weights_from)):
            if value not in WEIGHT_SOURCES or (name == "integrate_from" and value == "upstream"):
                raise ValueError(f"{name} must be one of {sorted(WEIGHT_SOURCES)} (integrate_from: context or local), "
                                 f"got {value!r}")
        source = WEIGHT_SOURCES[weights_from]
        weight_source = (UpstreamFrames(detach_weight_input, local_frame_centre) if source is UpstreamFrames
                         else source(detach_weight_input))
        weight_size = upstream_size if weights_from == "upstream" else input_size
        if weight_predictor == "conv":
            if weight_layers != 1:
                raise ValueError("weight_layers > 1 needs weight_predictor: reference")
            predictor = CIFWeightPredictor(weight_size, weight_kernel_size)
        elif weight_predictor == "reference":
            predictor = ReferenceCIFWeights(weight_size, weight_kernel_size, weight_dropout_rate, weight_layers)
        else:
            raise ValueError(f"weight_predictor must be conv or reference, got {weight_predictor!r}")
        targets = {"ratio": lambda: RatioTarget(target_ratio, max_segments),
                   "frames_per_segment": lambda: FramesPerSegmentTarget(frames_per_segment)}
        if target not in targets:
            raise ValueError(f"target must be ratio or frames_per_segment, got {target!r}")
        poolings = {"alpha": AlphaWeightedSegments, "uniform": UniformSegments}
        if segment_weights not in poolings:
            raise ValueError(f"segment_weights must be 'alpha' or 'uniform', got {segment_weights!r}")
        proj = build_projection(projection, input_size, token_width, dict(projection_conf or {}))
        return cls(body, WEIGHT_SOURCES[integrate_from](), weight_source, predictor, targets[target](),
                   ScaleToTarget(scaling_sum_eps, scaling_steps),
                   poolings[segment_weights](),
                   Firing(threshold, tail_threshold, max_segments, min_segments, tail_in_training), proj, token_width)

    def output_size(self) -> int:
        return self.token_width

    @property
    def threshold(self) -> float:
        """β: a segment fires each time the running α sum passes a multiple of it."""
        return self.firing.threshold

    def _context(self, views: FrameViews) -> Optional[torch.Tensor]:
        if not self.reads_context:  # neither integrated nor weighed: not computed
            return None
        return views.frames if self.block is None else self.block(views.frames, views.padding_mask())

    def forward(self, views: FrameViews) -> Dict[str, torch.Tensor]:
        """-> {"keywords" (B, N, W), "keyword_lengths" (B,), "alpha" (B, T_α), "alpha_lengths" (B,),
        "fire_frames" (B, N) on α's frames, "quantity_loss" (), "target_lengths" (B,) = S}."""
        context = self._context(views)
        weight_input, alpha_lengths = self.weight_source.weight_input(views, context)
        frames = self.weight_source.to_weight_rate(self.integrate_source.frames(views, context), views)
        alpha = self.weight_predictor(weight_input, alpha_lengths)  # (B, T_α)
        target = self.target(views.lengths)
        q_loss = quantity_loss(alpha, target)  # before the scaling: the order α's gradients are summed in
        fire_alpha = self.pooling(self.scaling(alpha, target), alpha_lengths, self.firing.threshold)
        segments, counts, fire_frames = self.firing(frames, fire_alpha, alpha_lengths, self.training)
        return {"keywords": self.proj(segments), "keyword_lengths": counts, "alpha": alpha,
                "alpha_lengths": alpha_lengths, "fire_frames": fire_frames, "quantity_loss": q_loss,
                "target_lengths": target}

    def frame_states(self, views: FrameViews) -> List[torch.Tensor]:
        if self.block is None or not self.reads_context:  # a block this configuration never runs learnt nothing
            return []
        return self.block.states(views.frames, views.padding_mask())[1:]
