"""The SpeechCLIP/SpeechCLIP+ reference's own HuBERT forward, on s3prl's port of fairseq's HuBERT.

The reference (``FairseqSpeechEncoder_Hubert`` in SpeechCLIP+'s ``avssl/module/speech_encoder_plus.py``)
runs fairseq's HuBERT with its own forward instead of s3prl's hooks. For a padded batch of
waveforms ``wav_b`` of true lengths ``L_b``::

    wav_b <- LN(wav_b) over its L_b samples          (normalize_waveform: the fairseq task's ``normalize``)
    z     = post_extract_proj(LN(conv(wav)))         (B, T, D), pad = forward_padding_mask   (B, T)
    x_0   = z' + pos_conv(z'),  z' = z with padded frames zeroed;  x_0 <- LN_enc(x_0) unless layer_norm_first
    x_l   = layer_l(x_{l-1}, key_padding_mask=pad)   l = 1..N
    h     = sum_l softmax(w)_l * LN?(x_l)            w zero-initialised (reference ``WeightedSumLayer``)
    T_b   = min(round(L_b / 320), T)                 Python ``round``: halves go to the even integer

so there are N + 1 states (13 for base, 25 for large) and, unlike s3prl's hooks, the last state of a
``layer_norm_first`` (large) model is the last layer's output *without* the encoder's final LayerNorm.
Also unlike ``S3PRLWeightedSumUpstream``: no padding of the frame axis to a multiple of 2, no padding of
short batches to s3prl's minimum length, and lengths by ``round`` rather than ``ceil``.

Submodule names map a reference checkpoint simply: ``model.<key>`` is the reference's
``audio_encoder.encoder.<key>`` (fairseq ``HubertModel`` keys) and ``weights`` is
``audio_encoder.weightedsum_layer.weights``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from espnet2.asr.frontend.abs_frontend import AbsFrontend

from espnet_speechclip.s3prl_compat import import_s3prl_hub
from espnet_speechclip.upstream import _DOWNLOAD_HINT, _random_hubert_path, write_random_hubert_checkpoint

logger = logging.getLogger(__name__)

# The reference's ``MODEL_DOWNSAMPLE_RATE`` for every HuBERT: 16 kHz samples per frame.
DOWNSAMPLE_RATE = 320


def reference_frame_lengths(speech_lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
    """min(round(L / 320), T) per utterance, with Python's round (half to even), as the reference.

    speech_lengths (B,) samples -> (B,) frames, long, on speech_lengths' device.
    """
    frames = [min(round(int(length) / DOWNSAMPLE_RATE), num_frames) for length in speech_lengths.tolist()]
    return torch.tensor(frames, dtype=torch.long, device=speech_lengths.device)


def _receptive_field(feature_extractor: torch.nn.Module) -> int:
    """Fewest samples the conv feature extractor turns into one frame (400 for HuBERT)."""
    convs = [m for m in feature_extractor.modules() if isinstance(m, torch.nn.Conv1d)]
    field = 1
    for conv in reversed(convs):
        field = (field - 1) * conv.stride[0] + conv.kernel_size[0]
    return field


class ReferenceHuBERTUpstream(AbsFrontend):
    """HuBERT states as SpeechCLIP/SpeechCLIP+ compute them, and their softmax-weighted sum.

    Args:
        path_or_url: s3prl converted HuBERT checkpoint (dict with task_cfg, model_cfg, model_weight,
            dictionaries_symbols), e.g. s3prl's ``hubert_base_ls960.pt`` / ``hubert_large_ll60k.pt``.
        random_hubert: s3prl ``HubertConfig`` overrides for a small random HuBERT instead (written once
            under ``$SPEECHCLIP_CACHE`` by ``upstream.write_random_hubert_checkpoint``).
        normalize_waveform: LayerNorm each waveform over its true length (the fairseq task's
            ``normalize``: True for hubert_large_ll60k; the base SpeechCLIP+ configs do it in the dataset,
            ``data.dataset.normalize_waveform``).
        layer_norm: LayerNorm each state over the feature dim before the sum (reference
            ``normalize_hiddenstates`` with ``normalize_type: s3prl``).
        frozen: keep HuBERT's weights fixed, in eval mode, without autograd (reference ``trainable: false``).
    """

    def __init__(self, path_or_url: Optional[str] = None, random_hubert: Optional[Dict] = None,
                 normalize_waveform: bool = False, layer_norm: bool = False, frozen: bool = True):
        super().__init__()
        import_s3prl_hub()  # the torchaudio shims, before any s3prl import
        from s3prl.upstream.hubert.convert import load_converted_model

        if random_hubert is not None:
            path_or_url = _random_hubert_path(random_hubert)
            if not Path(path_or_url).is_file():
                write_random_hubert_checkpoint(path_or_url, random_hubert)
        if path_or_url is None or not Path(path_or_url).is_file():
            raise FileNotFoundError(f"HuBERT checkpoint not found: {path_or_url!r}; {_DOWNLOAD_HINT}")
        self.model, task_cfg = load_converted_model(path_or_url)
        if task_cfg.normalize and not normalize_waveform:
            logger.warning("%s was pretrained on layer-normalised waveforms (task normalize: true) but "
                           "normalize_waveform is false: normalise them in the data pipeline", path_or_url)
        self.normalize_waveform = normalize_waveform
        self.layer_norm = layer_norm
        self.frozen = frozen
        self.min_samples = _receptive_field(self.model.feature_extractor)
        # Reference WeightedSumLayer: one zero-initialised logit per state (encoder input + each layer).
        self.weights = torch.nn.Parameter(torch.zeros(self.num_layers))
        if frozen:
            self.model.requires_grad_(False)
            self.model.eval()

    def train(self, mode: bool = True) -> "ReferenceHuBERTUpstream":
        super().train(mode)
        if self.frozen:
            self.model.eval()  # no dropout in a frozen upstream
        return self

    def output_size(self) -> int:
        return self.model.encoder.embedding_dim

    @property
    def downsample_rate(self) -> int:
        return DOWNSAMPLE_RATE

    @property
    def num_layers(self) -> int:
        """Number of states: the encoder input and each layer's output."""
        return len(self.model.encoder.layers) + 1

    def _padded_input(self, speech: torch.Tensor, speech_lengths: torch.Tensor):
        """(B, S) -> zero-padded (B, max L) waveform, optionally normalised, and its (B, max L) pad mask."""
        if speech.dim() != 2 or speech_lengths.shape != (speech.size(0),):
            raise ValueError(f"expected speech (B, S) and speech_lengths (B,), got {tuple(speech.shape)} "
                             f"and {tuple(speech_lengths.shape)}")
        lengths = speech_lengths.tolist()
        if min(lengths) < 1 or max(lengths) > speech.size(1):
            raise ValueError(f"speech_lengths {lengths} must lie in [1, {speech.size(1)}] "
                             f"(speech {tuple(speech.shape)})")
        if max(lengths) < self.min_samples:
            raise ValueError(f"the longest utterance has {max(lengths)} samples; HuBERT's conv feature "
                             f"extractor needs at least {self.min_samples} for one frame")
        wav = speech.new_zeros(speech.size(0), max(lengths))  # (B, max L)
        for b, length in enumerate(lengths):
            utt = speech[b, :length]
            wav[b, :length] = F.layer_norm(utt, utt.shape) if self.normalize_waveform else utt
        samples = torch.arange(wav.size(1), device=speech.device)
        return wav, samples.unsqueeze(0) >= speech_lengths.to(speech.device).unsqueeze(1)

    def _states(self, wav: torch.Tensor, wav_pad: torch.Tensor) -> List[torch.Tensor]:
        """wav (B, S), wav_pad (B, S) True on padding -> N + 1 states (B, T, D)."""
        model, encoder = self.model, self.model.encoder
        feats = model.layer_norm(model.forward_features(wav).transpose(1, 2))  # (B, T, C)
        pad = model.forward_padding_mask(feats, wav_pad)  # (B, T), True on padded frames
        if model.post_extract_proj is not None:
            feats = model.post_extract_proj(feats)  # (B, T, D)
        x = model.dropout_input(feats).masked_fill(pad.unsqueeze(-1), 0.0)
        x = x + encoder.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not encoder.layer_norm_first:
            x = encoder.layer_norm(x)
        x = F.dropout(x, p=encoder.dropout, training=encoder.training)
        states = [x]
        x = x.transpose(0, 1)  # (T, B, D), the layers' layout
        for layer in encoder.layers:  # every layer: the reference sets layerdrop to 0
            x, _ = layer(x, self_attn_padding_mask=pad, need_weights=False)
            states.append(x.transpose(0, 1))
        return states

    def hidden_states(self, speech: torch.Tensor,
                      speech_lengths: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """speech (B, S) 16 kHz, speech_lengths (B,) -> N + 1 states (B, T, D) and N + 1 lengths (B,)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            states = self._states(*self._padded_input(speech, speech_lengths))
        lengths = reference_frame_lengths(speech_lengths, states[0].size(1))
        return states, [lengths] * len(states)

    def forward(self, speech: torch.Tensor, speech_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """speech (B, S) 16 kHz, speech_lengths (B,) -> feats (B, T, D), feat_lengths (B,)."""
        return self.weighted_sum(*self.hidden_states(speech, speech_lengths))

    def weighted_sum(self, states: List[torch.Tensor], lengths: List[torch.Tensor]
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The learned softmax-weighted sum of :meth:`hidden_states`' output: (B, T, D), (B,)."""
        stacked = torch.stack(states)  # (N + 1, B, T, D)
        if self.layer_norm:
            stacked = F.layer_norm(stacked, stacked.shape[-1:])
        weights = torch.softmax(self.weights, dim=0).view(-1, 1, 1, 1)
        return (weights * stacked).sum(0), lengths[0]
