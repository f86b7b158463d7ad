"""Stand-ins for the 15 published SpeechCLIP / SpeechCLIP+ Lightning checkpoints (not downloadable in CI).

``PUBLISHED`` lists them as the download scripts name them; ``reference_config`` gives the YAML tree
each was trained from; ``write_reference_checkpoint`` writes a file laid out as PyTorch-Lightning
1.5.10 saves the reference ``KWClip_GeneralTransformer`` (real widths and key names, reduced depth,
random weights); ``write_clip_checkpoint`` writes the matching full CLIP for open_clip.

What the file holds, and why (reference = atosystem/SpeechCLIP and ShampooWang/SpeechCLIP_plus,
both pinning pytorch_lightning==1.5.10):
- ``hyper_parameters`` is a plain dict ``{"config": OrderedNamespace}``: Lightning 1.5.10's
  ``dump_checkpoint`` stores ``dict(model.hparams)``, and ``save_hyperparameters()`` (avssl/model/
  base_model.py) keeps the live config object, so what avssl/task/base_task.py changes after
  building the model is in it: the command-line arguments first (``OrderedNamespace([args, yaml])``),
  ``data.dataset.modalities``, ``trainer.default_root_dir = save_path``, and ``trainer.logger``,
  which avssl/util/log.py replaces by the ``WandbLogger`` object when the YAML says ``wandb``.
- ``clip.original_text_emb_weight`` is the full 49408-row CLIP token table: avssl/module/
  clip_official.py assigns the token Parameter to a module attribute, which registers it.
- the cascaded branch holds the same ClipModel: every ``clip.*`` tensor is also ``cascaded_branch.clip.*``.
- ``criterion`` buffers are MAX_EYE square: 256 in avssl/module/losses.py, but 1024 from 2022-06-23
  to 2022-07-10 (atosystem/SpeechCLIP history), when the SpeechCLIP large models were trained; their
  ``criterion.eye_mat`` does not load into 256 (atosystem/SpeechCLIP issue #7).
Weights are views into one shared random pool (``compact=True``), so real widths take a few MB;
``compact=False`` gives each tensor its own storage (same values).
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import re
import sys
import types
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence
from urllib.parse import quote

import numpy as np
import torch

# ----------------------------------------------------------------------------- the published models
_NAME = re.compile(r"epoch[_=](\d+)-step[_=](\d+)-(val_recall_mean_\d+)[_=]([0-9.]+)\.ckpt")


@dataclass(frozen=True)
class Published:
    paper: str  # SpeechCLIP | SpeechCLIP+
    variant: str  # Parallel | Cascaded | Cascaded+ | Hybrid | Hybrid+
    hub_file: str  # path in the hub repo as download_ckpts.sh names it (URL-decoded): <size>/<corpus>/...

    size = property(lambda self: self.hub_file.split("/")[0])  # base | large
    corpus = property(lambda self: self.hub_file.split("/")[1])  # flickr | coco
    epoch = property(lambda self: int(_NAME.fullmatch(self.file_name).group(1)))
    step = property(lambda self: int(_NAME.fullmatch(self.file_name).group(2)))
    dev_metric = property(lambda self: _NAME.fullmatch(self.file_name).group(3))  # what ModelCheckpoint monitored
    dev_figure = property(lambda self: float(_NAME.fullmatch(self.file_name).group(4)))
    file_name = property(lambda self: self.hub_file.rsplit("/", 1)[1])

    @property
    def hub_repo(self) -> str:
        return "speechclip/models" if self.paper == "SpeechCLIP" else "ShampooWang/speechclip_plus"

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.hub_repo}/resolve/main/{quote(self.hub_file)}"

    @property
    def config(self) -> str:
        """The reference config file (path in the reference repository)."""
        where = f"model_{self.size}/" + (f"{self.corpus}/" if self.size == "large" else "")
        if self.paper == "SpeechCLIP":
            return f"config/speechCLIP/{where}spchclp_{self.variant[0].lower()}.yaml"
        return f"config/speechCLIP+/{where}spchclip_{self.variant[0].lower()}{'+' * self.variant.endswith('+')}.yaml"


# atosystem/SpeechCLIP download_ckpts.sh (hub repo speechclip/models) and ShampooWang/SpeechCLIP_plus
# download_ckpts.sh (hub repo ShampooWang/speechclip_plus, where the names are URL-encoded).
PUBLISHED: List[Published] = [Published(paper, *row.split()) for paper, rows in [("SpeechCLIP", """
Cascaded base/flickr/cascaded/epoch_58-step_6902-val_recall_mean_1_7.7700.ckpt
Parallel base/flickr/parallel/epoch_131-step_15443-val_recall_mean_1_36.0100.ckpt
Cascaded large/flickr/cascaded/epoch_187-step_21995-val_recall_mean_10_62.7700.ckpt
Parallel large/flickr/parallel/epoch_56-step_6668-val_recall_mean_10_89.0000.ckpt
Cascaded large/coco/cascaded/epoch_12-step_28794-val_recall_mean_10_36.1455.ckpt
Parallel large/coco/parallel/epoch_14-step_33224-val_recall_mean_10_84.0128.ckpt"""), ("SpeechCLIP+", """
Cascaded+ base/flickr/cascaded+/epoch=326-step=38258-val_recall_mean_10=42.1100.ckpt
Hybrid base/flickr/hybrid/epoch=134-step=15794-val_recall_mean_10=80.0100.ckpt
Hybrid+ base/flickr/hybrid+/epoch=80-step=9476-val_recall_mean_10=81.0300.ckpt
Cascaded+ large/flickr/cascaded+/epoch=112-step=26441-val_recall_mean_10=60.0500.ckpt
Hybrid large/flickr/hybrid/epoch=85-step=10061-val_recall_mean_10=90.1000.ckpt
Hybrid+ large/flickr/hybrid+/epoch=50-step=5966-val_recall_mean_10=89.3500.ckpt
Cascaded+ large/coco/cascaded+/epoch=10-step=48740-val_recall_mean_10=31.2973.ckpt
Hybrid large/coco/hybrid/epoch=12-step=28794-val_recall_mean_10=79.2988.ckpt
Hybrid+ large/coco/hybrid+/epoch=21-step=48729-val_recall_mean_10=83.5408.ckpt""")] for row in rows.split("\n")[1:]]

# Rows of the reduced CLIP vocabularies: avssl/data/{flickr,coco}_stat/text_clip_vocab_usage_byfreq.npy
# (shapes (8112, 2) and (19787, 2); their first rows are ids 0, 320, 49406, 49407).
REDUCED_VOCAB_ROWS = {"flickr": 8112, "coco": 19787}

# ----------------------------------------------------------------------------- the config trees
_DROP = object()  # a patch value that removes the key


def _targs(d_model: int, nhead: int, ffn: int, **first) -> Dict:
    return {**first, "n_layers": 1, "d_model": d_model, "nhead": nhead, "dim_feedforward": ffn, "dropout": 0.1,
            "activation": "gelu", "layer_norm_eps": 1.0e-5, "batch_first": True, "norm_first": False}


_OPTIM = {"optim": {"name": "Adam", "args": {"lr": 1.0e-4, "weight_decay": 1.0e-6}},
          "scheduler": {"name": "linear_warmup_decay", "warmup": 5000, "max_step": 50000, "final_lr": 1.0e-8}}
_LOSS = {"type": "MaskedContrastiveLoss", "args": {"temperature": 0.07, "temperature_trainable": False,
                                                   "margin": 0.0, "dcl": False, "a2b": True, "b2a": True}}
_CLIP = {"name": "ViT-B/32", "image_encoder_trainable": False, "text_encoder_trainable": False,
         "reduce_subword_embbedding": "./avssl/data/flickr_stat/text_clip_vocab_usage_byfreq.npy"}
_COCO_VOCAB = "./avssl/data/coco_stat/text_clip_vocab_usage_byfreq.npy"
_BATCHNORMS = {"type": "eachKw", "std_scale": 1.0, "learnable": True, "parallel": True}
_VQ = {"activation": "gelu", "type": "SimpleVectorQuantizer",
       "args": {"temp": "fixed=0.1", "time_first": True, "use_gumbel": False, "hard": True}}
_TRAINER = {"max_steps": 50000, "gradient_clip_val": 4, "accumulate_grad_batches": 1, "check_val_every_n_epoch": 1,
            "precision": 16, "logger": "wandb", "log_every_n_steps": 8}
_DATASET = {"name": "flickr", "dataset_root": "data/flickr", "text_file": "Flickr8k.token.txt",
            "clip_image_transform": "ViT-B/32", "load_image": True, "load_audio": True, "tokenizeText": True}
_AUDIO = {"type": "FairseqHubert", "name": "hubert", "pretrained": True, "trainable": False,
          "feat_select_idx": "weighted_sum", "layer_drop": 0.0, "max_audio_len": 102400}

# atosystem/SpeechCLIP config/speechCLIP/model_base/spchclp_c.yaml
_SPEECHCLIP = {
    "data": {"dataset": _DATASET, "batch_size": 256, "dev_batch_size": 8, "split_ratio": 0.9},
    "model_settings": {
        "cascaded_objective_weight": 1.0, "parallel_objective_weight": 0.0,
        "parallel_branch": {"transformer_type": "TransformerEncoder", "transformer_args": _targs(768, 8, 3072),
                            "need_projection": True},
        "cascaded_branch": {
            "type": "KW_CascadedBranch", "transformer_type": "MultiheadAttentionAndNorm",
            "transformer_args": _targs(768, 1, 3072),
            "keyword": {"number": 8, "detokenized_K_neighbors": 5, "retrieve_method": "cosine",
                        "batchnorms": _BATCHNORMS,
                        "attention_constraints": {"diversity_per_kw_loss_weight": 0.0,
                                                  "diversity_per_frame_loss_weight": 0.0,
                                                  "smoothness_per_frame_loss_weight": 0.0}},
            "vq": {"bn_before_vq": True, **_VQ}}},
    "cl_loss": _LOSS, "retrieval": {"audio_feat_src": "cascaded", "recall_at": [1, 5, 10]}, "clip": _CLIP,
    "audio_encoder": {**_AUDIO, "normalize_hiddenstates": False, **_OPTIM},
    "trainer": {**_TRAINER, "default_root_dir": "exp/sphclip_base_c_flickr", "num_sanity_val_steps": 0,
                "strategy": "dp"},
    "log_setting": {"log_detokenize_results": True, "log_detokenize_results_every_n_epoch": 5,
                    "log_draw_pca_every_n_epoch": 10},
    "logger": {"project": "sphclip"},
}
# ShampooWang/SpeechCLIP_plus config/speechCLIP+/model_base/spchclip_c+.yaml
_SPEECHCLIP_PLUS = {
    "data": {"dataset": {**_DATASET, "dataset_root": "/mnt/md1/user_jeffwang/Dataset/flickr",
                         "normalize_waveform": True},
             "batch_size": 256, "dev_batch_size": 6, "split_ratio": 0.9},
    "model_settings": {
        "cascaded_objective_weight": 1.0, "parallel_objective_weight": 0.0, "keyword_objective_weight": 0.0,
        "matching_objective_weight": 0.0,
        "parallel_branch": {"transformer_args": _targs(768, 8, 3072, type="TransformerEncoder")},
        "cascaded_branch": {
            "type": "CascadedBranch_dynamic", "vq": _VQ,
            "downsampling": {"type": "cif", "cif": {
                "quantity_loss_weight": 0.25, "using_gt_len": False, "cif_output_dim": 768, "encoder_embed_dim": 768,
                "produce_weight_type": "conv", "cif_threshold": 1.0, "conv_cif_layer_num": 1, "conv_cif_width": 3,
                "conv_cif_dropout": 0.1, "apply_scaling": True, "scaling_step": 5000, "apply_tail_handling": True,
                "tail_handling_firing_threshold": 0.5, "add_cif_ctxt_layers": False}},
            "keyword": {"detokenized_K_neighbors": 5, "retrieve_method": "cosine", "batchnorms": _BATCHNORMS},
            "transformer_args": _targs(768, 1, 3072, type="MultiheadAttentionAndNorm")}},
    "cl_loss": {**_LOSS, "args": {**_LOSS["args"], "temperature_trainable": True}},
    "retrieval": {"audio_feat_src": "cascaded", "recall_at": [1, 5, 10]}, "clip": _CLIP,
    "audio_encoder": {**_AUDIO, "name": "hubert_base", "downsampling_rate": 320, **_OPTIM},
    "trainer": {**_TRAINER, "num_sanity_val_steps": 0, "accelerator": "gpu", "strategy": "dp"},
    "log_setting": {"log_detokenize_results": False, "log_detokenize_results_every_n_epoch": 10,
                    "log_draw_pca_every_n_epoch": 10},
    "logger": {"project": "kw-general"},
}

# Each config file is its paper's tree above plus these patches, in order (its differences from that file).
_WIDE = {"d_model": 1024, "dim_feedforward": 4096}
_KW_PROJ = {"kw_projection": {"dropout": 0.1, "dimensions": [1024, 1024, 768]}}
_SC_LARGE = {"data": {"dataset": {"clip_image_transform": "ViT-L/14"}}, "clip": {"name": "ViT-L/14"},
             "model_settings": {"parallel_branch": {"transformer_args": _WIDE},
                                "cascaded_branch": {"transformer_args": _WIDE}},
             "cl_loss": {"args": {"temperature_trainable": True}},
             "audio_encoder": {"name": "hubert_large_ll60k", "normalize_hiddenstates": True}}
_SC_COCO = {"data": {"dataset": {"name": "coco", "dataset_root": "data/coco", "text_file": _DROP,
                                 "split_prefix": "SpokenCOCO_ksplit"}},
            "clip": {"reduce_subword_embbedding": _COCO_VOCAB}}
_SC_PARALLEL = {"model_settings": {"cascaded_objective_weight": 0.0, "parallel_objective_weight": 1.0},
                "retrieval": {"audio_feat_src": "parallel"}}
_PLUS_LARGE = {"data": {"dataset": {"clip_image_transform": "ViT-L/14", "normalize_waveform": False},
                        "batch_size": 128},
               "model_settings": {"parallel_branch": {"transformer_args": _WIDE}, "cascaded_branch": {
                   "downsampling": {"cif": {"cif_output_dim": 1024, "encoder_embed_dim": 1024,
                                            "conv_cif_output_channels_num": 1024, "dense_cif_units_num": 1024}},
                   "keyword": _KW_PROJ, "transformer_args": {**_WIDE, "nhead": 8}}},
               "clip": {"name": "ViT-L/14"}, "audio_encoder": {"name": "hubert_large_ll60k"}}
_PLUS_COCO = {"data": {"dataset": {"name": "coco", "dataset_root": "/mnt/md1/user_jeffwang/Dataset/coco",
                                   "text_file": _DROP, "split_prefix": "SpokenCOCO_ksplit"}},
              "clip": {"reduce_subword_embbedding": _COCO_VOCAB}}
_HYBRID = {"model_settings": {"parallel_objective_weight": 1.0, "cascaded_branch": {
               "type": "HybridBranch", "downsampling": {"cif": {
                   "quantity_loss_weight": 0.025, "cif_output_dim": _DROP, "scaling_step": _DROP,
                   "cif_embedding_dim": 768, "conv_cif_output_channels_num": 768, "dense_cif_units_num": 768}}}},
           "log_setting": {"log_detokenize_results": True}}
_HYBRID_LARGE = {"data": {"dataset": {"clip_image_transform": "ViT-L/14", "normalize_waveform": _DROP}},
                 "model_settings": {"parallel_branch": {"transformer_args": _WIDE},
                                    "cascaded_branch": {"keyword": _KW_PROJ, "transformer_args": _WIDE}},
                 "clip": {"name": "ViT-L/14"}, "trainer": {"accumulate_grad_batches": 4},
                 "audio_encoder": {"name": "hubert_large_ll60k", "normalize_hiddenstates": True}}
_HYBRID_PLUS = {"model_settings": {"parallel_objective_weight": 1.0,
                                   "cascaded_branch": {"type": "HybridBranch_dynamic"}}}
_PATCHES = {
    "speechCLIP/model_base/spchclp_c": [],
    "speechCLIP/model_base/spchclp_p": [_SC_PARALLEL, {"trainer": {"default_root_dir": "exp/sphclip_base_p_flickr"}}],
    "speechCLIP/model_large/flickr/spchclp_c": [_SC_LARGE,
                                                {"trainer": {"default_root_dir": "exp/sphclip_large_c_flickr"}}],
    "speechCLIP/model_large/flickr/spchclp_p": [_SC_LARGE, _SC_PARALLEL,
                                                {"trainer": {"default_root_dir": "exp/sphclip_large_p_flickr"}}],
    "speechCLIP/model_large/coco/spchclp_c": [_SC_LARGE, _SC_COCO,
                                              {"trainer": {"default_root_dir": "exp/sphclip_large_c_coco"}}],
    "speechCLIP/model_large/coco/spchclp_p": [_SC_LARGE, _SC_COCO, _SC_PARALLEL,
                                              {"trainer": {"default_root_dir": "exp/sphclip_large_p_coco"}}],
    "speechCLIP+/model_base/spchclip_c+": [],
    "speechCLIP+/model_base/spchclip_h": [_HYBRID],
    "speechCLIP+/model_base/spchclip_h+": [_HYBRID_PLUS, {
        "retrieval": {"audio_feat_src": "parallel"},
        "model_settings": {"cascaded_branch": {"transformer_args": {"nhead": 8}}}}],
    "speechCLIP+/model_large/flickr/spchclip_c+": [_PLUS_LARGE],
    "speechCLIP+/model_large/flickr/spchclip_h": [_HYBRID, _HYBRID_LARGE, {
        "model_settings": {"parallel_branch": {"need_projection": True, "projection_config": _KW_PROJ["kw_projection"]},
                           "cascaded_branch": {"keyword": {"diversity_type": ["cos"], "diversity_weight": 0.0},
                                               "transformer_args": {"attn_diversity_weight": 0.0}}},
        "trainer": {"logger": True, "fast_dev_run": 2}}],
    "speechCLIP+/model_large/flickr/spchclip_h+": [_PLUS_LARGE, _HYBRID_PLUS, {
        "model_settings": {"cascaded_objective_weight": 1.5, "parallel_objective_weight": 0.5},
        "trainer": {"accumulate_grad_batches": 2}}],
    "speechCLIP+/model_large/coco/spchclip_c+": [_PLUS_LARGE, _PLUS_COCO, {
        "model_settings": {"cascaded_branch": {"downsampling": {"cif": {"num_layer": 2, "conv_cif_width": 5}}}}}],
    "speechCLIP+/model_large/coco/spchclip_h": [_HYBRID, _HYBRID_LARGE, _PLUS_COCO, {
        "data": {"batch_size": 64}, "cl_loss": {"args": {"temperature_trainable": False}},
        "model_settings": {"cascaded_branch": {"transformer_args": {"type": "TransformerEncoder"}}}}],
    "speechCLIP+/model_large/coco/spchclip_h+": [_PLUS_LARGE, _PLUS_COCO, _HYBRID_PLUS, {
        "retrieval": {"audio_feat_src": "parallel"}, "trainer": {"accumulate_grad_batches": 2}}],
}


def _merge(tree: Dict, patch: Dict) -> None:
    for key, value in patch.items():
        if value is _DROP:
            del tree[key]
        elif isinstance(value, dict) and isinstance(tree.get(key), dict):
            _merge(tree[key], value)
        else:
            tree[key] = copy.deepcopy(value)


def reference_config(record: Published) -> Dict:
    """The reference YAML tree of ``record`` (plain dicts; values and types as PyYAML reads the file)."""
    tree = copy.deepcopy(_SPEECHCLIP if record.paper == "SpeechCLIP" else _SPEECHCLIP_PLUS)
    for patch in _PATCHES[record.config[len("config/"):-len(".yaml")]]:
        _merge(tree, patch)
    return tree


# ----------------------------------------------------------------------------- pickled classes


class OrderedNamespace:
    """Stand-in for avssl.base.ordered_namespace.OrderedNamespace, pickled as the real one is: NEWOBJ,
    then BUILD with its ``_odict`` (an OrderedDict; nested dicts are namespaces)."""

    def __init__(self, data: Dict):
        wrap = lambda v: OrderedNamespace(v) if isinstance(v, dict) else v  # noqa: E731
        self._odict = OrderedDict((k, [wrap(x) for x in v] if isinstance(v, list) else wrap(v))
                                  for k, v in data.items())

    def __getstate__(self):
        return self._odict

    def __setstate__(self, state):
        self._odict = OrderedDict(state)

    def to_dict(self) -> Dict:
        unwrap = lambda v: v.to_dict() if isinstance(v, OrderedNamespace) else v  # noqa: E731
        return {k: [unwrap(x) for x in v] if isinstance(v, list) else unwrap(v) for k, v in self._odict.items()}


class WandbLogger:
    """Stand-in for pytorch_lightning.loggers.wandb.WandbLogger (pickled state: its ``__dict__``)."""


OrderedNamespace.__module__ = "avssl.base.ordered_namespace"
WandbLogger.__module__ = "pytorch_lightning.loggers.wandb"
_STAND_INS = {"avssl.base.ordered_namespace": OrderedNamespace, "pytorch_lightning.loggers.wandb": WandbLogger}


@contextlib.contextmanager
def reference_classes():
    """The stand-ins importable under the reference's module paths (to save or load a fixture);
    ``sys.modules`` is restored on exit."""
    names = {".".join(m.split(".")[:i]) for m in _STAND_INS for i in range(1, m.count(".") + 2)}
    saved = {name: sys.modules.get(name) for name in names}
    try:
        sys.modules.update({name: types.ModuleType(name) for name in names})
        for name, cls in _STAND_INS.items():
            setattr(sys.modules[name], cls.__name__, cls)
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module


# ----------------------------------------------------------------------------- weights
HUBERT = {  # fairseq hubert_base_ls960 / hubert_large_ll60k (HuBERT paper, Table 1; fairseq's configs)
    "base": {"dim": 768, "ffn": 3072, "heads": 12, "layer_norm_first": False, "extractor_mode": "default",
             "final_dim": 256},
    "large": {"dim": 1024, "ffn": 4096, "heads": 16, "layer_norm_first": True, "extractor_mode": "layer_norm",
              "final_dim": 768},
}
HUBERT_OF = {"hubert": "base", "hubert_base": "base", "hubert_large_ll60k": "large"}  # audio_encoder.name
HUBERT_CLASSES = 504  # label_embs_concat rows: the 500-unit dictionary plus fairseq's 4 specials
CLIP = {  # OpenAI CLIP text towers (CLIP paper, Table 20); the visual tower is shrunk to VISION_WIDTH
    "ViT-B/32": {"width": 512, "heads": 8, "embed_dim": 512, "patch": 32, "open_clip": "ViT-B-32"},
    "ViT-L/14": {"width": 768, "heads": 12, "embed_dim": 768, "patch": 14, "open_clip": "ViT-L-14"},
}
CLIP_VOCAB, CONTEXT, IMAGE_SIZE, VISION_WIDTH, POOL = 49408, 77, 224, 64, 1 << 20


class _Pool:
    """Deterministic random tensors: views into one pool of POOL floats (a larger tensor's rows are
    shifted windows of it), or clones of those views when not ``compact``."""

    def __init__(self, seed: int, compact: bool):
        self.data = torch.randn(POOL, generator=torch.Generator().manual_seed(seed)) * 0.05
        self.compact, self.count = compact, 0

    def take(self, shape: Sequence[int]) -> torch.Tensor:
        self.count += 1
        numel, shape = math.prod(shape), tuple(shape)
        if numel <= POOL:
            view = self.data[(self.count * 7919) % (POOL - numel + 1):][:numel].view(shape)
        else:
            row, step = numel // shape[0], min(7, (POOL - numel // shape[0]) // (shape[0] - 1))
            start = (self.count * 7919) % (POOL - row - step * (shape[0] - 1) + 1)
            view = self.data.as_strided(shape, (step, *torch.empty(shape[1:], device="meta").stride()), start)
        return view if self.compact else view.clone()


def _lin(prefix: str, out: int, inp: int) -> List:
    return [(f"{prefix}.weight", (out, inp)), (f"{prefix}.bias", (out,))]


def _norm(prefix: str, dim: int) -> List:
    return [(f"{prefix}.weight", (dim,)), (f"{prefix}.bias", (dim,))]


def _mha(prefix: str, dim: int) -> List:  # torch.nn.MultiheadAttention (packed in_proj)
    return [(f"{prefix}.in_proj_weight", (3 * dim, dim)), (f"{prefix}.in_proj_bias", (3 * dim,)),
            *_lin(f"{prefix}.out_proj", dim, dim)]


def hubert_keys(size: str, layers: int) -> List:
    """(key, shape) of fairseq's HubertModel state dict in its order (s3prl's port names them alike)."""
    h = HUBERT[size]
    dim, specs = h["dim"], [("mask_emb", (h["dim"],)), ("label_embs_concat", (HUBERT_CLASSES, h["final_dim"]))]
    for i, (kernel, inp) in enumerate([(10, 1)] + [(3, 512)] * 4 + [(2, 512)] * 2):
        specs.append((f"feature_extractor.conv_layers.{i}.0.weight", (512, inp, kernel)))
        if h["extractor_mode"] == "layer_norm":
            specs += _norm(f"feature_extractor.conv_layers.{i}.2.1", 512)
        elif i == 0:  # "default": group norm on the first conv only
            specs += _norm("feature_extractor.conv_layers.0.2", 512)
    specs += _lin("post_extract_proj", dim, 512) + [("encoder.pos_conv.0.bias", (dim,)), (
        "encoder.pos_conv.0.weight_g", (1, 1, 128)), ("encoder.pos_conv.0.weight_v", (dim, dim // 16, 128))]
    for n in range(layers):
        p = f"encoder.layers.{n}"
        specs += [s for proj in ("k_proj", "v_proj", "q_proj", "out_proj")
                  for s in _lin(f"{p}.self_attn.{proj}", dim, dim)]
        specs += _norm(f"{p}.self_attn_layer_norm", dim) + _lin(f"{p}.fc1", h["ffn"], dim)
        specs += _lin(f"{p}.fc2", dim, h["ffn"]) + _norm(f"{p}.final_layer_norm", dim)
    return specs + _norm("encoder.layer_norm", dim) + _norm("layer_norm", 512) + _lin("final_proj", h["final_dim"], dim)


def _resblocks(prefix: str, width: int, layers: int) -> List:
    return [s for n in range(layers) for s in (
        _mha(f"{prefix}.resblocks.{n}.attn", width) + _norm(f"{prefix}.resblocks.{n}.ln_1", width)
        + _lin(f"{prefix}.resblocks.{n}.mlp.c_fc", 4 * width, width)
        + _lin(f"{prefix}.resblocks.{n}.mlp.c_proj", width, 4 * width) + _norm(f"{prefix}.resblocks.{n}.ln_2", width))]


def clip_keys(name: str, layers: int) -> List:
    """(key, shape) of OpenAI's CLIP (clip.model.CLIP, as open_clip names it too), ``layers`` blocks per tower."""
    c, grid = CLIP[name], IMAGE_SIZE // CLIP[name]["patch"]
    return ([("positional_embedding", (CONTEXT, c["width"])), ("text_projection", (c["width"], c["embed_dim"])),
             ("logit_scale", ()), ("visual.class_embedding", (VISION_WIDTH,)),
             ("visual.positional_embedding", (grid * grid + 1, VISION_WIDTH)),
             ("visual.proj", (VISION_WIDTH, c["embed_dim"])),
             ("visual.conv1.weight", (VISION_WIDTH, 3, c["patch"], c["patch"]))]
            + _norm("visual.ln_pre", VISION_WIDTH) + _resblocks("visual.transformer", VISION_WIDTH, layers)
            + _norm("visual.ln_post", VISION_WIDTH) + _resblocks("transformer", c["width"], layers)
            + [("token_embedding.weight", (CLIP_VOCAB, c["width"]))] + _norm("ln_final", c["width"]))


