"""Acoustic pseudo-boundaries for the CIF weights: an optional training prior, not in SpeechCLIP+.

Nothing in the SpeechCLIP+ objective depends on where a CIF segment fires: the quantity loss sees
only Σα and the contrastive loss is met by any segmentation whose tokens name the words (see the
SpokenShapes recipe notes). This prior gives α a target that does depend on it, drawn from the
sound alone, after the pseudo-label idea of GradSeg (Fuchs & Hoshen, "Unsupervised word
segmentation using temporal gradient pseudo-labels", ICASSP 2023): peaks of an acoustic change
score become boundary labels, and a learnt predictor (here the CIF weight predictor itself) is
trained on them.

On log-mel frames x_t (80 bins, 25 ms windows every 20 ms, per-utterance mean and variance
normalised, as the s3prl filterbank upstream) with frame energy e_t = mean_f x_{t,f}:

    s_t = z(‖x_t − x_{t−1}‖) + λ_E · z(−e_{t−1}),     z(·) = standardised within the utterance,

the boundary between frames t−1 and t scores s_t: spectral change, plus a dip in energy. The S_b
highest local maxima of s (each the maximum within ±(d−1) frames, d = ``min_distance`` frames)
are the pseudo-boundaries, S_b = the CIF target count round(r · T'). Each moves to the segmenter
frame that ends nearest to it, y_i = 1 there and 0 elsewhere, and

    L_b = w · mean_{i < T'_b} BCE(α_{b,i}, y_{b,i}).

A spike of α ≈ 1 on each boundary frame and ≈ 0 elsewhere makes the running sum cross each
integer there, so CIF then fires on the pseudo-boundaries. On the SpokenShapes dev split these
pseudo-boundaries alone score word boundary F1 53.9 (±50 ms) at the 20 ms log-mel rate and
47-48 once moved to the encoder's 40 ms frames, against ~29 for random times.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from espnet_speechclip.branches.abs_branch import padding_mask

SAMPLE_RATE = 16000


class AcousticBoundaryPrior(nn.Module):
    """Args:
        weight: w, the loss weight.
        energy_weight: λ_E, the share of the energy dip in the score.
        min_distance: d, the fewest log-mel frames between two pseudo-boundaries (5 = 100 ms:
            SpokenShapes words last 60-600 ms, and two word ends within 100 ms are rare).
        n_mels, frame_length_ms, frame_shift_ms: the log-mel analysis (as conf/fbank_50hz.yaml).
    """

    def __init__(self, weight: float = 1.0, energy_weight: float = 1.0, min_distance: int = 5,
                 n_mels: int = 80, frame_length_ms: float = 25.0, frame_shift_ms: float = 20.0):
        super().__init__()
        if weight < 0 or energy_weight < 0:
            raise ValueError(f"weight and energy_weight must be >= 0, got {weight}, {energy_weight}")
        if min_distance < 1:
            raise ValueError(f"min_distance must be >= 1 frame, got {min_distance}")
        self.weight = weight
        self.energy_weight = energy_weight
        self.min_distance = min_distance
        self.hop = int(round(SAMPLE_RATE * frame_shift_ms / 1000))
        window = int(round(SAMPLE_RATE * frame_length_ms / 1000))
        self.melspec = torchaudio.transforms.MelSpectrogram(
            SAMPLE_RATE, n_fft=512, win_length=window, hop_length=self.hop, n_mels=n_mels, center=False)

    @torch.no_grad()
    def log_mel(self, speech: torch.Tensor, speech_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """speech (B, S) -> per-utterance normalised log-mel (B, T, F), lengths (B,)."""
        if speech.size(1) < self.melspec.win_length:
            speech = F.pad(speech, (0, self.melspec.win_length - speech.size(1)))
        feats = torch.log(self.melspec(speech.float()) + 1e-6).transpose(1, 2)  # (B, T, F)
        lengths = ((speech_lengths - self.melspec.win_length) // self.hop + 1).clamp(min=1, max=feats.size(1))
        valid = ~padding_mask(lengths, feats.size(1))[..., None]
        count = lengths[:, None, None].to(feats.dtype)
        mean = (feats * valid).sum(1, keepdim=True) / count
        std = (((feats - mean) ** 2 * valid).sum(1, keepdim=True) / count).sqrt().clamp(min=1e-5)
        return ((feats - mean) / std).masked_fill(~valid, 0.0), lengths

    @torch.no_grad()
    def scores(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, F), (B,) -> s (B, T), s[:, t] scoring a boundary before frame t; -inf where none can be."""
        change = (feats[:, 1:] - feats[:, :-1]).norm(dim=-1)  # (B, T-1): between t-1 and t
        energy_dip = -feats.mean(dim=-1)[:, :-1]  # (B, T-1): the energy of frame t-1
        valid = ~padding_mask(lengths - 1, change.size(1))
        score = _standardise(change, valid) + self.energy_weight * _standardise(energy_dip, valid)
        score = F.pad(score, (1, 0))  # no boundary before the first frame
        return score.masked_fill(~F.pad(valid, (1, 0)), float("-inf"))

    @torch.no_grad()
    def boundary_frames(self, speech: torch.Tensor, speech_lengths: torch.Tensor,
                        counts: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Pseudo-boundaries as log-mel frame indices t (a boundary before frame t).

        Returns (mask (B, T) bool, log-mel lengths (B,)); at most counts[b] per utterance.
        """
        feats, lengths = self.log_mel(speech, speech_lengths)
        score = self.scores(feats, lengths)
        radius = self.min_distance - 1
        local_max = F.max_pool1d(score[:, None], 2 * radius + 1, stride=1, padding=radius)[:, 0]
        candidate = (score == local_max) & torch.isfinite(score)
        ranked = score.masked_fill(~candidate, float("-inf"))
        order = ranked.argsort(dim=1, descending=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(order.size(1), device=order.device).expand_as(order))
        return candidate & (rank < counts[:, None]), lengths

    @torch.no_grad()
    def targets(self, speech: torch.Tensor, speech_lengths: torch.Tensor, frame_lengths: torch.Tensor,
                num_frames: int, counts: torch.Tensor) -> torch.Tensor:
        """y (B, T') at the segmenter's rate: 1 on the frame whose end lies nearest each pseudo-boundary."""
        mask, mel_lengths = self.boundary_frames(speech, speech_lengths, counts)
        batch, index = mask.nonzero(as_tuple=True)
        # Boundary before log-mel frame t is at time t·hop; segmenter frame i ends at (i+1)·T/T' of that.
        ratio = frame_lengths[batch].to(torch.float32) / mel_lengths[batch].to(torch.float32)
        frame = (torch.round(index.to(torch.float32) * ratio) - 1).long()
        frame = torch.minimum(frame.clamp(min=0), frame_lengths[batch] - 1)
        y = torch.zeros(speech.size(0), num_frames, device=speech.device)
        y[batch, frame] = 1.0
        return y

    def forward(self, speech: torch.Tensor, speech_lengths: torch.Tensor, alpha: torch.Tensor,
                frame_lengths: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """L_b for α (B, T') over frame_lengths (B,) valid frames, counts (B,) = S; speech (B, S) 16 kHz."""
        if alpha.dim() != 2 or alpha.size(0) != speech.size(0):
            raise ValueError(f"boundary prior: alpha must be (B, T') for speech {tuple(speech.shape)}, "
                             f"got {tuple(alpha.shape)}")
        y = self.targets(speech, speech_lengths, frame_lengths, alpha.size(1), counts)
        valid = ~padding_mask(frame_lengths, alpha.size(1))
        bce = F.binary_cross_entropy(alpha.clamp(1e-6, 1 - 1e-6), y, reduction="none")
        return self.weight * (bce * valid).sum() / valid.sum().clamp(min=1)


def _standardise(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """z-score each row over its valid entries (B, T), (B, T) bool."""
    count = valid.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (x * valid).sum(dim=1, keepdim=True) / count
    std = ((((x - mean) * valid) ** 2).sum(dim=1, keepdim=True) / count).sqrt().clamp(min=1e-6)
    return (x - mean) / std
