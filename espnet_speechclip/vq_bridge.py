"""VQ bridge: keyword vectors -> CLIP token embeddings (cascaded SpeechCLIP, §3.3; SpeechCLIP+ §3).

    z = BatchNorm(k),            BN affine initialised to the table's per-dimension mean / std
                                 (over real keywords, over every slot, or one BN per keyword slot),
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


class MaskedKeywordNorm(nn.BatchNorm1d):
    """One BatchNorm over the real keywords of the batch (padding slots would drag the batch
    mean to zero); padding slots come out as zeros. This plugin's default."""

    def forward(self, keywords: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        batch, num, width = keywords.shape
        valid = torch.arange(num, device=keywords.device)[None, :] < lengths[:, None]  # (B, N)
        normed = keywords.new_zeros(batch, num, width)
        if valid.any():
            real = keywords[valid]
            if self.training and real.size(0) < 2:
                # One vector has no batch variance: fall back to the running statistics.
                real = F.batch_norm(real, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0,
                                    self.eps)
            else:
                real = super().forward(real)
            normed = normed.masked_scatter(valid[..., None], real)
        return normed


class PaddedKeywordNorm(nn.BatchNorm1d):
    """One BatchNorm over every keyword slot, padding included (reference ``Kw_BatchNorm_dynamic``
    of SpeechCLIP+ Cascaded+ / Hybrid+)."""

    def forward(self, keywords: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return super().forward(keywords.transpose(1, 2)).transpose(1, 2)


class PerKeywordNorm(nn.BatchNorm1d):
    """One BatchNorm per keyword slot (reference ``Kw_BatchNorm`` type eachKw, parallel: SpeechCLIP
    Cascaded and SpeechCLIP+ Hybrid): the (B, K, W) keywords as (B, W·K) features, feature
    w·K + k for dimension w of keyword k."""

    def __init__(self, width: int, num_keywords: int):
        super().__init__(width * num_keywords)
        self.width, self.num_keywords = width, num_keywords

    def init_from_table(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """As the reference initialises it: weight = std.repeat(K), bias = mean.repeat(K) (which,
        against the w·K + k layout, gives feature j the table statistics of dimension j mod W)."""
        with torch.no_grad():
            self.weight.copy_(std.repeat(self.num_keywords))
            self.bias.copy_(mean.repeat(self.num_keywords))

    def forward(self, keywords: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        batch, num, width = keywords.shape
        if num != self.num_keywords or width != self.width:
            raise ValueError(f"per-keyword BatchNorm expects (B, {self.num_keywords}, {self.width}) keywords, "
                             f"got {tuple(keywords.shape)}")
        flat = keywords.transpose(1, 2).reshape(batch, width * num)
        return super().forward(flat).reshape(batch, width, num).transpose(1, 2)


def build_keyword_norm(name: str, table: torch.Tensor, num_keywords, init_from_table: bool = True) -> nn.Module:
    """``masked`` (default), ``padded`` or ``per_keyword`` (needs a fixed keyword count), its
    affine initialised to the token table's per-dimension std / mean (SpeechCLIP code)."""
    width = table.size(1)
    if name == "masked":
        norm = MaskedKeywordNorm(width)
    elif name == "padded":
        norm = PaddedKeywordNorm(width)
    elif name == "per_keyword":
        if num_keywords is None:
            raise ValueError("keyword_norm: per_keyword needs a fixed number of keywords (CLS tokens), "
                             "not CIF segments; use masked or padded")
        norm = PerKeywordNorm(width, num_keywords)
    else:
        raise ValueError(f"unknown keyword_norm {name!r}; choose masked, padded or per_keyword")
    if init_from_table:
        mean, std = table.mean(dim=0), table.std(dim=0)
        if isinstance(norm, PerKeywordNorm):
            norm.init_from_table(mean, std)
        else:
            with torch.no_grad():
                norm.weight.copy_(std)
                norm.bias.copy_(mean)
    return norm


class VQBridge(nn.Module):
    """Straight-through cosine VQ onto a fixed token table.

    Args:
        table: (V, W) token-embedding rows (the reduced CLIP vocabulary).
        token_ids: (V,) CLIP token id of each row.
        norm: the keyword BatchNorm (``build_keyword_norm``), called as norm(keywords, lengths).
        masked_ids: CLIP ids never to choose (pad, SOT, EOT).
        temperature: τ of the backward softmax (SpeechCLIP code: 0.1).
    """

    def __init__(self, table: torch.Tensor, token_ids: torch.Tensor, norm: nn.Module, masked_ids: Sequence[int] = (),
                 temperature: float = 0.1):
        super().__init__()
        if table.dim() != 2 or token_ids.shape != (table.size(0),):
            raise ValueError(f"VQBridge: table (V, W) and token_ids (V,) expected, got "
                             f"{tuple(table.shape)} and {tuple(token_ids.shape)}")
        self.register_buffer("table", table.detach().clone())
        self.register_buffer("token_ids", token_ids.long().clone())
        self.register_buffer("allowed", ~torch.isin(self.token_ids, torch.tensor(list(masked_ids), dtype=torch.long)))
        self.temperature = temperature
        self.batchnorm = norm

    def output_size(self) -> int:
        return int(self.table.size(1))

    def forward(self, keywords: torch.Tensor, lengths: torch.Tensor) -> Dict[str, torch.Tensor]:
        """keywords (B, N, W), lengths (B,) valid keywords ->
        {"normed" (B, N, W) after BatchNorm, "quantized" (B, N, W), "indices" (B, N) row ids,
        "similarity" (B, N, V)}."""
        valid = torch.arange(keywords.size(1), device=keywords.device)[None, :] < lengths[:, None]  # (B, N)
        normed = self.batchnorm(keywords, lengths)
        similarity = F.normalize(normed, dim=-1) @ F.normalize(self.table, dim=-1).T  # (B, N, V)
        similarity = similarity.masked_fill(~self.allowed, float("-inf"))
        soft = torch.softmax(similarity / self.temperature, dim=-1)
        indices = similarity.argmax(dim=-1)
        hard = F.one_hot(indices, self.table.size(0)).to(soft.dtype)
        straight_through = hard + soft - soft.detach()
        quantized = straight_through @ self.table
        quantized = quantized * valid[..., None]
        return {"normed": normed, "quantized": quantized, "indices": indices, "similarity": similarity}


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