def _clip_state(record: Published, layers: int, seed: int, compact: bool) -> Dict[str, torch.Tensor]:
    pool = _Pool(2 * seed + 1, compact)  # the same CLIP in the reference checkpoint and in the CLIP file
    return {key: pool.take(shape) for key, shape in clip_keys(reference_config(record)["clip"]["name"], layers)}


def _proj(prefix: str, mlp: Optional[Dict], inp: int, out: int) -> List:  # nn.Linear or avssl's MLPLayers
    if mlp is None:
        return _lin(prefix, out, inp)
    dims = mlp["dimensions"]
    return [s for i, (a, b) in enumerate(zip(dims, dims[1:])) for s in _lin(f"{prefix}.sequential.{3 * i}", b, a)]


def _block(prefix: str, args: Dict, kind: str) -> List:  # avssl/module/kw_modules/TransformerModels.py
    dim, ffn = args["d_model"], args["dim_feedforward"]
    if kind == "MultiheadAttentionAndNorm":
        return _mha(f"{prefix}.multihead_attn_layer", dim) + _norm(f"{prefix}.attentionBlock_Norm", dim)
    return [s for n in range(args.get("n_layers", 1)) for s in (  # torch.nn.TransformerEncoderLayer
        _mha(f"{prefix}.model.layers.{n}.self_attn", dim) + _lin(f"{prefix}.model.layers.{n}.linear1", ffn, dim)
        + _lin(f"{prefix}.model.layers.{n}.linear2", dim, ffn) + _norm(f"{prefix}.model.layers.{n}.norm1", dim)
        + _norm(f"{prefix}.model.layers.{n}.norm2", dim))] + _norm(f"{prefix}.model.norm", dim)


