"""Contrastive losses under ESPnet's DDP: gather the whole global batch on every rank.

InfoNCE depends on the whole batch (every other caption is a negative). ESPnet's DDP splits a
global batch of B utterances into per-rank shards (``batch[rank::world_size]``); without a gather,
each rank would contrast its B / world_size utterances only, a different (easier) objective than
the single-process run on the same B. As in CLIP-style training, every rank gathers the speech and
image embeddings of all ranks and computes the global loss.

Gradients: ``gather_with_grad`` back-propagates, to each rank's own rows, the *sum* over ranks of
the gradients every rank's (identical) loss sends to those rows. ESPnet scales rank r's loss by
``world_size · B_r / B`` and DDP averages the gradients, so the contrastive part's gradient is
exactly that of the single-process loss on the global batch, and per-utterance terms averaged per
rank (the CIF quantity loss) become the global batch mean.
"""
from __future__ import annotations

from typing import List

import torch
import torch.distributed as dist


def distributed_world_size() -> int:
    """Number of processes in the default group; 1 when torch.distributed is not in use."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class _GatherWithGrad(torch.autograd.Function):
    """(B_r, ...) on each rank -> (Σ B_r, ...) in rank order; backward: summed gradient rows."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        # Shards differ by one utterance when B is not a multiple of world_size, and all_gather
        # needs equal shapes: exchange the sizes, pad to the largest, then trim.
        size = torch.tensor([local.size(0)], device=local.device)
        sizes = [torch.zeros_like(size) for _ in range(world)]
        dist.all_gather(sizes, size)
        counts: List[int] = [int(s.item()) for s in sizes]
        padded = local.new_zeros((max(counts),) + tuple(local.shape[1:]))
        padded[: local.size(0)] = local
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        ctx.counts, ctx.rank = counts, rank
        return torch.cat([part[:n] for part, n in zip(parts, counts)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # all_reduce instead of reduce_scatter: gloo (CPU) has no reduce_scatter, and these are
        # (B, E) embedding gradients, small next to the model's own gradient all-reduce.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.counts[: ctx.rank])
        return grad[start: start + ctx.counts[ctx.rank]]


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``local`` (B_r, ...) along dim 0 (rank order); identity on one process.

    Gradients reach ``local`` from the gathered tensor of every rank (see the module docstring).
    All ranks must call it the same number of times (ESPnet keeps the ranks' iterations in step).
    """
    if distributed_world_size() == 1:
        return local
    return _GatherWithGrad.apply(local)
