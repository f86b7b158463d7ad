"""Frozen s3prl upstream + softmax-weighted sum of its layers (SpeechCLIP §3.1).

    h_t = Σ_l softmax(w)_l · LN?(h_t^(l)),   w zero-initialised (s3prl ``Featurizer``),

with per-layer LayerNorm for ``hubert_large_ll60k`` (as the SpeechCLIP large models do). The
upstream is any s3prl hub name (``hubert``, ``hubert_large_ll60k``, ``fbank``, ``mfcc``...), a local
checkpoint (``hubert_local`` + ``path_or_url``, s3prl's converted HuBERT format; add
``extra_conf: {fairseq: true}`` for a raw fairseq ``.pt``), or a small HuBERT with random weights
built from ``random_hubert`` (written once to a checkpoint in s3prl's format and loaded through
``hubert_local``, the same code path as real weights).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from espnet2.asr.frontend.abs_frontend import AbsFrontend

from espnet_speechclip.s3prl_compat import import_s3prl_hub

logger = logging.getLogger(__name__)

# Which s3prl names load a local file, and the download hint when it is missing.
_LOCAL_NAMES = {"hubert_local", "wav2vec2_local", "wavlm_local", "hubert_custom", "wav2vec2_custom"}
_CONVERTED = "https://huggingface.co/s3prl/converted_ckpts/resolve/main/"
_DOWNLOAD_HINT = (f"fetch s3prl's converted checkpoint ({_CONVERTED}hubert_base_ls960.pt for HuBERT base, "
                  f"{_CONVERTED}hubert_large_ll60k.pt for HuBERT large) and set upstream_conf: "
                  "{name: hubert_local, path_or_url: /path/to/it.pt} (a raw fairseq .pt also needs "
                  "extra_conf: {fairseq: true} and the fairseq package)")
# HuBERT BASE (Hsu et al. 2021, Table 1; the architecture of hubert_base_ls960.pt), as s3prl
# HubertConfig fields: 7-layer conv feature extractor (s3prl's default), 12 x 768, FFN 3072, 12 heads.
HUBERT_BASE = {"extractor_mode": "default", "encoder_layers": 12, "encoder_embed_dim": 768,
               "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12, "final_dim": 256}


def write_random_hubert_checkpoint(path: str, model_overrides: Dict, seed: int = 0) -> str:
    """Write a randomly initialised HuBERT in s3prl's converted-checkpoint format.

    ``model_overrides`` are s3prl ``HubertConfig`` fields (encoder_layers, encoder_embed_dim, ...).
    """
    hub = import_s3prl_hub()  # noqa: F841  (applies the torchaudio shims s3prl needs)
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig
    from s3prl.upstream.utils import merge_with_parent

    task_cfg = {"label_rate": 50.0, "sample_rate": 16000, "normalize": False}
    model_cfg = {"label_rate": 50.0, **model_overrides}
    unknown = set(model_overrides) - set(HubertConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"random_hubert: unknown HubertConfig fields {sorted(unknown)}")
    symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [str(i) for i in range(8)]
    torch.manual_seed(seed)
    model = HubertModel(merge_with_parent(HubertConfig, model_cfg),
                        merge_with_parent(HubertPretrainingConfig, task_cfg), symbols)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"task_cfg": task_cfg, "model_cfg": model_cfg, "model_weight": model.state_dict(),
                "dictionaries_symbols": symbols}, path)
    return path


def _random_hubert_path(conf: Dict) -> str:
    key = hashlib.sha1(json.dumps(conf, sort_keys=True).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("SPEECHCLIP_CACHE", Path.home() / ".cache" / "espnet_speechclip"))
    return str(cache / f"random_hubert_{key}.pt")


def check_upstream_weights(name: str, path_or_url: Optional[str] = None, extra_conf: Optional[Dict] = None) -> None:
    """Fail at once, naming the file to fetch and the option, when a local upstream cannot load.

    Hub names (``hubert``...) are not checked here: s3prl downloads them when the upstream is built.
    """
    if name not in _LOCAL_NAMES:
        return
    if path_or_url is None or not Path(path_or_url).is_file():
        raise FileNotFoundError(f"upstream checkpoint not found: {path_or_url!r}; {_DOWNLOAD_HINT}")
    if (extra_conf or {}).get("fairseq") or (extra_conf or {}).get("legacy"):
        try:
            import fairseq  # noqa: F401
        except ImportError:
            raise ImportError(f"{path_or_url}: a raw fairseq checkpoint needs the fairseq package, which is "
                              f"not installed; instead {_DOWNLOAD_HINT}") from None


class S3PRLWeightedSumUpstream(AbsFrontend):
    """s3prl upstream with a learned softmax-weighted sum over all hidden states.

    Args:
        name: s3prl hub name.
        path_or_url: local checkpoint for ``*_local`` names.
        extra_conf: passed to the s3prl hub entry (e.g. ``{fairseq: true}``).
        layer_norm: LayerNorm on each layer before the sum (large models).
        frozen: keep the upstream's weights fixed and run it without autograd (default).
        random_hubert: HubertConfig overrides for a small random HuBERT (with ``name: hubert_local``).
    """

    def __init__(self, name: str = "hubert", path_or_url: Optional[str] = None, extra_conf: Optional[Dict] = None,
                 layer_norm: bool = False, frozen: bool = True, random_hubert: Optional[Dict] = None):
        super().__init__()
        hub = import_s3prl_hub()
        from s3prl.nn import Featurizer, S3PRLUpstream

        if random_hubert is not None:
            name = "hubert_local"
            path_or_url = _random_hubert_path(random_hubert)
            if not Path(path_or_url).is_file():
                write_random_hubert_checkpoint(path_or_url, random_hubert)
        if not hasattr(hub, name):
            raise ValueError(f"unknown s3prl upstream '{name}'")
        check_upstream_weights(name, path_or_url, extra_conf)
        try:
            self.upstream = S3PRLUpstream(name, path_or_url=path_or_url, extra_conf=extra_conf)
        except (OSError, RuntimeError) as err:
            if name in _LOCAL_NAMES:
                raise
            raise FileNotFoundError(f"cannot obtain s3prl upstream '{name}' ({type(err).__name__}: {err}); "
                                    f"without a network, {_DOWNLOAD_HINT}") from err
        self.featurizer = Featurizer(self.upstream, normalize=layer_norm)
        self.frozen = frozen
        if frozen:
            self.upstream.requires_grad_(False)
            self.upstream.eval()
        self.name = name

    def train(self, mode: bool = True) -> "S3PRLWeightedSumUpstream":
        super().train(mode)
        if self.frozen:
            self.upstream.eval()  # no dropout in a frozen upstream
        return self

    def output_size(self) -> int:
        return self.featurizer.output_size

    @property
    def downsample_rate(self) -> int:
        return self.featurizer.downsample_rate

    @property
    def num_layers(self) -> int:
        return self.upstream.num_layers

    def hidden_states(self, speech: torch.Tensor, speech_lengths: torch.Tensor):
        """All upstream layers: list of (B, T, D) and list of (B,) lengths."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.upstream(speech, speech_lengths)

    def weighted_sum(self, states, lengths) -> Tuple[torch.Tensor, torch.Tensor]:
        """The learned weighted sum of :meth:`hidden_states`' output: (B, T, D), (B,)."""
        return self.featurizer(states, lengths)

    def forward(self, speech: torch.Tensor, speech_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """speech (B, S) 16 kHz, speech_lengths (B,) -> feats (B, T, D), feat_lengths (B,)."""
        return self.weighted_sum(*self.hidden_states(speech, speech_lengths))
