"""VQ bridge: keyword vectors -> CLIP token embeddings (cascaded SpeechCLIP, §3.3; SpeechCLIP+ §3).

    z = BatchNorm(k),            BN affine initialised to the table's per-dimension mean / std,
    s_v = cos(z, E_v),           v over the (reduced) vocabulary, pad/SOT/EOT masked out,
    forward:  q = onehot(argmax_v s_v) · E,
    backward: ∂q/∂z through softmax(s / τ) · E, τ = 0.1 (straight-through estimator).

The table E is a frozen copy of CLIP's token-embedding rows; it never receives gradients.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class VQBridge(nn.Module):
    """Straight-through cosine VQ onto a fixed token table.

    Args:
        table: (V, W) token-embedding rows (the reduced CLIP vocabulary).
        token_ids: (V,) CLIP token id of each row.
        masked_ids: CLIP ids never to choose (pad, SOT, EOT).
        temperature: τ of the backward softmax (SpeechCLIP code: 0.1).
        init_batchnorm_from_table: initialise BN weight/bias to the table's std/mean.
    """

    def __init__(self, table: torch.Tensor, token_ids: torch.Tensor, masked_ids: Sequence[int] = (),
                 temperature: float = 0.1, init_batchnorm_from_table: bool = True):
        super().__init__()
        if table.dim() != 2 or token_ids.shape != (table.size(0),):
            raise ValueError(f"VQBridge: table (V, W) and token_ids (V,) expected, got "
                             f"{tuple(table.shape)} and {tuple(token_ids.shape)}")
        self.register_buffer("table", table.detach().clone())
        self.register_buffer("token_ids", token_ids.long().clone())
        self.register_buffer("allowed", ~torch.isin(self.token_ids, torch.tensor(list(masked_ids), dtype=torch.long)))
        self.temperature = temperature
        self.batchnorm = nn.BatchNorm1d(table.size(1))
        if init_batchnorm_from_table:
            with torch.no_grad():
                self.batchnorm.weight.copy_(self.table.std(dim=0))
                self.batchnorm.bias.copy_(self.table.mean(dim=0))

    def output_size(self) -> int:
        return int(self.table.size(1))

    def forward(self, keywords: torch.Tensor, lengths: torch.Tensor) -> Dict[str, torch.Tensor]:
        """keywords (B, N, W), lengths (B,) valid keywords ->
        {"quantized" (B, N, W), "indices" (B, N) row ids, "similarity" (B, N, V)}."""
        batch, num, width = keywords.shape
        valid = torch.arange(num, device=keywords.device)[None, :] < lengths[:, None]  # (B, N)
        normed = keywords.new_zeros(batch, num, width)
        if valid.any():
            # Statistics over real keywords only: padding slots would drag the batch mean to zero.
            real = keywords[valid]
            if self.training and real.size(0) < 2:
                # One vector has no batch variance: fall back to the running statistics.
                bn = self.batchnorm
                real = F.batch_norm(real, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
            else:
                real = self.batchnorm(real)
            normed = normed.masked_scatter(valid[..., None], real)
        similarity = F.normalize(normed, dim=-1) @ F.normalize(self.table, dim=-1).T  # (B, N, V)
        similarity = similarity.masked_fill(~self.allowed, float("-inf"))
        soft = torch.softmax(similarity / self.temperature, dim=-1)
        indices = similarity.argmax(dim=-1)
        hard = F.one_hot(indices, self.table.size(0)).to(soft.dtype)
        straight_through = hard + soft - soft.detach()
        quantized = straight_through @ self.table
        quantized = quantized * valid[..., None]
        return {"quantized": quantized, "indices": indices, "similarity": similarity}


def token_perplexity(indices: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """exp(H) of the tokens chosen for the real keywords of a batch: how many rows the bridge uses.

    indices (B, N) chosen rows, lengths (B,) real keywords; 0 when there are none. A training
    statistic: a bridge that spells every word with a few tokens shows a value far below the
    captions' own (SpokenShapes train captions: 16.7 of 25 tokens).
    """
    valid = torch.arange(indices.size(1), device=indices.device)[None, :] < lengths[:, None]
    chosen = indices[valid]
    if chosen.numel() == 0:
        return indices.new_zeros((), dtype=torch.float)
    p = torch.bincount(chosen).float() / chosen.numel()
    p = p[p > 0]
    return torch.exp(-(p * p.log()).sum())
