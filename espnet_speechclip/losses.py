"""Symmetric InfoNCE between speech and image embeddings (SpeechCLIP §3.4, after CLIP).

    L = ½ [ CE(S I^T / τ, diag) + CE(I S^T / τ, diag) ],   S, I L2-normalised,

with the other captions of the same image removed from each utterance's negatives (they are not
negatives: in Flickr8k five captions share one image). τ = 0.07 fixed (base) or learnable (large).

With an image bank B (every train image's frozen embedding; ours, not in the papers) the
speech→image half contrasts each utterance with all of B instead of the batch's images:

    L = ½ [ CE(S B^T / τ, own row) + CE(I S^T / τ, diag) ].

The image tower is frozen, so the bank never goes stale, and a small (CPU) batch still meets the
hard negatives, e.g. the same colours with other shapes, that a batch of 32 rarely holds.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class InfoNCELoss(nn.Module):
    """Args: temperature (initial τ); learnable_temperature makes log(1/τ) a parameter."""

    def __init__(self, temperature: float = 0.07, learnable_temperature: bool = False):
        super().__init__()
        init = torch.tensor(math.log(1.0 / temperature))
        if learnable_temperature:
            self.logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("logit_scale", init)

    def forward(self, speech: torch.Tensor, image: torch.Tensor, image_groups: Optional[torch.Tensor] = None,
                bank: Optional[torch.Tensor] = None):
        """speech (B, E), image (B, E), image_groups (B,) ids equal for captions of one image,
        bank (N, E) unit-norm embeddings of distinct images that include every row of ``image``.

        Returns (loss, logits (B, B)) where logits[i, j] = scale · cos(speech_i, image_j).
        """
        if speech.shape != image.shape:
            raise ValueError(f"InfoNCE: speech {tuple(speech.shape)} and image {tuple(image.shape)} differ")
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        logits = scale * F.normalize(speech, dim=-1) @ F.normalize(image, dim=-1).T
        if image_groups is not None:
            same = image_groups[:, None] == image_groups[None, :]
            same.fill_diagonal_(False)
            logits = logits.masked_fill(same, float("-inf"))
        target = torch.arange(speech.size(0), device=speech.device)
        if bank is None:
            return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)), logits
        bank_logits = scale * F.normalize(speech, dim=-1) @ bank.T
        loss = 0.5 * (F.cross_entropy(bank_logits, bank_rows(image, bank)) + F.cross_entropy(logits.T, target))
        return loss, logits


def bank_rows(image: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """(B,) row of ``bank`` (N, E, unit norm) holding each image embedding (B, E); an image that is
    not in the bank (cosine < 0.9999 with every row) is an error, not a silent wrong target."""
    with torch.no_grad():
        cosine, rows = (F.normalize(image.to(bank.dtype), dim=-1) @ bank.T).max(dim=1)
        if bool((cosine < 0.9999).any()):
            missing = (cosine < 0.9999).nonzero().squeeze(1).tolist()
            raise ValueError(f"image bank: batch rows {missing[:5]} match no bank image (best cosine "
                             f"{cosine.min().item():.4f}); was the bank built from the training images?")
    return rows


def image_groups_from_embeddings(image: torch.Tensor) -> torch.Tensor:
    """(B,) group ids: utterances whose precomputed image embeddings are identical share an image."""
    _, groups = torch.unique(image, dim=0, return_inverse=True)
    return groups
