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
import zipfile
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"


class MissingCheckpointError(FileNotFoundError):
    """Pretrained weights are neither on disk nor downloadable; the message says what to fetch."""


# How both entry points name the CLIP weights: the stage 3 option and the training option.
_OPTIONS = "--clip_pretrained (recipe) / clip_conf.pretrained (training config)"


def is_local_checkpoint(pretrained: Optional[str]) -> bool:
    """A path (has a directory part or a checkpoint suffix) rather than an open_clip tag."""
    return pretrained is not None and (Path(pretrained).suffix in (".pt", ".pth", ".bin", ".safetensors")
                                       or "/" in pretrained)


def is_torchscript_archive(path: str) -> bool:
    """OpenAI's published CLIP ``.pt`` files are TorchScript archives (a zip with ``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def _fetch_hint(model_name: str, pretrained: str) -> str:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, pretrained) or {}
    sources = [f"https://huggingface.co/{cfg['hf_hub'].rstrip('/')}/resolve/main/open_clip_pytorch_model.bin"
               if cfg.get("hf_hub") else "", cfg.get("url", "")]
    sources = " or ".join(s for s in sources if s) or f"the {model_name} / {pretrained} checkpoint"
    return (f"Without a network, fetch {sources} on another machine, copy it here and set {_OPTIONS} "
            f"to its path")


def check_clip_weights(model_name: str, pretrained: Optional[str]) -> Optional[str]:
    """Make sure the weights can be had before any work starts; returns the local file, if any.

    A local path must exist; a tag must be known to open_clip and is downloaded into open_clip's
    cache now (the later stages find it there). Raises ``MissingCheckpointError`` otherwise.
    """
    import open_clip

    if pretrained is None:
        return None
    if is_local_checkpoint(pretrained):
        if not Path(pretrained).is_file():
            raise MissingCheckpointError(f"CLIP checkpoint not found: {pretrained} (fetch the OpenAI/open_clip "
                                         f"{model_name} checkpoint and set {_OPTIONS} to it)")
        return pretrained
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        raise ValueError(f"open_clip has no pretrained tag {pretrained!r} for {model_name!r}; tags: "
                         f"{open_clip.list_pretrained_tags_by_model(model_name)}")
    try:
        return open_clip.download_pretrained(cfg)
    except Exception as err:  # network errors come in many types (OSError, HTTPError, HF hub errors)
        raise MissingCheckpointError(f"Cannot obtain CLIP weights {model_name!r} / {pretrained!r} "
                                     f"({type(err).__name__}: {err}). {_fetch_hint(model_name, pretrained)}") from err


def _create_model(model_name: str, pretrained: Optional[str]) -> nn.Module:
    """open_clip model with the weights of ``pretrained`` (tag, state dict or TorchScript archive)."""
    import open_clip

    if pretrained is None:
        return open_clip.create_model(model_name, pretrained=None, load_weights=False)
    if is_local_checkpoint(pretrained):
        check_clip_weights(model_name, pretrained)
        if not is_torchscript_archive(pretrained):
            try:
                return open_clip.create_model(model_name, pretrained=pretrained)
            except RuntimeError as err:
                raise ValueError(f"CLIP checkpoint {pretrained} does not fit open_clip model {model_name!r}: "
                                 f"{err}") from err
        # OpenAI's own file: a TorchScript archive of a QuickGELU model; its state dict has the
        # names open_clip's CLIP uses, plus three non-parameter entries.
        logger.info("%s: OpenAI TorchScript archive, loaded as %s with QuickGELU", pretrained, model_name)
        model = open_clip.create_model(model_name, pretrained=None, load_weights=False, force_quick_gelu=True)
        state = torch.jit.load(pretrained, map_location="cpu").state_dict()
        for key in ("input_resolution", "context_length", "vocab_size"):
            state.pop(key, None)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"CLIP checkpoint {pretrained} does not fit open_clip model {model_name!r}: "
                             f"{err}") from err
        return model
    # Tag: open_clip 3 only *warns* when a tag was trained with QuickGELU (all OpenAI weights) and the
    # model config uses GELU; the embeddings would be silently off, so the activation follows the tag.
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained) or {}
    try:
        return open_clip.create_model(model_name, pretrained=pretrained,
                                      force_quick_gelu=bool(cfg.get("quick_gelu", False)))
    except (RuntimeError, OSError, ValueError) as err:
        hint = _fetch_hint(model_name, pretrained)
        raise MissingCheckpointError(f"Cannot obtain CLIP weights {model_name!r} / {pretrained!r} "
                                     f"({type(err).__name__}: {err}). {hint}") from err


class FrozenCLIP(nn.Module):
    """open_clip CLIP with both towers frozen and always in eval mode.

    Args:
        model_name: open_clip model name ("ViT-B-32", "ViT-L-14", ...) or the name given in
            ``model_config``.
        pretrained: an open_clip pretrained tag ("openai", "laion2b_s34b_b79k") or a local
            checkpoint: an open_clip state dict (``.pt``/``.bin``/``.safetensors``; for OpenAI
            weights saved this way name the model "ViT-B-32-quickgelu") or OpenAI's published
            TorchScript ``.pt`` (QuickGELU applied automatically); None keeps random weights.
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
        model = _create_model(model_name, pretrained)
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