def branch_keys(record: Published, tree: Dict, audio_dim: int, text_dim: int) -> List:
    """(key, shape) of the branch in state-dict order, ("<clip>", None) where its ClipModel goes:
    avssl/model/kwClip.py (SpeechCLIP) and avssl/model/kw_branches.py, avssl/module/cif.py (SpeechCLIP+)."""
    casc, par = tree["model_settings"]["cascaded_branch"], tree["model_settings"]["parallel_branch"]
    if record.variant == "Parallel":
        return [(f"parallel_branch.{k}", s) for k, s in [("cls", (1, 1, par["transformer_args"]["d_model"]))]
                + _block("self_att", par["transformer_args"], par["transformer_type"])
                + (_lin("linear_proj", text_dim, audio_dim) if par.get("need_projection", True) else [])]
    args, keyword, plus = casc["transformer_args"], casc["keyword"], record.variant.endswith("+")
    dim, num = args["d_model"], keyword.get("number", 8)
    tail = (_block("self_att", args, args.get("type", casc.get("transformer_type")))
            + _proj("linear_proj", keyword.get("kw_projection"), dim, text_dim) + [("vector_quantizer.curr_temp", (1,))]
            + _norm("bn_layer.bn_layer", text_dim if plus else num * text_dim))
    tail += [(f"bn_layer.bn_layer.{k}", (tail[-1][1] if k != "num_batches_tracked" else ()))
             for k in ("running_mean", "running_var", "num_batches_tracked")]
    if plus:
        cif = casc["downsampling"]["cif"]
        width, embed = cif.get("conv_cif_width", 3), cif.get("encoder_embed_dim", 768)
        for i in range(cif.get("num_layer", 1)):  # Conv1d, Dropout, ReLU per layer
            tail += [(f"downsampling.conv.{3 * i}.weight", (embed, embed, width)),
                     (f"downsampling.conv.{3 * i}.bias", (embed,))]
        tail += _lin("downsampling.weight_proj.1", 1, embed)
        if cif.get("cif_output_dim", embed) != embed:
            tail.append(("downsampling.cif_output_proj.weight", (cif["cif_output_dim"], embed)))
    if record.variant == "Hybrid+":
        tail += _lin("parallel_proj", text_dim, audio_dim)
    elif record.variant == "Hybrid" and par.get("need_projection", True):
        tail += _proj("parallel_proj", par.get("projection_config"), audio_dim, text_dim)
    head = {"Cascaded": [("cls", (1, num, dim))], "Cascaded+": [], "Hybrid+": [("cls", (1, 1, dim))],
            "Hybrid": [("parallel_cls", (1, 1, par["transformer_args"]["d_model"])), ("cascaded_cls", (1, num, dim))]}
    return ([(f"cascaded_branch.{k}", s) for k, s in head[record.variant]] + [("<clip>", None)]
            + [(f"cascaded_branch.{k}", s) for k, s in tail])


