"""ESPnetSpeechCLIPModel: upstream -> (encoder) -> parallel and/or cascaded branch -> InfoNCE.

The variants of the papers are compositions, chosen in the task's builder:

    Parallel    = parallel branch only
    Cascaded    = cascaded branch with K CLS tokens          (SpeechCLIP)
    Cascaded+   = cascaded branch with the CIF segmenter     (SpeechCLIP+)
    Hybrid(+)   = both, L = w_p L_p + w_c L_c (+ w_q L_q)    (SpeechCLIP §3.4, SpeechCLIP+ §3; w = 1, 1, 0.25)

In the SpeechCLIP+ Hybrid and Hybrid+ the two branches share one attention block (``shared_block``,
``branches.shared``), which runs once over the frames and its learned tokens before the branches.

A hybrid model also offers a "fused" retrieval embedding (not in the papers, which report each
branch alone): e = norm((1 - λ) norm(e_p) + λ norm(e_c)), λ = ``fusion_weight``.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import torch
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from espnet2.asr.specaug.abs_specaug import AbsSpecAug
from espnet2.torch_utils.device_funcs import force_gatherable
from espnet2.train.abs_espnet_model import AbsESPnetModel

from espnet_speechclip.boundary_prior import AcousticBoundaryPrior
from espnet_speechclip.branches.abs_branch import AbsBranch
from espnet_speechclip.branches.shared import SharedCLSBlock
from espnet_speechclip.distributed import gather_with_grad
from espnet_speechclip.frame_views import FrameViews, encode_with_input_layer
from espnet_speechclip.losses import InfoNCELoss, image_groups_from_embeddings
from espnet_speechclip.vq_bridge import token_perplexity

logger = logging.getLogger(__name__)


class ESPnetSpeechCLIPModel(AbsESPnetModel):
    """Args:
        upstream: frozen speech upstream with weighted layer sum (frames at its rate).
        specaug: optional SpecAugment on the upstream frames, applied in training only.
        encoder: optional trainable ESPnet encoder between upstream and branches.
        parallel: parallel branch or None.  cascaded: cascaded branch or None.
        temperature / learnable_temperature: InfoNCE τ (base: 0.07 fixed; large: learnable).
        max_logit_scale: cap on 1/τ (100, as CLIP; None for the reference configs, which have none).
        parallel_weight, cascaded_weight, quantity_weight: loss weights (1, 1, 0.25).
        retrieval_branch: "parallel", "cascaded" or "fused" (both branches): the embedding
            ``encode_speech`` returns as "embedding" and validation selects models on; a model
            with one branch retrieves with that one (with a warning if another was asked for).
        fusion_weight: λ, the cascaded branch's share of the fused embedding.
        boundary_prior: optional extra loss on the CIF weights α (boundary_prior.py; not in
            the papers), added to L with its own weight.
        shared_block: optional block both branches read (SpeechCLIP+ Hybrid / Hybrid+).
    """

    def __init__(self, upstream: AbsFrontend, specaug: Optional[AbsSpecAug], encoder: Optional[AbsEncoder], parallel: Optional[AbsBranch],
                 cascaded: Optional[AbsBranch], temperature: float = 0.07, learnable_temperature: bool = False,
                 parallel_weight: float = 1.0, cascaded_weight: float = 1.0, quantity_weight: float = 0.25,
                 retrieval_branch: str = "parallel", fusion_weight: float = 0.5,
                 boundary_prior: Optional[AcousticBoundaryPrior] = None,
                 shared_block: Optional[SharedCLSBlock] = None, max_logit_scale: Optional[float] = 100.0):
        super().__init__()
        if parallel is None and cascaded is None:
            raise ValueError("at least one of the parallel and cascaded branches is needed")
        if retrieval_branch not in ("parallel", "cascaded", "fused"):
            raise ValueError(f"retrieval_branch must be parallel, cascaded or fused, got {retrieval_branch!r}")
        if not 0.0 <= fusion_weight <= 1.0:
            raise ValueError(f"fusion_weight must be in [0, 1], got {fusion_weight}")
        # A variant made by dropping a branch from a shared config retrieves with the branch it has.
        present = [name for name, branch in (("parallel", parallel), ("cascaded", cascaded)) if branch is not None]
        if retrieval_branch not in present and len(present) == 1:
            logger.warning("retrieval_branch %r: this model has only the %s branch; retrieving with it",
                           retrieval_branch, present[0])
            retrieval_branch = present[0]
        self.upstream = upstream
        self.specaug = specaug
        self.encoder = encoder
        self.shared_block = shared_block
        self.parallel = parallel
        self.cascaded = cascaded
        self.loss_fn = InfoNCELoss(temperature, learnable_temperature, max_logit_scale)
        self.parallel_weight = parallel_weight
        self.cascaded_weight = cascaded_weight
        self.quantity_weight = quantity_weight
        self.retrieval_branch = retrieval_branch
        self.fusion_weight = fusion_weight
        if boundary_prior is not None and cascaded is None:
            raise ValueError("a boundary prior trains the CIF weights: it needs a cascaded branch with segmenter: cif")
        self.boundary_prior = boundary_prior

    def branches(self) -> Dict[str, AbsBranch]:
        return {name: b for name, b in (("parallel", self.parallel), ("cascaded", self.cascaded)) if b is not None}

    def embedding_names(self) -> List[str]:
        """The retrieval embeddings ``encode_speech`` gives: each branch's, and "fused" with both."""
        names = list(self.branches())
        return names + ["fused"] if len(names) == 2 else names

    def fuse(self, parallel: torch.Tensor, cascaded: torch.Tensor) -> torch.Tensor:
        """(B, E), (B, E) -> norm((1 - λ) norm(parallel) + λ norm(cascaded)); unit vectors, so
        λ weighs the two cosine similarities."""
        unit = torch.nn.functional.normalize
        return unit((1 - self.fusion_weight) * unit(parallel, dim=-1) + self.fusion_weight * unit(cascaded, dim=-1),
                    dim=-1)

    def encode_frames(self, speech: torch.Tensor, speech_lengths: torch.Tensor) -> FrameViews:
        """speech (B, S) -> the frame views (``frame_views.FrameViews``) before any branch or
        shared block: the encoder output, its input layer's output (``local``: e.g. the conv
        subsampling, ~140 ms receptive field, before any self-attention) and the upstream's frames."""
        upstream, upstream_lengths = self.upstream(speech, speech_lengths)
        if self.specaug is not None and self.training:
            upstream, upstream_lengths = self.specaug(upstream, upstream_lengths)
        return self.views_of_upstream(upstream, upstream_lengths)

    def views_of_upstream(self, upstream: torch.Tensor, upstream_lengths: torch.Tensor) -> FrameViews:
        """The upstream's weighted sum (B, T_u, D_u), lengths (B,) -> the frame views (the encoder run)."""
        if self.encoder is None:
            return FrameViews(upstream, upstream_lengths, upstream, upstream, upstream_lengths)
        frames, lengths, local = encode_with_input_layer(self.encoder, upstream, upstream_lengths)
        return FrameViews(frames, lengths, local[:, : frames.size(1)], upstream, upstream_lengths)

    def branch_views(self, speech: torch.Tensor, speech_lengths: torch.Tensor) -> FrameViews:
        """:meth:`encode_frames`, then the shared block if there is one."""
        views = self.encode_frames(speech, speech_lengths)
        return views if self.shared_block is None else self.shared_block(views)

    def run_branches(self, speech: torch.Tensor, speech_lengths: torch.Tensor) -> Dict[str, Dict[str, torch.Tensor]]:
        """Every branch's outputs, plus "frame_lengths" (what training needs)."""
        views = self.branch_views(speech, speech_lengths)
        out: Dict = {name: branch(views) for name, branch in self.branches().items()}
        out["frame_lengths"] = views.lengths
        return out

    def branch_frame_states(self, views: FrameViews) -> List[torch.Tensor]:
        """The frame-rate hidden states the visually grounded training learnt, in the order of the
        reference ``feature_extractor_s3prl``: the shared block's (Hybrid / Hybrid+), else the
        cascaded branch's block, then the parallel branch's layers; each (B, T, D) at the rate of
        ``views`` (from :meth:`encode_frames`; ``views.lengths`` are their lengths)."""
        states: List[torch.Tensor] = []
        if self.shared_block is not None:
            states += self.shared_block.frame_states(views)
            views = self.shared_block(views)
        for name in ("cascaded", "parallel"):
            if name in self.branches():
                states += self.branches()[name].frame_states(views)
        return states

    def encode_speech(self, speech: torch.Tensor, speech_lengths: torch.Tensor) -> Dict[str, Dict[str, torch.Tensor]]:
        """:meth:`run_branches` plus "fused" (hybrid) and ``out["embedding"]``, the retrieval embedding."""
        out = self.run_branches(speech, speech_lengths)
        if "fused" in self.embedding_names():
            out["fused"] = {"embedding": self.fuse(out["parallel"]["embedding"], out["cascaded"]["embedding"])}
        out["embedding"] = out[self.retrieval_branch]["embedding"]
        return out

    def forward(self, speech: torch.Tensor, speech_lengths: torch.Tensor, image_feats: torch.Tensor,
                **kwargs) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """speech (B, S), speech_lengths (B,), image_feats (B, E) frozen CLIP image embeddings."""
        batch = speech.size(0)
        out = self.run_branches(speech, speech_lengths[:batch])  # the loss needs no fused embedding
        # Training under DDP: every rank contrasts against the whole global batch (distributed.py),
        # the same loss as one process on that batch. Not in eval mode: ESPnet calls forward on
        # rank 0 alone there (attention plots), where a collective would wait for the others.
        gather = gather_with_grad if self.training else (lambda local: local)
        image_feats = gather(image_feats)
        groups = image_groups_from_embeddings(image_feats)
        stats: Dict[str, torch.Tensor] = {}
        loss = speech.new_zeros(())
        weights = {"parallel": self.parallel_weight, "cascaded": self.cascaded_weight}
        for name in self.branches():
            branch_loss, logits = self.loss_fn(gather(out[name]["embedding"]), image_feats, groups)
            loss = loss + weights[name] * branch_loss
            target = torch.arange(logits.size(0), device=logits.device)
            stats[f"loss_{name}"] = branch_loss.detach()
            stats[f"r1_{name}"] = (logits.argmax(dim=1) == target).float().mean()
        cascaded = out.get("cascaded", {})
        if "quantity_loss" in cascaded:
            loss = loss + self.quantity_weight * cascaded["quantity_loss"]
            stats["loss_quantity"] = cascaded["quantity_loss"].detach()
        if self.boundary_prior is not None:
            if "alpha" not in cascaded:
                raise ValueError("a boundary prior needs CIF weights: use segmenter: cif")
            boundary_loss = self.boundary_prior(speech, speech_lengths[:batch], cascaded["alpha"],
                                                cascaded["alpha_lengths"], cascaded["target_lengths"])
            loss = loss + boundary_loss
            stats["loss_boundary"] = boundary_loss.detach()
        if "keyword_lengths" in cascaded:
            stats["keywords_per_utt"] = cascaded["keyword_lengths"].float().mean()
            stats["token_perplexity"] = token_perplexity(cascaded["keyword_indices"], cascaded["keyword_lengths"])
        stats["loss"] = loss.detach()
        loss, stats, weight = force_gatherable((loss, stats, batch), loss.device)
        return loss, stats, weight

    def collect_feats(self, speech: torch.Tensor, speech_lengths: torch.Tensor, **kwargs) -> Dict[str, torch.Tensor]:
        # No feature normalisation statistics are needed: the upstream consumes raw waveforms.
        return {}
