"""Frozen CLIP towers from open_clip, with a text-tower call that takes token embeddings.

Cascaded SpeechCLIP (Shih et al., 2022, §3.3) feeds the frozen CLIP text encoder with
[SOT, k_1..k_N, EOT, pad...] where k_n are keyword vectors living in CLIP's token-embedding space,
and reads the output at the EOT position, exactly as CLIP pools a tokenised caption:

    e = LN(Transformer_causal(E + P))[EOT] · W_text.

``encode_token_embeddings`` runs those same open_clip modules on given embeddings, so feeding it
``token_embedding(ids)`` reproduces ``encode_text(ids)``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"


class MissingCheckpointError(FileNotFoundError):
    """Pretrained weights are neither on disk nor downloadable; the message says what to fetch."""


def _resolve_local(path: Optional[str], what: str, option: str) -> Optional[str]:
    if path is None:
        return None
    if not Path(path).is_file():
        raise MissingCheckpointError(f"{what} checkpoint not found: {path} (set {option} to an existing file)")
    return str(path)


class FrozenCLIP(nn.Module):
    """open_clip CLIP with both towers frozen and always in eval mode.

    Args:
        model_name: open_clip model name ("ViT-B-32", "ViT-L-14", ...) or the name given in
            ``model_config``.
        pretrained: an open_clip pretrained tag ("openai", "laion2b_s34b_b79k") or a local
            checkpoint path in OpenAI/open_clip ``.pt`` format; None keeps random weights.
        model_config: path to an open_clip model-config JSON ({"embed_dim", "vision_cfg",
            "text_cfg"}) registered under ``model_name``: how small CLIPs are built.
    """

    def __init__(self, model_name: str = "ViT-B-32", pretrained: Optional[str] = None,
                 model_config: Optional[str] = None):
        super().__init__()
        import open_clip

        if model_config is not None:
            config_path = Path(model_config)
            if not config_path.is_file():
                raise MissingCheckpointError(f"CLIP model config not found: {model_config}")
            open_clip.factory._MODEL_CONFIGS[model_name] = json.loads(config_path.read_text())
        local = pretrained is not None and (Path(pretrained).suffix in (".pt", ".pth", ".bin", ".safetensors")
                                            or "/" in pretrained)
        if local:
            _resolve_local(pretrained, "CLIP", "clip_conf.pretrained")
        try:
            model = open_clip.create_model(model_name, pretrained=pretrained, load_weights=pretrained is not None)
        except (RuntimeError, OSError, ValueError) as err:
            if local:
                raise
            raise MissingCheckpointError(
                f"Cannot obtain CLIP weights '{model_name}' / '{pretrained}' ({type(err).__name__}: {err}). "
                f"Without a network, download the OpenAI/open_clip checkpoint for {model_name} "
                f"(e.g. {model_name}.pt) elsewhere, copy it here and set clip_conf.pretrained=/path/to/it."
            ) from err
        self.model = model
        self.model_name = model_name
        self.preprocess = open_clip.image_transform(model.visual.image_size, is_train=False)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.model.requires_grad_(False)
        self.model.eval()
        encoder = getattr(self.tokenizer, "encoder", {})
        self.sot_id = int(encoder.get(SOT_TOKEN, 49406))
        self.eot_id = int(encoder.get(EOT_TOKEN, 49407))
        self.pad_id = 0

    def train(self, mode: bool = True) -> "FrozenCLIP":
        # Frozen towers never switch to training mode (no dropout, no BN updates).
        super().train(False)
        return self

    @property
    def embed_dim(self) -> int:
        """Width of the joint image/text embedding space."""
        proj = self.model.text_projection
        return proj.out_features if isinstance(proj, nn.Linear) else int(proj.shape[1])

    @property
    def token_width(self) -> int:
        """Width of the token-embedding table (the text transformer's width)."""
        return int(self.model.token_embedding.weight.shape[1])

    @property
    def context_length(self) -> int:
        return int(self.model.positional_embedding.shape[0])

    def token_table(self, token_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(V, W) rows of the token-embedding table (a detached copy)."""
        table = self.model.token_embedding.weight.detach()
        return table if token_ids is None else table[token_ids]

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """(B, context_length) token ids with SOT/EOT, as open_clip tokenises captions."""
        return self.tokenizer(list(texts))

    def decode(self, token_ids: Sequence[int]) -> List[str]:
        """Word pieces for token ids, with the BPE end-of-word marker removed."""
        decoder = self.tokenizer.decoder
        return [decoder[int(i)].replace("</w>", "") for i in token_ids]

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) preprocessed -> (B, embed_dim), not normalised."""
        return self.model.encode_image(images)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Captions -> (B, embed_dim), not normalised."""
        ids = self.tokenize(texts).to(self.model.positional_embedding.device)
        return self.model.encode_text(ids)

    def encode_token_embeddings(self, keywords: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Run the frozen text tower on keyword vectors placed between SOT and EOT.

        Args:
            keywords: (B, N, W) vectors in token-embedding space; gradients flow back to them.
            lengths: (B,) number of valid keywords per utterance (N_b ≤ context_length − 2).

        Returns:
            (B, embed_dim) text-tower output at each sequence's EOT position.
        """
        model = self.model
        batch, num_keywords, width = keywords.shape
        if num_keywords > self.context_length - 2:
            raise ValueError(f"{num_keywords} keywords do not fit CLIP's context of {self.context_length}")
        device = keywords.device
        table = model.token_embedding.weight.detach()
        # The causal mask makes positions after the last EOT irrelevant to every EOT output, so the
        # sequence stops there: identical results, a fraction of the 77-token cost.
        seq_len = num_keywords + 2
        positions = torch.arange(seq_len, device=device)[None, :]  # (1, L)
        eot_pos = 1 + lengths.to(device)  # (B,)
        x = table[self.pad_id].expand(batch, seq_len, width).clone()
        x[:, 0] = table[self.sot_id]
        slot = (positions[:, 1:1 + num_keywords] <= lengths[:, None].to(device))  # (B, N) valid keywords
        x[:, 1:1 + num_keywords] = torch.where(slot[..., None], keywords, x[:, 1:1 + num_keywords])
        x = torch.where((positions == eot_pos[:, None])[..., None], table[self.eot_id], x)
        cast = model.transformer.get_cast_dtype()
        x = x.to(cast) + model.positional_embedding[:seq_len].to(cast)
        x = model.transformer(x, attn_mask=model.attn_mask[:seq_len, :seq_len])
        x = model.ln_final(x)
        pooled = x[torch.arange(batch, device=device), eot_pos]
        proj = model.text_projection
        if proj is None:
            return pooled
        return proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj
