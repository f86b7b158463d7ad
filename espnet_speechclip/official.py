"""The published SpeechCLIP / SpeechCLIP+ models in this plugin's terms: configuration and weights.

The reference code (atosystem/SpeechCLIP, ShampooWang/SpeechCLIP_plus) describes a model by a
YAML tree (``model_settings``, ``audio_encoder``, ``cl_loss``, ``clip``) and names its weights
after its own modules. ``task_config`` maps that tree onto this task's slots (the same parts the
paper configs under ``egs2/*/speechclip1/conf/tuning`` choose) and ``map_state_dict`` renames the
weights; both are used by the parity check (``tools/check_official_parity.py``) and by the
checkpoint converter, so the mapping exists once. A key or setting that cannot be mapped is an
error naming it, never dropped silently.
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping, Optional, Tuple

import torch

# Reference branch class (``cascaded_branch.type`` with "KW_" and "dynamic" normalised as the
# reference does) -> variant name used in this plugin.
VARIANTS = {"ParallelBranch": "Parallel", "CascadedBranch": "Cascaded", "CascadedBranch_plus": "Cascaded+",
            "HybridBranch": "Hybrid", "HybridBranch_plus": "Hybrid+"}


def variant_of(settings: Mapping) -> str:
    """``model_settings`` -> Parallel / Cascaded / Cascaded+ / Hybrid / Hybrid+ (as the reference
    ``KWClip_GeneralTransformer`` decides: the cascaded branch exists iff its weight is > 0)."""
    if settings.get("cascaded_objective_weight", 0.0) > 0:
        kind = settings["cascaded_branch"]["type"].replace("KW_", "").replace("dynamic", "plus")
        if kind not in VARIANTS:
            raise ValueError(f"model_settings.cascaded_branch.type {settings['cascaded_branch']['type']!r} is not a "
                             f"published SpeechCLIP / SpeechCLIP+ branch ({sorted(VARIANTS)})")
        return VARIANTS[kind]
    if settings.get("parallel_objective_weight", 0.0) > 0:
        return "Parallel"
    raise ValueError("model_settings: both objective weights are 0, no branch")


def _block_conf(transformer_args: Mapping, context: str) -> Tuple[str, Dict]:
    kind = transformer_args.get("type")
    if kind == "MultiheadAttentionAndNorm":
        return "attention_norm", {"attention_heads": transformer_args["nhead"],
                                  "dropout_rate": transformer_args.get("dropout", 0.1),
                                  "layer_norm_eps": transformer_args.get("layer_norm_eps", 1e-5)}
    if kind == "TransformerEncoder":
        return "transformer", {"num_layers": transformer_args.get("n_layers", 1), "attention_heads": transformer_args["nhead"],
                               "linear_units": transformer_args["dim_feedforward"],
                               "dropout_rate": transformer_args.get("dropout", 0.1), "final_norm": True,
                               "layer_norm_eps": transformer_args.get("layer_norm_eps", 1e-5)}
    raise ValueError(f"{context}.transformer_args.type {kind!r}: not a block of the published models "
                     f"(MultiheadAttentionAndNorm, TransformerEncoder)")


def _projection(conf) -> Dict:
    if conf is None:
        return {"projection": "linear"}
    return {"projection": "mlp", "projection_conf": {"units": list(conf["dimensions"]),
                                                     "dropout_rate": conf.get("dropout", 0.1)}}


def _cascaded_transformer_args(cascaded: Mapping) -> Mapping:
    args = dict(cascaded["transformer_args"])
    if "type" not in args and "transformer_type" in cascaded:  # SpeechCLIP configs name the type beside
        args["type"] = cascaded["transformer_type"]
    return args


def _scaling_steps(cif: Mapping) -> Optional[int]:
    """0: never scale (apply_scaling false); N: the first N steps (scaling_step); None: always."""
    if not cif.get("apply_scaling", True):
        return 0
    step = cif.get("scaling_step", -1)
    return step if step >= 0 else None


def _cif_conf(cif: Mapping) -> Dict:
    if cif.get("cif_output_dim", cif.get("encoder_embed_dim")) != cif.get("encoder_embed_dim"):
        raise ValueError("downsampling.cif.cif_output_dim != encoder_embed_dim (an output projection) is not "
                         "used by any published model")
    return {"weight_predictor": "reference", "weight_kernel_size": cif.get("conv_cif_width", 3),
            "weight_layers": cif.get("num_layer", 1),
            "target": "frames_per_segment", "frames_per_segment": 20, "max_segments": 75,
            "scaling_steps": _scaling_steps(cif),
            "scaling_sum_eps": 1e-5, "threshold": cif.get("cif_threshold", 1.0),
            "tail_threshold": cif.get("tail_handling_firing_threshold", 0.5), "min_segments": 1,
            "tail_in_training": False}


def task_config(config: Mapping) -> Dict:
    """Reference config tree -> this task's model options: shared_block, parallel, segmenter (each
    with its _conf), vq_conf and model_conf. The upstream and CLIP are mapped by the converter.
    Every setting is checked first (``check_settings``)."""
    check_settings(config)
    settings = config["model_settings"]
    variant = variant_of(settings)
    out: Dict = {"variant": variant, "shared_block": None, "shared_block_conf": {}, "parallel": None,
                 "parallel_conf": {}, "segmenter": None, "segmenter_conf": {}}
    if variant == "Parallel":
        args = settings["parallel_branch"]["transformer_args"]
        out["parallel"] = "parallel"
        out["parallel_conf"] = {"num_layers": args.get("n_layers", 1), "attention_heads": args["nhead"],
                                "linear_units": args["dim_feedforward"], "dropout_rate": args.get("dropout", 0.1)}
    else:
        cascaded = settings["cascaded_branch"]
        block, block_conf = _block_conf(_cascaded_transformer_args(cascaded), "cascaded_branch")
        keyword = cascaded.get("keyword", {})
        projection = _projection(keyword.get("kw_projection"))
        num_keywords = keyword.get("number", 8)
        if variant == "Cascaded":
            out["segmenter"] = "cls"
            out["segmenter_conf"] = {"num_keywords": num_keywords, "block": block, "token_std": 1.0, **block_conf,
                                     **projection}
        elif variant == "Cascaded+":
            out["segmenter"] = "cif"
            out["segmenter_conf"] = {"block": block, **block_conf, **projection,
                                     **_cif_conf(cascaded["downsampling"]["cif"])}
        else:
            out["shared_block"] = "cls_attention"
            out["shared_block_conf"] = {"num_parallel_tokens": 1, "block": block, "block_conf": block_conf,
                                        "num_keyword_tokens": num_keywords if variant == "Hybrid" else 0}
            out["parallel"] = "shared_cls"
            parallel_projection = settings["parallel_branch"].get("projection_config") if variant == "Hybrid" else None
            out["parallel_conf"] = _projection(parallel_projection)
            if variant == "Hybrid":
                out["segmenter"] = "shared_cls"
                out["segmenter_conf"] = {"num_keywords": num_keywords, **projection}
            else:
                out["segmenter"] = "cif"
                out["segmenter_conf"] = {"block": "none", **projection, **_cif_conf(cascaded["downsampling"]["cif"])}
        out["vq_conf"] = {"temperature": _vq_temperature(cascaded["vq"]["args"]["temp"]),
                          "keyword_norm": _keyword_norm(variant, keyword.get("batchnorms"))}
    loss = config["cl_loss"]["args"]
    out["model_conf"] = {"temperature": loss.get("temperature", 0.07),
                         "learnable_temperature": bool(loss.get("temperature_trainable", False)),
                         "parallel_weight": settings.get("parallel_objective_weight", 0.0) or 1.0,
                         "cascaded_weight": settings.get("cascaded_objective_weight", 0.0) or 1.0,
                         "retrieval_branch": config.get("retrieval", {}).get("audio_feat_src", "parallel"),
                         "max_logit_scale": None}  # MaskedContrastiveLoss caps nothing
    if variant.endswith("+"):
        out["model_conf"]["quantity_weight"] = settings["cascaded_branch"]["downsampling"]["cif"].get(
            "quantity_loss_weight", 1.0)
    return out


def _vq_temperature(temp) -> float:
    match = re.fullmatch(r"fixed=([0-9.eE+-]+)", str(temp))
    if not match:
        raise ValueError(f"vq.args.temp {temp!r}: only a fixed temperature (fixed=0.1) is published")
    return float(match.group(1))


def _keyword_norm(variant: str, batchnorms) -> str:
    if batchnorms is None:
        raise ValueError("keyword.batchnorms is absent: every published cascaded model has one")
    if variant.endswith("+"):  # Kw_BatchNorm_dynamic whatever the type says
        return "padded"
    if batchnorms.get("type") == "eachKw" and batchnorms.get("parallel", False):
        return "per_keyword"
    raise ValueError(f"keyword.batchnorms {dict(batchnorms)}: only eachKw with parallel: true is published")


# Reference branch keys -> this plugin's, per variant. Applied in order; the first match wins.
_RULES: Dict[str, List[Tuple[str, str]]] = {
    "Parallel": [(r"^parallel_branch\.cls$", "parallel.cls"),
                 (r"^parallel_branch\.self_att\.model\.layers\.", "parallel.block.encoder.layers."),
                 (r"^parallel_branch\.self_att\.model\.norm\.", "parallel.norm."),
                 (r"^parallel_branch\.linear_proj\.", "parallel.proj.")],
    "Cascaded": [(r"^cascaded_branch\.cls$", "cascaded.segmenter.cls"),
                 (r"^cascaded_branch\.self_att\.multihead_attn_layer\.", "cascaded.segmenter.block.attention."),
                 (r"^cascaded_branch\.self_att\.attentionBlock_Norm\.", "cascaded.segmenter.block.norm."),
                 (r"^cascaded_branch\.linear_proj\.", "cascaded.segmenter.proj."),
                 (r"^cascaded_branch\.bn_layer\.bn_layer\.", "cascaded.bridge.batchnorm.")],
    "Cascaded+": [(r"^cascaded_branch\.self_att\.multihead_attn_layer\.", "cascaded.segmenter.block.attention."),
                  (r"^cascaded_branch\.self_att\.attentionBlock_Norm\.", "cascaded.segmenter.block.norm."),
                  (r"^cascaded_branch\.linear_proj\.", "cascaded.segmenter.proj."),
                  (r"^cascaded_branch\.downsampling\.conv\.", "cascaded.segmenter.weight_predictor.conv."),
                  (r"^cascaded_branch\.downsampling\.weight_proj\.1\.", "cascaded.segmenter.weight_predictor.proj."),
                  (r"^cascaded_branch\.bn_layer\.bn_layer\.", "cascaded.bridge.batchnorm.")],
    "Hybrid": [(r"^cascaded_branch\.self_att\.model\.layers\.", "shared_block.block.encoder.layers."),
               (r"^cascaded_branch\.self_att\.model\.norm\.", "shared_block.block.final_norm."),
               (r"^cascaded_branch\.parallel_cls$", "shared_block.parallel_cls"),
               (r"^cascaded_branch\.cascaded_cls$", "shared_block.keyword_cls"),
               (r"^cascaded_branch\.self_att\.multihead_attn_layer\.", "shared_block.block.attention."),
               (r"^cascaded_branch\.self_att\.attentionBlock_Norm\.", "shared_block.block.norm."),
               (r"^cascaded_branch\.parallel_proj\.", "parallel.proj."),
               (r"^cascaded_branch\.linear_proj\.", "cascaded.segmenter.proj."),
               (r"^cascaded_branch\.bn_layer\.bn_layer\.", "cascaded.bridge.batchnorm.")],
    "Hybrid+": [(r"^cascaded_branch\.cls$", "shared_block.parallel_cls"),
                (r"^cascaded_branch\.self_att\.multihead_attn_layer\.", "shared_block.block.attention."),
                (r"^cascaded_branch\.self_att\.attentionBlock_Norm\.", "shared_block.block.norm."),
                (r"^cascaded_branch\.parallel_proj\.", "parallel.proj."),
                (r"^cascaded_branch\.linear_proj\.", "cascaded.segmenter.proj."),
                (r"^cascaded_branch\.downsampling\.conv\.", "cascaded.segmenter.weight_predictor.conv."),
                (r"^cascaded_branch\.downsampling\.weight_proj\.1\.", "cascaded.segmenter.weight_predictor.proj."),
                (r"^cascaded_branch\.bn_layer\.bn_layer\.", "cascaded.bridge.batchnorm.")],
}
_COMMON = [(r"^audio_encoder\.weightedsum_layer\.weights$", "upstream.weights"),
           (r"^audio_encoder\.encoder\.", "upstream.model."),
           (r"^criterion\.temperature$", "loss_fn.logit_scale")]
# Keys that carry nothing this plugin needs: the frozen CLIP (loaded from its own file), the
# fixed VQ temperature (a config value) and the loss's constant masks.
_IGNORED = [r"^clip\.", r"^cascaded_branch\.clip\.", r"\.vector_quantizer\.curr_temp$", r"^criterion\.(neg_)?eye_mat"]


def map_state_dict(state: Mapping[str, torch.Tensor], variant: str) -> Dict[str, torch.Tensor]:
    """Reference (LightningModule) state dict -> this plugin's ``ESPnetSpeechCLIPModel`` keys.
    Raises KeyError naming every reference key that has no rule."""
    rules = _RULES[variant] + _COMMON
    out, unknown = {}, []
    for key, value in state.items():
        if any(re.search(pattern, key) for pattern in _IGNORED):
            continue
        for pattern, target in rules:
            if re.search(pattern, key):
                out[re.sub(pattern, target, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"{variant}: reference weights with no counterpart here: {unknown}")
    return out


# Every setting the published configs hold, and what conversion does with it:
#   READ      mapped by task_config / the converter;
#   TRAINING  only how the reference trained, logged or loaded data (no effect on the model);
#   value     a setting whose published value is the only one this plugin reproduces: any other
#             value is an error naming it.
READ, TRAINING = "read", "training"
_SETTINGS = {
    "audio_encoder.name": READ, "audio_encoder.type": READ, "audio_encoder.normalize_hiddenstates": READ,
    "audio_encoder.downsampling_rate": 320, "audio_encoder.feat_select_idx": "weighted_sum",
    "audio_encoder.layer_drop": 0.0, "audio_encoder.pretrained": True, "audio_encoder.trainable": False,
    "audio_encoder.max_audio_len": TRAINING, "audio_encoder.optim.*": TRAINING, "audio_encoder.scheduler.*": TRAINING,
    "cl_loss.type": "MaskedContrastiveLoss", "cl_loss.args.temperature": READ,
    "cl_loss.args.temperature_trainable": READ, "cl_loss.args.a2b": True, "cl_loss.args.b2a": True,
    "cl_loss.args.dcl": False, "cl_loss.args.margin": 0.0,
    "clip.name": READ, "clip.image_encoder_trainable": False, "clip.text_encoder_trainable": False,
    "clip.reduce_subword_embbedding": TRAINING,  # the rows themselves are in the state dict
    # the run's command-line arguments, which run_task.py merges into the pickled config
    **{key: TRAINING for key in ("config", "save_path", "train", "eval", "test", "ckpt", "resume", "njobs", "gpus",
                                 "seed", "dataset_root", "log_level")},
    "data.dataset.normalize_waveform": READ, "data.*": TRAINING, "trainer.*": TRAINING, "logger.*": TRAINING,
    "log_setting.*": TRAINING, "retrieval.audio_feat_src": READ, "retrieval.recall_at": TRAINING,
    "model_settings.cascaded_objective_weight": READ, "model_settings.parallel_objective_weight": READ,
    "model_settings.keyword_objective_weight": 0.0, "model_settings.matching_objective_weight": 0.0,
    "model_settings.parallel_branch.transformer_type": READ, "model_settings.parallel_branch.need_projection": True,
    "model_settings.parallel_branch.projection_config.*": READ,
    "model_settings.parallel_branch.transformer_args.activation": "gelu",
    "model_settings.parallel_branch.transformer_args.batch_first": True,
    "model_settings.parallel_branch.transformer_args.norm_first": False,
    "model_settings.parallel_branch.transformer_args.*": READ,
    "model_settings.cascaded_branch.type": READ, "model_settings.cascaded_branch.transformer_type": READ,
    "model_settings.cascaded_branch.transformer_args.activation": "gelu",
    "model_settings.cascaded_branch.transformer_args.batch_first": True,
    "model_settings.cascaded_branch.transformer_args.norm_first": False,
    "model_settings.cascaded_branch.transformer_args.attn_diversity_weight": 0.0,
    "model_settings.cascaded_branch.transformer_args.*": READ,
    "model_settings.cascaded_branch.vq.type": "SimpleVectorQuantizer", "model_settings.cascaded_branch.vq.args.temp": READ,
    "model_settings.cascaded_branch.vq.args.hard": True, "model_settings.cascaded_branch.vq.args.time_first": True,
    "model_settings.cascaded_branch.vq.args.use_gumbel": False, "model_settings.cascaded_branch.vq.activation": TRAINING,
    "model_settings.cascaded_branch.vq.bn_before_vq": True,
    "model_settings.cascaded_branch.keyword.number": READ, "model_settings.cascaded_branch.keyword.kw_projection.*": READ,
    "model_settings.cascaded_branch.keyword.batchnorms.type": READ,
    "model_settings.cascaded_branch.keyword.batchnorms.parallel": READ,
    "model_settings.cascaded_branch.keyword.batchnorms.std_scale": 1.0,
    "model_settings.cascaded_branch.keyword.batchnorms.learnable": True,
    "model_settings.cascaded_branch.keyword.detokenized_K_neighbors": TRAINING,
    "model_settings.cascaded_branch.keyword.retrieve_method": "cosine",
    "model_settings.cascaded_branch.keyword.diversity_type": TRAINING,
    "model_settings.cascaded_branch.keyword.diversity_weight": 0.0,
    "model_settings.cascaded_branch.keyword.attention_constraints.*": 0.0,
    "model_settings.cascaded_branch.downsampling.type": "cif",
    "model_settings.cascaded_branch.downsampling.cif.produce_weight_type": "conv",
    "model_settings.cascaded_branch.downsampling.cif.using_gt_len": False,
    "model_settings.cascaded_branch.downsampling.cif.add_cif_ctxt_layers": False,
    "model_settings.cascaded_branch.downsampling.cif.apply_tail_handling": True,
    # read by nothing in the reference CIF (its **config swallows them; num_layer is what counts)
    "model_settings.cascaded_branch.downsampling.cif.conv_cif_layer_num": TRAINING,
    "model_settings.cascaded_branch.downsampling.cif.conv_cif_dropout": TRAINING,
    "model_settings.cascaded_branch.downsampling.cif.cif_embedding_dim": TRAINING,
    "model_settings.cascaded_branch.downsampling.cif.conv_cif_output_channels_num": TRAINING,
    "model_settings.cascaded_branch.downsampling.cif.dense_cif_units_num": TRAINING,
    "model_settings.cascaded_branch.downsampling.cif.*": READ,
}


def _leaves(tree, path=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, path + (str(key),))
    else:
        yield ".".join(path), tree


def check_settings(config: Mapping) -> None:
    """Every setting of a reference config is known, and every one this plugin cannot reproduce
    has its published value; otherwise ValueError naming the setting (and its value)."""
    problems = []
    for key, value in _leaves(config):
        rule = _SETTINGS.get(key)
        if rule is None:  # the most specific wildcard
            parts = key.split(".")
            for cut in range(len(parts) - 1, 0, -1):
                rule = _SETTINGS.get(".".join(parts[:cut]) + ".*")
                if rule is not None:
                    break
        if rule is None:
            problems.append(f"{key} (unknown setting)")
        elif rule not in (READ, TRAINING) and value != rule:
            problems.append(f"{key} = {value!r} (only {rule!r} is reproduced)")
    if problems:
        raise ValueError("reference config settings that cannot be mapped: " + "; ".join(problems))
