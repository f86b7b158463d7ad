"""Frame blocks and keyword projections: the parts the branches are assembled from.

Attention blocks map frames (B, T, D) with a key-padding mask (B, T) to (B, T, D):

    transformer     x' = LN(y + FFN(y)),  y = LN(x + MHA(x))      post-LN Transformer layer(s)
                    (torch ``nn.TransformerEncoderLayer``; the SpeechCLIP parallel branch)
    attention_norm  x' = LN(x + MHA(x))                           no feed-forward
                    (SpeechCLIP / SpeechCLIP+ ``MultiheadAttentionAndNorm``: the cascaded
                    keyword block, the shared Hybrid / Hybrid+ block, the block before CIF)

Keyword projections map a token vector (…, D) to CLIP's token-embedding width W:

    linear          W x + b                                        (base models)
    mlp             Linear → ReLU → Dropout → … → Linear           (``MLPLayers`` of the large
                    SpeechCLIP+ models, units [1024, 1024, 768])

Every block reports ``states(x, mask)``: its input and its output, so that a probe can read
the frame-rate hidden states of a branch (the reference ``extract_hidden_states``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import List, Sequence

import torch
from torch import nn


class AbsFrameBlock(nn.Module, ABC):
    """x (B, T, D), padding_mask (B, T) True on padding -> (B, T, D)."""

    @abstractmethod
    def output_size(self) -> int:
        ...

    @abstractmethod
    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        ...

    def states(self, x: torch.Tensor, padding_mask: torch.Tensor) -> List[torch.Tensor]:
        """[input, output]; multi-layer blocks give every layer."""
        return [x, self(x, padding_mask)]


class TransformerBlock(AbsFrameBlock):
    """``num_layers`` post-LN Transformer encoder layers (GELU), optionally a final LayerNorm.

    Args (SpeechCLIP parallel branch, base / large): input_size D 768 / 1024, attention_heads 8,
    linear_units 3072 / 4096, dropout_rate 0.1, num_layers 1; final_norm: a LayerNorm after the
    layers (the reference ``TransformerEncoder`` block, e.g. the shared block of SpokenCOCO's
    large Hybrid; the parallel branch keeps its own norm outside the block).
    """

    def __init__(self, input_size: int, attention_heads: int = 8, linear_units: int = 3072,
                 dropout_rate: float = 0.1, num_layers: int = 1, final_norm: bool = False,
                 layer_norm_eps: float = 1e-5):
        super().__init__()
        layer = nn.TransformerEncoderLayer(input_size, attention_heads, linear_units, dropout_rate,
                                           activation="gelu", batch_first=True, norm_first=False,
                                           layer_norm_eps=layer_norm_eps)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(input_size) if final_norm else nn.Identity()
        self.size = input_size

    def output_size(self) -> int:
        return self.size

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        return self.final_norm(self.encoder(x, src_key_padding_mask=padding_mask))

    def states(self, x: torch.Tensor, padding_mask: torch.Tensor) -> List[torch.Tensor]:
        out = [x]
        for layer in self.encoder.layers:
            out.append(layer(out[-1], src_key_padding_mask=padding_mask))
        return out


class AttentionNormBlock(AbsFrameBlock):
    """x' = LayerNorm(x + MultiheadAttention(x, x, x)), no feed-forward (reference
    ``MultiheadAttentionAndNorm``). Args: input_size D, attention_heads (Cascaded: 1; Cascaded+ base
    8 ... see the paper configs), dropout_rate on the attention weights (0.1), layer_norm_eps."""

    def __init__(self, input_size: int, attention_heads: int = 1, dropout_rate: float = 0.1,
                 layer_norm_eps: float = 1e-5):
        super().__init__()
        self.attention = nn.MultiheadAttention(input_size, attention_heads, dropout=dropout_rate, batch_first=True)
        self.norm = nn.LayerNorm(input_size, eps=layer_norm_eps)
        self.size = input_size

    def output_size(self) -> int:
        return self.size

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        return self.norm(self.attention(x, x, x, key_padding_mask=padding_mask, need_weights=False)[0] + x)


BLOCKS = {"transformer": TransformerBlock, "attention_norm": AttentionNormBlock}


def build_block(name: str, input_size: int, conf: dict) -> AbsFrameBlock:
    """The block registered as ``name`` (``BLOCKS``), built from its keyword arguments."""
    if name not in BLOCKS:
        raise ValueError(f"unknown block {name!r}; choose one of {sorted(BLOCKS)}")
    return BLOCKS[name](input_size, **conf)


class MLPProjection(nn.Module):
    """Linear → ReLU → Dropout → … → Linear over ``units`` (reference ``MLPLayers``: the last
    ReLU and Dropout are dropped). Args: units [D, …, W], dropout_rate (0.1)."""

    def __init__(self, units: Sequence[int], dropout_rate: float = 0.1):
        super().__init__()
        if len(units) < 2:
            raise ValueError(f"mlp projection needs at least two sizes, got units={list(units)}")
        layers: List[nn.Module] = []
        for size_in, size_out in zip(units[:-1], units[1:]):
            layers += [nn.Linear(size_in, size_out), nn.ReLU(), nn.Dropout(dropout_rate)]
        self.sequential = nn.Sequential(*layers[:-2])
        self.units = list(units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sequential(x)


def build_projection(name: str, input_size: int, output_size: int, conf: dict) -> nn.Module:
    """``linear`` (nn.Linear) or ``mlp`` (``MLPProjection``; its units must start at input_size
    and end at output_size)."""
    if name == "linear":
        if conf:
            raise TypeError(f"linear projection takes no options, got {sorted(conf)}")
        return nn.Linear(input_size, output_size)
    if name == "mlp":
        projection = MLPProjection(**conf)
        if projection.units[0] != input_size or projection.units[-1] != output_size:
            raise ValueError(f"mlp projection units {projection.units} must run from {input_size} to {output_size}")
        return projection
    raise ValueError(f"unknown projection {name!r}; choose linear or mlp")
