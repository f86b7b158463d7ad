"""Convert a published SpeechCLIP / SpeechCLIP+ Lightning checkpoint into this plugin's exp dir.

    exp/<name>/config.yaml               the training config of this task (the reference architecture)
    exp/<name>/valid.mean_r10.best.pth   the weights, in this task's keys (``official.map_state_dict``)
    exp/<name>/hubert.pt                 the checkpoint's HuBERT in s3prl's converted format
    exp/<name>/clip_vocab.txt            the reduced CLIP vocabulary, one token id per line, reference row order
    exp/<name>/clip.pt, clip_model.json  the checkpoint's frozen CLIP as an open_clip state dict and config

after which ``SpeechCLIP.from_pretrained``, ``speechclip_eval --model_dir``, stage 6 packing,
stage 8 probing and the s3prl upstream take it like a model trained here. No fairseq, Lightning
or OpenAI ``clip`` package is needed: HuBERT runs through s3prl's port (``reference_hubert``), CLIP
through open_clip. A reference checkpoint holds its whole frozen CLIP, the full token table included
(``clip.original_text_emb_weight``: the reference's ClipModel keeps it as a registered parameter),
so CLIP is taken from it unless ``--clip_pt`` names other weights. The output is written to ``<out_dir>.partial`` and renamed at the end, so a
failure leaves no half-written exp dir.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import shutil
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import yaml

from espnet_speechclip.official import map_state_dict, task_config
from espnet_speechclip.official_checkpoint import load_lightning_checkpoint

logger = logging.getLogger(__name__)

# Reference ``audio_encoder.name`` -> size, and the HubertConfig fields the weights do not show
# (fairseq's hubert_base_ls960 / hubert_large_ll60k configs).
HUBERT = {"hubert": "base", "hubert_base": "base", "hubert_large_ll60k": "large"}
HUBERT_FIXED = {"base": {"encoder_attention_heads": 12, "layer_norm_first": False, "extractor_mode": "default"},
                "large": {"encoder_attention_heads": 16, "layer_norm_first": True, "extractor_mode": "layer_norm"}}
# The waveform layer norm of the fairseq task (hubert_large_ll60k normalises, base does not).
HUBERT_TASK_NORMALIZE = {"base": False, "large": True}
CLIP_NAMES = {"ViT-B/32": "ViT-B-32", "ViT-L/14": "ViT-L-14", "ViT-B/16": "ViT-B-16"}
MODEL_FILE = "valid.mean_r10.best.pth"
# Model keys filled from the files the converter writes (hubert.pt), not copied from the checkpoint.
LOADED_FROM_FILES = ("upstream.model.",)
# Reference config sections that describe training, logging or data loading, not the model.
NOT_MODEL = ("trainer", "logger", "log_setting", "data")


def hubert_config(state: Dict[str, torch.Tensor], size: str) -> Dict:
    """HubertConfig fields of the checkpoint's HuBERT: widths and depth from the weights, the rest
    from the published model of that size."""
    prefix = "audio_encoder.encoder."
    layers = {int(k[len(prefix):].split(".")[2]) for k in state if k.startswith(prefix + "encoder.layers.")}
    if not layers:
        raise ValueError("the checkpoint holds no HuBERT weights (audio_encoder.encoder.encoder.layers.*); give "
                         "--hubert with s3prl's converted checkpoint of the model it was trained on")
    embed = state[prefix + "encoder.layers.0.fc1.weight"].shape[1]
    conf = {"encoder_layers": max(layers) + 1, "encoder_embed_dim": int(embed),
            "encoder_ffn_embed_dim": int(state[prefix + "encoder.layers.0.fc1.weight"].shape[0]),
            "final_dim": int(state[prefix + "final_proj.weight"].shape[0]) if prefix + "final_proj.weight" in state
            else 256, "conv_bias": prefix + "feature_extractor.conv_layers.0.0.bias" in state, **HUBERT_FIXED[size]}
    return conf


def write_hubert(state: Dict[str, torch.Tensor], size: str, path: Path) -> None:
    """The checkpoint's HuBERT weights as s3prl's converted checkpoint (what ``hubert_local`` reads)."""
    prefix = "audio_encoder.encoder."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    classes = int(weights["label_embs_concat"].shape[0]) if "label_embs_concat" in weights else 504
    torch.save({"task_cfg": {"label_rate": 50.0, "sample_rate": 16000, "normalize": HUBERT_TASK_NORMALIZE[size]},
                "model_cfg": {"label_rate": 50.0, **hubert_config(state, size)},
                # one dictionary of `classes` symbols, as s3prl's converter writes fairseq's (a list per label set)
                "model_weight": weights, "dictionaries_symbols": [[str(i) for i in range(classes)]]}, path)


def clip_from_checkpoint(state: Dict[str, torch.Tensor], directory: Path) -> Dict:
    """The checkpoint's OpenAI CLIP as an open_clip state dict + model config (inferred from the
    weights as open_clip's ``build_model_from_openai_state_dict`` does; QuickGELU as OpenAI trained)."""
    prefix = "clip.model."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if "visual.proj" not in weights:
        raise ValueError("the checkpoint's CLIP has no ViT image tower (visual.proj): give --clip_pt")
    weights["token_embedding.weight"] = state["clip.original_text_emb_weight"]
    patch = int(weights["visual.conv1.weight"].shape[-1])
    grid = round((weights["visual.positional_embedding"].shape[0] - 1) ** 0.5)

    def layers(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in weights if k.startswith(prefix)})

    text_width = int(weights["ln_final.weight"].shape[0])
    config = {"embed_dim": int(weights["text_projection"].shape[1]), "quick_gelu": True,
              "vision_cfg": {"image_size": patch * grid, "layers": layers("visual.transformer.resblocks."),
                             "width": int(weights["visual.conv1.weight"].shape[0]), "patch_size": patch},
              "text_cfg": {"context_length": int(weights["positional_embedding"].shape[0]),
                           "vocab_size": int(weights["token_embedding.weight"].shape[0]), "width": text_width,
                           "heads": text_width // 64, "layers": layers("transformer.resblocks.")}}
    torch.save({k: v.float() for k, v in weights.items()}, directory / "clip.pt")
    (directory / "clip_model.json").write_text(json.dumps(config, indent=1))
    return {"model_name": "speechclip-converted-clip", "pretrained": "clip.pt", "model_config": "clip_model.json"}


def vocabulary_ids(reduced: torch.Tensor, full: torch.Tensor, vocab_stats: Optional[str]) -> List[int]:
    """CLIP token id of each reduced row: found by exact match in the full CLIP table, else read
    from the reference repo's vocabulary statistics file (column 0, reference row order)."""
    lookup = {row.numpy().tobytes(): i for i, row in enumerate(full.float())}
    ids = [lookup.get(row.numpy().tobytes()) for row in reduced.float()]
    if all(i is not None for i in ids):
        return ids
    if vocab_stats is None:
        raise ValueError(f"{sum(i is None for i in ids)} of the checkpoint's {len(ids)} reduced CLIP token rows are "
                         f"not rows of the CLIP weights given: give those weights (--clip_pt) or --vocab_stats "
                         f"<reference repo>/avssl/data/flickr_stat/text_clip_vocab_usage_byfreq.npy (coco_stat for "
                         f"SpokenCOCO)")
    stats = np.load(vocab_stats) if vocab_stats.endswith(".npy") else np.loadtxt(vocab_stats)
    if stats.ndim != 2 or stats.shape[1] != 2 or len(stats) != len(ids):
        raise ValueError(f"{vocab_stats}: expected {len(ids)} rows of (token id, count), got shape {stats.shape}")
    return [int(i) for i in stats[:, 0]]


def convert(ckpt: str, out_dir: str, clip_pt: Optional[str] = None, clip_model_name: Optional[str] = None,
            clip_model_config: Optional[str] = None, hubert: Optional[str] = None,
            vocab_stats: Optional[str] = None) -> Path:
    from espnet_speechclip.clip_adapter import FrozenCLIP
    from espnet_speechclip.tasks.speechclip import SpeechCLIPTask

    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out}: exists; remove it or choose another --out_dir")
    state, config = load_lightning_checkpoint(ckpt)
    try:
        mapped = task_config(config)
    except ValueError as err:
        raise ValueError(f"{ckpt}: {err}") from None
    encoder = config.get("audio_encoder", {})
    if encoder.get("type") != "FairseqHubert" or encoder.get("name") not in HUBERT:
        raise ValueError(f"{ckpt}: audio_encoder {encoder.get('type')!r} / {encoder.get('name')!r}: only the "
                         f"published FairseqHubert encoders ({sorted(HUBERT)}) are known")
    size = HUBERT[encoder["name"]]
    clip_name = clip_model_name or CLIP_NAMES.get(config.get("clip", {}).get("name"))
    if clip_name is None:
        raise ValueError(f"{ckpt}: clip.name {config.get('clip', {}).get('name')!r} is not one of {sorted(CLIP_NAMES)}")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        if hubert is None:
            write_hubert(state, size, partial / "hubert.pt")
            hubert_path = "hubert.pt"
        else:
            hubert_path = str(Path(hubert).resolve())
        if clip_pt is None and "clip.original_text_emb_weight" in state:
            clip_conf = clip_from_checkpoint(state, partial)
        else:
            clip_conf = {"model_name": clip_name, "pretrained": str(Path(clip_pt).resolve()) if clip_pt else "openai"}
            if clip_model_config:
                clip_conf["model_config"] = str(Path(clip_model_config).resolve())
        normalize = HUBERT_TASK_NORMALIZE[size] or bool(config.get("data", {}).get("dataset", {}).get(
            "normalize_waveform", False))
        options = {k: v for k, v in mapped.items() if k != "variant"}
        options.update(upstream="reference_hubert", upstream_conf={
            "path_or_url": hubert_path, "normalize_waveform": normalize,
            "layer_norm": bool(encoder.get("normalize_hiddenstates", False)), "frozen": True},
            clip_conf=clip_conf, best_model_criterion=[["valid", "mean_r10", "max"]])
        if mapped["segmenter"] is not None:
            reduced = state["clip.model.token_embedding.weight"]
            if "clip.original_text_emb_weight" in state and clip_pt is None:
                full = state["clip.original_text_emb_weight"]
            else:
                full = FrozenCLIP(**resolve(clip_conf, partial)).token_table()
            ids = vocabulary_ids(reduced, full, vocab_stats)
            del full, reduced  # views into the memory-mapped checkpoint: it closes when the last goes
            (partial / "clip_vocab.txt").write_text("".join(f"{i}\n" for i in ids))
            options["clip_vocab"] = "clip_vocab.txt"
        args, _ = SpeechCLIPTask.get_parser().parse_known_args([])
        full_config = {**vars(args), **options, "official_checkpoint": {"file": str(Path(ckpt).name),
                                                                        "variant": mapped["variant"], "size": size}}
        (partial / "config.yaml").write_text(yaml.safe_dump(full_config, sort_keys=False))
        # The frozen HuBERT and CLIP reach the model through the files just written; the rest (the
        # branches, the layer weights, the temperature: megabytes) is copied out of the memory-mapped
        # checkpoint, which is then closed, so its pages and the model are never resident together.
        trained = {k: v.clone() for k, v in map_state_dict(state, mapped["variant"]).items()
                   if not k.startswith(LOADED_FROM_FILES)}
        del state
        gc.collect()
        model = build(full_config, partial)
        missing, unexpected = model.load_state_dict(trained, strict=False)
        frozen = LOADED_FROM_FILES + ("cascaded.clip.", "cascaded.bridge.table", "cascaded.bridge.token_ids",
                                      "cascaded.bridge.allowed", "cascaded.segmenter.scaling.num_batches",
                                      "shared_block.keyword_cls", "loss_fn.logit_scale")
        missing = [k for k in missing if not k.startswith(frozen)]
        if missing or unexpected:
            raise ValueError(f"{ckpt}: weights do not fit the {mapped['variant']} architecture: missing {missing[:8]}"
                             f"{'...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}")
        torch.save(model.state_dict(), partial / MODEL_FILE)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    logger.info("%s -> %s (%s, %s)", ckpt, out, mapped["variant"], size)
    return out


def resolve(clip_conf: Dict, directory: Path) -> Dict:
    """clip_conf with its files named relative to the exp dir made absolute."""
    out = dict(clip_conf)
    for key in ("pretrained", "model_config"):
        if out.get(key) and (directory / out[key]).is_file():
            out[key] = str(directory / out[key])
    return out


def build(config: Dict, directory: Path):
    """The model of a converted config, with its relative paths resolved against ``directory``."""
    from espnet_speechclip.tasks.speechclip import SpeechCLIPTask

    resolved = dict(config)
    resolved["upstream_conf"] = dict(config["upstream_conf"])
    if not Path(resolved["upstream_conf"]["path_or_url"]).is_absolute():
        resolved["upstream_conf"]["path_or_url"] = str(directory / resolved["upstream_conf"]["path_or_url"])
    resolved["clip_conf"] = resolve(config["clip_conf"], directory)
    if resolved.get("clip_vocab") and not Path(resolved["clip_vocab"]).is_absolute():
        resolved["clip_vocab"] = str(directory / resolved["clip_vocab"])
    return SpeechCLIPTask.build_model(argparse.Namespace(**resolved))
