"""Symmetric InfoNCE between speech and image embeddings (SpeechCLIP §3.4, after CLIP).

    L = ½ [ CE(S I^T / τ, diag) + CE(I S^T / τ, diag) ],   S, I L2-normalised,

with the other captions of the same image removed from each utterance's negatives (they are not
negatives: in Flickr8k five captions share one image). τ = 0.07 fixed (base) or learnable (large).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class InfoNCELoss(nn.Module):
    """Args: temperature (initial τ); learnable_temperature makes log(1/τ) a parameter;
    max_logit_scale caps 1/τ (CLIP's 100; None: no cap, as the SpeechCLIP reference loss)."""

    def __init__(self, temperature: float = 0.07, learnable_temperature: bool = False,
                 max_logit_scale: Optional[float] = 100.0):
        super().__init__()
        self.max_log_scale = math.inf if max_logit_scale is None else math.log(max_logit_scale)
        init = torch.tensor(math.log(1.0 / temperature))
        if learnable_temperature:
            self.logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("logit_scale", init)

    def forward(self, speech: torch.Tensor, image: torch.Tensor, image_groups: Optional[torch.Tensor] = None):
        """speech (B, E), image (B, E), image_groups (B,) ids equal for captions of one image.

        Returns (loss, logits (B, B)) where logits[i, j] = scale · cos(speech_i, image_j).
        """
        if speech.shape != image.shape:
            raise ValueError(f"InfoNCE: speech {tuple(speech.shape)} and image {tuple(image.shape)} differ")
        scale = self.logit_scale.clamp(max=self.max_log_scale).exp()
        logits = scale * F.normalize(speech, dim=-1) @ F.normalize(image, dim=-1).T
        if image_groups is not None:
            same = image_groups[:, None] == image_groups[None, :]
            same.fill_diagonal_(False)
            logits = logits.masked_fill(same, float("-inf"))
        target = torch.arange(speech.size(0), device=speech.device)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        return loss, logits


def image_groups_from_embeddings(image: torch.Tensor) -> torch.Tensor:
    """(B,) group ids: utterances whose precomputed image embeddings are identical share an image."""
    _, groups = torch.unique(image, dim=0, return_inverse=True)
    return groups
