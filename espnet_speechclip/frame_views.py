"""The views of an utterance's frames that the branches read, produced in one pass.

    upstream ──(specaug)──► encoder input layer ──► encoder layers ──► frames
       │                          │
       └─ upstream (rate 1/r_u)   └─ local (the encoder's rate, before any self-attention)

A branch reads ``frames``; a CIF segmenter may integrate ``local`` frames or predict its weights
from ``upstream`` (see ``branches.cif_parts``). A shared attention block (Hybrid / Hybrid+ of
SpeechCLIP+) adds its learned tokens in ``tokens`` and replaces ``frames`` by its own output.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, Tuple

import torch
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
from espnet2.asr.encoder.transformer_encoder import TransformerEncoder
from espnet2.legacy.nets.pytorch_backend.nets_utils import make_pad_mask
from espnet2.legacy.nets.pytorch_backend.transformer.subsampling import (
    Conv1dSubsampling2,
    Conv2dSubsampling,
    Conv2dSubsampling1,
    Conv2dSubsampling2,
    Conv2dSubsampling6,
    Conv2dSubsampling8,
    TooShortUttError,
    check_short_utt,
)

# The input layers ESPnet's encoders call with (x, mask) and check for too-short input.
_SUBSAMPLING = (Conv1dSubsampling2, Conv2dSubsampling, Conv2dSubsampling1, Conv2dSubsampling2, Conv2dSubsampling6,
                Conv2dSubsampling8)


@dataclass
class FrameViews:
    """frames (B, T, D) and lengths (B,): what the branches read; local (B, T, D): the same
    frames before any self-attention; upstream (B, T_u, D_u), upstream_lengths (B,): the
    upstream's weighted sum at its own rate; tokens: learned tokens of a shared block,
    e.g. {"parallel": (B, 1, D), "keywords": (B, K, D)}."""

    frames: torch.Tensor
    lengths: torch.Tensor
    local: torch.Tensor
    upstream: torch.Tensor
    upstream_lengths: torch.Tensor
    tokens: Dict[str, torch.Tensor] = field(default_factory=dict)

    def padding_mask(self) -> torch.Tensor:
        """(B, T) True on padded frames (torch's key_padding_mask convention)."""
        return torch.arange(self.frames.size(1), device=self.lengths.device)[None, :] >= self.lengths[:, None]

    def with_frames(self, frames: torch.Tensor, **tokens: torch.Tensor) -> "FrameViews":
        return replace(self, frames=frames, tokens={**self.tokens, **tokens})


def encode_with_input_layer(encoder: AbsEncoder, xs: torch.Tensor, lengths: torch.Tensor
                            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ESPnet Transformer / Conformer encoder -> (frames (B, T, D), lengths (B,), local (B, T, D)).

    The same operations as the encoder's own ``forward`` (without intermediate CTC), keeping the
    input layer's output (``embed``: subsampling + positional encoding) as the local view.
    """
    if not isinstance(encoder, (TransformerEncoder, ConformerEncoder)):
        raise TypeError(f"local frames need an ESPnet transformer or conformer encoder, got {type(encoder).__name__}")
    if len(encoder.interctc_layer_idx) > 0:
        raise ValueError("intermediate CTC layers are not used by SpeechCLIP: set interctc_layer_idx: []")
    masks = (~make_pad_mask(lengths)[:, None, :]).to(xs.device)
    if encoder.embed is None:
        pass
    elif isinstance(encoder.embed, _SUBSAMPLING):
        too_short, limit = check_short_utt(encoder.embed, xs.size(1))
        if too_short:
            raise TooShortUttError(f"has {xs.size(1)} frames and is too short for subsampling (it needs more "
                                   f"than {limit} frames)", xs.size(1), limit)
        xs, masks = encoder.embed(xs, masks)
    else:
        xs = encoder.embed(xs)
    local = xs[0] if isinstance(xs, tuple) else xs  # conformer: (x, relative position embedding)
    for layer in encoder.encoders:
        xs, masks = layer(xs, masks)
    if isinstance(xs, tuple):
        xs = xs[0]
    if encoder.normalize_before:
        xs = encoder.after_norm(xs)
    return xs, masks.squeeze(1).sum(1), local