def default_vocab_ids(rows: int = 128, seed: int = 0) -> List[int]:
    """A reduced vocabulary in the reference's row order (by frequency, not by id): the first rows of
    text_clip_vocab_usage_byfreq.npy, then random ids."""
    first = [0, 320, 49406, 49407]
    order = torch.randperm(CLIP_VOCAB, generator=torch.Generator().manual_seed(seed)).tolist()
    return first + [i for i in order if i not in first][: rows - len(first)]


def _hyper_parameters(record: Published, tree: Dict, wandb_logger: bool) -> Dict:
    # egs/*/train.sh: --config CFG --gpus 2 --njobs 4 --seed 7122 --train --save_path exp_test; the other
    # arguments at their avssl/util/args.py defaults (base_task.py sets ckpt = None before merging).
    args = {"config": record.config, "save_path": "exp_test", "train": True, "eval": False, "test": False,
            "ckpt": None, "resume": "", "njobs": 4, "gpus": 2, "seed": 7122, "dataset_root": "", "log_level": "info"}
    config = {**args, **tree}
    config["data"]["dataset"].setdefault("modalities", ["audio", "image", "text"])
    config["trainer"]["default_root_dir"] = args["save_path"]
    if config["trainer"].get("logger") == "wandb" and wandb_logger:
        logger = WandbLogger()  # the attributes Lightning 1.5.10's LightningLoggerBase and WandbLogger set
        logger.__dict__.update({
            "_prev_step": record.step, "_metrics_to_agg": [], "_agg_key_funcs": {}, "_agg_default_func": np.mean,
            "_offline": False, "_log_model": False, "_prefix": "", "_experiment": None, "_logged_model_time": {},
            "_checkpoint_callback": None, "_wandb_init": {"name": "exp_test", "project": tree["logger"]["project"],
                                                          "id": None, "dir": "exp_test", "resume": "allow",
                                                          "anonymous": None},
            "_save_dir": "exp_test", "_name": "exp_test", "_id": "fx0run00"})
        config["trainer"]["logger"] = logger
    return {"config": OrderedNamespace(config)}


