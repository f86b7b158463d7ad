"""Which frames a CIF segmenter integrates and predicts its weights α from.

    context   the segmenter block's output (SpeechCLIP+, both roles)
    local     the frames before any self-attention (the encoder's input layer, ~140 ms of sound
              for ESPnet's conv1d2): α can only fire on acoustic events (not in SpeechCLIP+)
    upstream  α only: the upstream's own frames at their finer rate (not in SpeechCLIP+); the
              integrated frames then follow at that rate, upstream frame t taking the frame whose
              receptive field is centred nearest to it, i = round((t − c) / r), r = T_u / T the
              rate ratio and c = ``local_frame_centre`` (2 for conv1d2, whose frame i sees upstream
              frames 2i..2i+4). Each segment still holds the same frames as a CIF over the coarse
              frames with α summed per frame; only the fire times get the finer grid.

``detach``: no gradient from α into the frames it is predicted from (not in SpeechCLIP+): the
losses on α then train the weight predictor alone.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from espnet_speechclip.frame_views import FrameViews


class ContextFrames:
    #: True when the source reads the segmenter block's output (which must then be computed).
    reads_context = True

    def __init__(self, detach: bool = False):
        self.detach = detach

    def frames(self, views: FrameViews, context: Optional[torch.Tensor]) -> torch.Tensor:
        return context

    def weight_input(self, views: FrameViews, context: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        return (context.detach() if self.detach else context), views.lengths

    def to_weight_rate(self, frames: torch.Tensor, views: FrameViews) -> torch.Tensor:
        return frames


class LocalFrames(ContextFrames):
    reads_context = False

    def frames(self, views: FrameViews, context: Optional[torch.Tensor]) -> torch.Tensor:
        return views.local

    def weight_input(self, views: FrameViews, context: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        return (views.local.detach() if self.detach else views.local), views.lengths


class UpstreamFrames(ContextFrames):
    reads_context = False

    def __init__(self, detach: bool = False, centre: float = 0.0):
        super().__init__(detach)
        self.centre = centre

    def weight_input(self, views: FrameViews, context: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        return (views.upstream.detach() if self.detach else views.upstream), views.upstream_lengths

    def to_weight_rate(self, frames: torch.Tensor, views: FrameViews) -> torch.Tensor:
        return gather_to_rate(frames, views.lengths, views.upstream_lengths, views.upstream.size(1), self.centre)


WEIGHT_SOURCES = {"context": ContextFrames, "local": LocalFrames, "upstream": UpstreamFrames}


def gather_to_rate(frames: torch.Tensor, lengths: torch.Tensor, fine_lengths: torch.Tensor, num_fine: int,
                   centre: float) -> torch.Tensor:
    """(B, T, D) frames -> (B, T_u, D): fine frame t takes frame clamp(round((t − c) / r), 0, T − 1),
    r = fine_lengths / lengths per utterance; rows at or beyond fine_lengths repeat the last frame."""
    ratio = fine_lengths.to(torch.float32) / lengths.clamp(min=1).to(torch.float32)  # (B,)
    fine = torch.arange(num_fine, device=frames.device, dtype=torch.float32)
    index = torch.round((fine[None, :] - centre) / ratio[:, None]).long()
    index = torch.minimum(index.clamp(min=0), (lengths - 1).clamp(min=0)[:, None])
    return frames.gather(1, index[..., None].expand(-1, -1, frames.size(2)))
