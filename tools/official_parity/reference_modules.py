"""Import the reference branch code from a checkout of ShampooWang/SpeechCLIP_plus, without its
package ``__init__`` (which needs pytorch-lightning, fairseq and OpenAI's clip): the files the
branches need are loaded one by one under their own module names, with small stand-ins for the
OpenAI ``clip`` package, which only ``ClipModel.__init__`` uses (the tool never calls it)."""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch


def reduced_vocab(size: int = 300) -> torch.Tensor:
    """Rows as in the reference ``text_clip_vocab_usage_byfreq`` files: pad 0, 'a' 320, SOT, EOT first."""
    rest = torch.randperm(49400, generator=torch.Generator().manual_seed(1))[: size - 4] + 1
    rest = rest[(rest != 320)][: size - 4]
    return torch.cat([torch.tensor([0, 320, 49406, 49407]), rest])


class ReferenceClip(torch.nn.Module):
    """The attributes the reference branches and ``ClipModel.encode_keywords`` read, over the same
    open_clip weights: OpenAI CLIP's transformer takes LND input with its causal mask built in."""

    def __init__(self, clip: FrozenCLIP, ids: torch.Tensor, clip_model_class):
        super().__init__()
        oc = clip.model
        model = types.SimpleNamespace()
        model.token_embedding = torch.nn.Embedding.from_pretrained(oc.token_embedding.weight[ids].clone())
        model.positional_embedding = oc.positional_embedding
        model.transformer = lambda x: oc.transformer(x.permute(1, 0, 2), attn_mask=oc.attn_mask).permute(1, 0, 2)
        model.ln_final, model.text_projection = oc.ln_final, oc.text_projection
        self.model, self.device = model, "cpu"
        self.selected_text_emb_ids = ids.numpy()
        self.startOfTxt_reduced, self.endOfTxt_reduced = 2, 3
        self._encode = clip_model_class.encode_keywords

    def encode_keywords(self, keywords, keyword_num):
        return self._encode(self, keywords, keyword_num)


