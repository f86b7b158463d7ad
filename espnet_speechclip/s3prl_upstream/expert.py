"""A trained SpeechCLIP model as an s3prl upstream (s3prl's ``UpstreamExpert`` interface).

``hidden_states`` holds the frame-rate representations only, at the upstream's frame rate:

    [upstream layer 0, ..., upstream layer L-1, speech encoder output, branch states...]

The branch states are what the visually grounded training learnt at frame rate, in the order of
the reference ``feature_extractor_s3prl``: the output of each layer of the shared block (Hybrid /
Hybrid+) or of the cascaded branch's block, then of each parallel-branch layer (learned tokens left
out; ``ESPnetSpeechCLIPModel.branch_frame_states``). The encoder output (or, for a model without an
encoder, the learned weighted sum of the upstream layers it feeds to the branches) and the branch
states are repeated to the upstream's frame rate (nearest frame) when the encoder subsamples. s3prl's weighted sum needs one width, so narrower states are zero-padded to the
widest: a weighted sum followed by the downstream's linear projector then sees every state. The
utterance-level outputs (CLS embedding, keywords) are not frame-rate features and are left out.
With ``bare=True`` only the upstream's own layers are returned: the baseline the probe compares to.
"""
from __future__ import annotations

import logging
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

logger = logging.getLogger(__name__)
MIN_SAMPLES = 4000  # 0.25 s: shorter clips are padded with silence (the encoder's subsampling needs frames)


class UpstreamExpert(nn.Module):
    """Args:
        ckpt: anything ``SpeechCLIP.from_pretrained`` takes: packed zip, exp dir, checkpoint, zoo tag.
        model_config: unused (the packed config is in ``ckpt``); accepted because s3prl passes it.
        bare: expose only the model's speech upstream, not its trained encoder.
    """

    def __init__(self, ckpt: str, model_config: str = None, bare: bool = False, **kwargs):
        super().__init__()
        from espnet_speechclip.inference import SpeechCLIP

        if ckpt is None:
            raise ValueError("speechclip_local needs ckpt= (a packed zip, an exp dir or a model-zoo tag)")
        model = SpeechCLIP.from_pretrained(ckpt).model
        self.upstream = model.upstream
        self.model = None if bare else model
        self.bare = bare
        self.eval()

    def get_downsample_rates(self, key: str) -> int:
        return int(self.upstream.downsample_rate)

    @staticmethod
    def _to_rate(enc: torch.Tensor, enc_lengths: torch.Tensor, num_frames: int, frame_lengths: torch.Tensor
                 ) -> torch.Tensor:
        """(B, T', D') at the encoder's rate -> (B, num_frames, D'), nearest frame."""
        out = enc.new_zeros(enc.size(0), num_frames, enc.size(2))
        for i in range(enc.size(0)):
            valid = enc[i:i + 1, : max(int(enc_lengths[i]), 1)].transpose(1, 2)  # (1, D', T_enc)
            size = int(frame_lengths[i])
            out[i, :size] = F.interpolate(valid, size=size, mode="nearest")[0].T
        return out

    def forward(self, wavs: List[torch.Tensor]) -> Dict[str, List[torch.Tensor]]:
        """wavs: list of (S_i,) 16 kHz -> {"hidden_states": list of (B, T, D)}, T at the upstream's rate."""
        lengths = torch.tensor([len(w) for w in wavs], device=wavs[0].device)
        if int(lengths.min()) == 0:
            raise ValueError(f"empty waveform at batch positions {torch.nonzero(lengths == 0).flatten().tolist()}")
        padded = [F.pad(w, (0, MIN_SAMPLES - len(w))) if len(w) < MIN_SAMPLES else w for w in wavs]
        speech = pad_sequence(padded, batch_first=True)
        states, state_lengths = self.upstream.hidden_states(speech, torch.tensor([len(w) for w in padded],
                                                                                 device=speech.device))
        states = list(states)
        if not self.bare:  # one pass: the encoder and branches read the weighted sum of these states
            frames, frame_lengths = self.upstream.weighted_sum(states, state_lengths)
            views = self.model.views_of_upstream(frames, frame_lengths)
            learnt = self.model.branch_frame_states(views)  # at the encoder's rate
            if self.model.encoder is None:
                states.append(frames)  # what the branches read, at the upstream's rate already
            else:
                learnt.insert(0, views.frames)
            states += [self._to_rate(s, views.lengths, frames.size(1), frame_lengths) for s in learnt]
        rate = self.get_downsample_rates("hidden_states")
        frames = int((lengths.max() - 1) // rate + 1)  # what s3prl expects for the true lengths
        width = max(s.size(-1) for s in states)
        return {"hidden_states": [F.pad(s[:, :frames], (0, width - s.size(-1))) for s in states]}