def _training_state(record: Published, tree: Dict, trainable: List, frozen: int, pool: _Pool) -> Dict:
    """Callback, Adam, LambdaLR (avssl/optim/scheduler.py) and AMP-scaler states in their 1.5.10 / torch layout."""
    lr, sched = tree["audio_encoder"]["optim"]["args"]["lr"], tree["audio_encoder"]["scheduler"]
    step, warm = record.step + 1, sched["warmup"]
    rate = ((step + 1) / warm if step < warm
            else 1 - (1 - sched["final_lr"] / lr) * (step + 1 - warm) / (sched["max_step"] - warm))
    best = f"exp_test/epoch={record.epoch}-step={record.step}-{record.dev_metric}={record.dev_figure:.4f}.ckpt"
    callbacks = {}
    for monitor, mode, value, path in [("val_loss", "min", torch.tensor(2.5), "exp_test/val_loss.ckpt"),
                                       (record.dev_metric, "max", torch.tensor(record.dev_figure), best)]:
        key = (f"ModelCheckpoint{{'monitor': '{monitor}', 'mode': '{mode}', 'every_n_train_steps': 0, "
               f"'every_n_epochs': 1, 'train_time_interval': None, 'save_on_train_epoch_end': True}}")
        callbacks[key] = {"monitor": monitor, "best_model_score": value, "best_model_path": path,
                          "current_score": value, "dirpath": "exp_test", "best_k_models": {path: value},
                          "kth_best_model_path": path, "kth_value": value,
                          "last_model_path": "exp_test/last.ckpt" if mode == "min" else ""}
    state = {i: {"step": step, "exp_avg": pool.take(t.shape), "exp_avg_sq": pool.take(t.shape)}
             for i, t in enumerate(trainable)}
    group = {"lr": lr * rate, "betas": (0.9, 0.999), "eps": 1e-08, "amsgrad": False, "initial_lr": lr,
             "weight_decay": tree["audio_encoder"]["optim"]["args"]["weight_decay"],
             "params": list(range(len(trainable) + frozen))}
    scheduler = {"base_lrs": [lr], "last_epoch": step, "verbose": False, "_step_count": step + 1,
                 "_get_lr_called_within_step": False, "_last_lr": [lr * rate], "lr_lambdas": [None]}
    return {"callbacks": callbacks, "optimizer_states": [{"state": state, "param_groups": [group]}],
            "lr_schedulers": [scheduler], "native_amp_scaling_state": {
                "scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                "_growth_tracker": step % 2000}}


def eye_size(record: Published) -> int:
    """MAX_EYE of the code that trained ``record`` (see the module docstring)."""
    return 1024 if record.paper == "SpeechCLIP" and record.size == "large" else 256


def write_reference_checkpoint(path, record: Published, *, hubert_layers: int = 2, clip_layers: int = 1,
                               vocab_ids: Optional[Sequence[int]] = None, seed: int = 0, compact: bool = True,
                               wandb_logger: bool = True, config_patch: Optional[Dict] = None) -> Dict:
    """Write ``record``'s stand-in checkpoint at ``path`` (``config_patch`` merged into its config tree,
    for tests of settings the converter must refuse). Returns what was written: ``vocab_ids``, ``seed``,
    ``shapes`` (key -> shape), ``hubert`` (size, layers, widths), ``clip_name``, ``clip_layers``, ``config``
    (the pickled tree as plain dicts). ``wandb_logger=False`` leaves ``trainer.logger`` the string "wandb"."""
    tree = reference_config(record)
    if config_patch:
        _merge(tree, config_patch)
    vocab_ids = list(default_vocab_ids(seed=seed) if vocab_ids is None else vocab_ids)
    if not {49406, 49407} <= set(vocab_ids):  # clip_official.py looks both up in the reduced table
        raise ValueError("vocab_ids lacks the CLIP start/end-of-text ids 49406, 49407")
    size = HUBERT_OF[tree["audio_encoder"]["name"]]
    clip = _clip_state(record, clip_layers, seed, compact)
    clip_params = {"clip.original_text_emb_weight": clip["token_embedding.weight"], **{
        f"clip.model.{k}": v[vocab_ids] if k == "token_embedding.weight" else v for k, v in clip.items()}}
    pool = _Pool(2 * seed, compact)
    state = {f"audio_encoder.encoder.{k}": pool.take(s) for k, s in hubert_keys(size, hubert_layers)}
    state["audio_encoder.weightedsum_layer.weights"] = pool.take((hubert_layers + 1,))
    state.update(clip_params)
    if tree["cl_loss"]["args"]["temperature_trainable"]:
        state["criterion.temperature"] = pool.take(())
    eye = torch.eye(eye_size(record), dtype=torch.bool)
    state.update({"criterion.eye_mat": eye, "criterion.neg_eye_mat": ~eye, "criterion.eye_mat_fl": eye.float()})
    temp = float(tree["model_settings"]["cascaded_branch"]["vq"]["args"]["temp"].split("=")[1])  # "fixed=0.1"
    trainable, frozen = [state["audio_encoder.weightedsum_layer.weights"]] + [
        state[k] for k in ("criterion.temperature",) if k in state], 0
    for key, shape in branch_keys(record, tree, HUBERT[size]["dim"], CLIP[tree["clip"]["name"]]["width"]):
        if key == "<clip>":
            state.update({f"cascaded_branch.{k}": v for k, v in clip_params.items()})
            frozen = len(clip_params)
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(record.step, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = pool.take(shape).abs() + 0.5
        elif key.endswith("curr_temp"):
            state[key] = torch.tensor([temp])
        else:
            state[key] = pool.take(shape)
            trainable += [] if key.endswith("running_mean") else [state[key]]
    checkpoint = {"epoch": record.epoch + 1, "global_step": record.step + 1, "pytorch-lightning_version": "1.5.10",
                  "state_dict": state, **_training_state(record, tree, trainable, frozen, pool),
                  "hparams_name": "kwargs", "hyper_parameters": _hyper_parameters(record, tree, wandb_logger)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with reference_classes():
        torch.save(checkpoint, path)
    return {"path": str(path), "vocab_ids": vocab_ids, "seed": seed, "clip_name": tree["clip"]["name"],
            "clip_layers": clip_layers, "hubert": {"size": size, "layers": hubert_layers, **HUBERT[size]},
            "shapes": {k: tuple(v.shape) for k, v in state.items()},
            "config": checkpoint["hyper_parameters"]["config"].to_dict()}


def clip_model_config(record: Published, clip_layers: int = 1) -> Dict:
    """open_clip model config of the CLIP in ``record``'s fixtures (QuickGELU, as OpenAI's weights need)."""
    c = CLIP[reference_config(record)["clip"]["name"]]
    return {"embed_dim": c["embed_dim"], "quick_gelu": True,
            "vision_cfg": {"image_size": IMAGE_SIZE, "layers": clip_layers, "width": VISION_WIDTH,
                           "patch_size": c["patch"], "head_width": 64},
            "text_cfg": {"context_length": CONTEXT, "vocab_size": CLIP_VOCAB, "width": c["width"],
                         "heads": c["heads"], "layers": clip_layers}}


def write_clip_checkpoint(path, record: Published, clip_layers: int = 1, seed: int = 0) -> Dict:
    """The full CLIP of ``record``'s fixtures (give the same ``clip_layers`` and ``seed``): an open_clip
    state dict at ``path`` and its model config at ``<path stem>.json``. Returns FrozenCLIP's arguments:
    ``model_name``, ``pretrained``, ``model_config``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_clip_state(record, clip_layers, seed, compact=True), path)
    path.with_suffix(".json").write_text(json.dumps(clip_model_config(record, clip_layers)))
    name = CLIP[reference_config(record)["clip"]["name"]]["open_clip"]
    return {"model_name": f"{name}-fixture", "pretrained": str(path), "model_config": str(path.with_suffix(".json"))}