def _package(name: str) -> types.ModuleType:
    module = sys.modules.get(name) or types.ModuleType(name)
    module.__path__ = []
    sys.modules[name] = module
    return module


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Reference:
    def __init__(self, repo: Path, load_branches: bool = True):
        src = repo / "avssl"
        for name in ("avssl", "avssl.model", "avssl.module", "avssl.module.kw_modules",
                     "avssl.module.speechclip_c_modules", "avssl.base", "avssl.util"):
            _package(name)
        clip_stub = _package("clip")
        tokenizer_stub = types.ModuleType("clip.simple_tokenizer")
        tokenizer_stub.SimpleTokenizer = object
        sys.modules["clip.simple_tokenizer"] = tokenizer_stub
        clip_stub.available_models = lambda: []
        base = _load("avssl.base.ordered_namespace", src / "base/ordered_namespace.py")
        sys.modules["avssl.base"].OrderedNamespace = base.OrderedNamespace
        data_utils = _load("avssl.util.data_utils", src / "util/data_utils.py")
        sys.modules["avssl.util"].get_keypadding_mask = data_utils.get_keypadding_mask
        projections = _load("avssl.module.projections", src / "module/projections.py")
        clip_official = _load("avssl.module.clip_official", src / "module/clip_official.py")
        module = sys.modules["avssl.module"]
        module.MLPLayers, module.ClipModel = projections.MLPLayers, clip_official.ClipModel
        if (src / "module/cif.py").is_file():  # SpeechCLIP+ only
            _load("avssl.module.cif", src / "module/cif.py")
        kw = sys.modules["avssl.module.kw_modules"]
        kw.TransformerModels = _load("avssl.module.kw_modules.TransformerModels",
                                     src / "module/kw_modules/TransformerModels.py")
        c_modules = sys.modules["avssl.module.speechclip_c_modules"]
        c_modules.vector_quantizers = _load("avssl.module.speechclip_c_modules.vector_quantizers",
                                            src / "module/speechclip_c_modules/my_vector_quantizer.py")
        c_modules.kw_bn = _load("avssl.module.speechclip_c_modules.kw_bn", src / "module/speechclip_c_modules/kw_bn.py")
        self.losses = _load("avssl.module.losses", src / "module/losses.py")
        if load_branches:
            self.branches = _load("avssl.model.kw_branches", src / "model/kw_branches.py")
        self.OrderedNamespace = base.OrderedNamespace
        self.ClipModel = clip_official.ClipModel

    def build_branch(self, config: dict, variant: str, audio_dim: int, text_dim: int, clip) -> torch.nn.Module:
        """The reference branch exactly as ``KWClip_GeneralTransformer.__init__`` builds it."""
        cfg = self.OrderedNamespace(config)
        b = self.branches
        if variant == "Parallel":
            return b.KW_ParallelBranch(cfg, audio_dim, text_dim)
        if variant == "Cascaded":
            return b.KW_CascadedBranch(cfg, audio_dim, text_dim, clip)
        if variant == "Cascaded+":
            return b.KW_CascadedBranchPlus(cfg, audio_dim, text_dim, clip)
        if variant == "Hybrid":
            return b.KW_HybridBranch(cfg, audio_dim, text_dim, text_dim, clip)
        return b.KW_HybridBranchPlus(cfg, audio_dim, text_dim, text_dim, clip)

    def loss(self, config: dict) -> torch.nn.Module:
        return self.losses.MaskedContrastiveLoss(**config["cl_loss"]["args"])

    def run_branch(self, branch, variant: str, feats: torch.Tensor, lengths: torch.Tensor) -> dict:
        """The reference forward (as ``KWClip_GeneralTransformer.forward`` calls it), with the
        keywords captured before and after the keyword BatchNorm."""
        captured = {}
        hooks = []
        if variant != "Parallel":
            hooks.append(branch.linear_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("before", o)))
            hooks.append(branch.bn_layer.register_forward_hook(lambda m, i, o: captured.__setitem__("after", o)))
        other = None
        if variant.endswith("+"):
            other = {"global_step": 0, "target_len": (lengths / 20).round().long()}
        try:
            out = branch(feats, lengths, other) if other is not None or variant != "Parallel" else branch(feats, lengths)
        finally:
            for hook in hooks:
                hook.remove()
        result = {k: out[k] for k in ("parallel_audio_feat", "cascaded_audio_feat") if out[k] is not None}
        if variant == "Parallel":
            return result
        batch = feats.size(0)
        dsample = out["dsample_results"]
        result["keywords_before_bn"], result["keywords_after_bn"] = captured["before"], captured["after"]
        result["token_rows"] = out["vq_results"]["targets"].reshape(batch, -1)
        if dsample is None:
            result["keyword_lengths"] = torch.full((batch,), branch.keyword_num, dtype=torch.long)
            return result
        result["keyword_lengths"] = dsample["dsample_feats_length"]
        result["alpha"] = dsample["orig_alpha"]
        result["quantity_loss"] = torch.nn.functional.l1_loss(dsample["quantity_out"], dsample["target_len"].float())
        if branch.training:  # at inference the reference's tail handling rewrites fired_marks by column
            fired = dsample["fired_marks"]
            width = int(fired.sum(1).max())
            result["fire_frames"] = torch.stack([torch.cat([row.nonzero().flatten(), row.new_full(
                (width - int(row.sum()),), -1, dtype=torch.long)]) for row in fired])
        return result

    def frame_states(self, branch, variant: str, feats: torch.Tensor, lengths: torch.Tensor):
        """What the reference ``feature_extractor_s3prl`` appends to the upstream's states for this
        branch: ``extract_hidden_states(...)[1:]``. None for SpeechCLIP's Cascaded, whose
        ``extract_hidden_states`` indexes the batch dimension (``[-1]`` then ``x[:, K:]`` per utterance)."""
        if variant == "Cascaded":
            return None
        return list(branch.extract_hidden_states(feats, lengths)[1:])

    @staticmethod
    def first_fires(ours: torch.Tensor, ref_out: dict) -> torch.Tensor:
        """This plugin's fire frames (one per segment) as the reference marks them: the distinct
        frames where at least one segment fires, padded with -1 to the reference's width."""
        if "fire_frames" not in ref_out:
            return ours.new_zeros(0)
        width = ref_out["fire_frames"].size(1)
        rows = [torch.unique(row[row >= 0]) for row in ours]
        return torch.stack([torch.cat([r, r.new_full((width - len(r),), -1)])[:width] for r in rows])


def load_reference(repo: Path) -> Reference:
    if not (repo / "avssl/model/kw_branches.py").is_file():
        raise FileNotFoundError(f"{repo}: not a checkout of ShampooWang/SpeechCLIP_plus (no avssl/model/kw_branches.py)")
    return Reference(repo)


def load_speechclip_reference(repo: Path) -> SpeechCLIPReference:
    if not (repo / "avssl/model/kwClip.py").is_file() or (repo / "avssl/model/kw_branches.py").is_file():
        raise FileNotFoundError(f"{repo}: not a checkout of atosystem/SpeechCLIP (avssl/model/kwClip.py without "
                                f"kw_branches.py)")
    return SpeechCLIPReference(repo)


class SpeechCLIPReference(Reference):
    """atosystem/SpeechCLIP: the code that trained the published Parallel and Cascaded models.
    Its branches live in ``avssl/model/kwClip.py`` beside the Lightning model, so that file is
    loaded with stand-ins for what only training uses (pytorch-lightning loggers, the HuBERT
    encoder, the optimiser factory, the Lightning base class)."""

    def __init__(self, repo: Path):
        for name in list(sys.modules):  # a fresh namespace: the two repositories share module names
            if name == "avssl" or name.startswith("avssl."):
                del sys.modules[name]
        super().__init__(repo, load_branches=False)
        src = repo / "avssl"
        for name in ("pytorch_lightning", "pytorch_lightning.loggers", "pytorch_lightning.loggers.wandb",
                     "avssl.optim"):
            _package(name)
        sys.modules["pytorch_lightning.loggers"].TensorBoardLogger = object
        sys.modules["pytorch_lightning.loggers.wandb"].WandbLogger = object
        sys.modules["avssl.optim"].get_scheduler = None
        module = sys.modules["avssl.module"]
        module.FairseqSpeechEncoder_Hubert = module.S3prlSpeechEncoderPlus = object
        module.losses, module.mutualRetrieval = self.losses, None
        base_model = types.ModuleType("avssl.model.base_model")
        base_model.BaseLightningModel = torch.nn.Module
        sys.modules["avssl.model.base_model"] = base_model
        self.branches = _load("avssl.model.kwClip", src / "model/kwClip.py")

    def build_branch(self, config: dict, variant: str, audio_dim: int, text_dim: int, clip) -> torch.nn.Module:
        cfg = self.OrderedNamespace(config)
        if variant == "Parallel":
            return self.branches.KW_ParallelBranch(config=cfg, audio_dim=audio_dim, out_dim=text_dim)
        if variant == "Cascaded":
            return self.branches.KW_CascadedBranch(config=cfg, audio_dim=audio_dim, text_dim=text_dim, clip=clip)
        raise ValueError(f"atosystem/SpeechCLIP has no {variant} branch")

    def run_branch(self, branch, variant: str, feats: torch.Tensor, lengths: torch.Tensor) -> dict:
        if variant == "Parallel":
            return {"parallel_audio_feat": branch(feats, lengths)}
        captured = {}
        hooks = [branch.linear_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("before", o)),
                 branch.bn_layer.register_forward_hook(lambda m, i, o: captured.__setitem__("after", o))]
        try:
            embedding, vq_results, _ = branch(feats, lengths)
        finally:
            for hook in hooks:
                hook.remove()
        batch = feats.size(0)
        return {"cascaded_audio_feat": embedding, "keywords_before_bn": captured["before"],
                "keywords_after_bn": captured["after"], "token_rows": vq_results["targets"].reshape(batch, -1),
                "keyword_lengths": torch.full((batch,), branch.keyword_num, dtype=torch.long)}
