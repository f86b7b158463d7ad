#!/usr/bin/env python
"""Component-wise numerical parity with the reference SpeechCLIP / SpeechCLIP+ code (hand-run).

    tools/venv/bin/python tools/check_official_parity.py --official_repo /path/to/SpeechCLIP_plus

For each published configuration (the reference repository's own YAML files: Parallel and
Cascaded from config/speechCLIP, Cascaded+, Hybrid and Hybrid+ from config/speechCLIP+, base and
large on Flickr8k) it builds the reference branch with random weights and random BatchNorm
statistics, copies its weights into this plugin's parts through ``espnet_speechclip.official``
(the mapping the checkpoint converter uses), feeds both the same padded batch of upstream
features, and prints the largest absolute difference of every component, in eval mode and in
training mode with dropout off (training-mode BatchNorm statistics, CIF scaling). The reference
code is imported from the checkout given; it is never copied into this project, and this tool
is not part of the test suite. The frozen CLIP is a small open_clip model with the published
widths (token 512 / 768), shared by both sides; the HuBERT forward is compared separately by
``tools/official_parity/upstream.py``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_parity.reference_modules import (  # noqa: E402
    ReferenceClip,
    load_reference,
    load_speechclip_reference,
    reduced_vocab,
)

from espnet_speechclip.branches.cascaded import CascadedBranch  # noqa: E402
from espnet_speechclip.clip_adapter import FrozenCLIP  # noqa: E402
from espnet_speechclip.espnet_model import ESPnetSpeechCLIPModel  # noqa: E402
from espnet_speechclip.frame_views import FrameViews  # noqa: E402
from espnet_speechclip.losses import InfoNCELoss  # noqa: E402
from espnet_speechclip.official import map_state_dict, task_config  # noqa: E402
from espnet_speechclip.tasks.speechclip import parallel_choices, segmenter_choices, shared_block_choices  # noqa: E402
from espnet_speechclip.vq_bridge import VQBridge, build_keyword_norm  # noqa: E402

CONFIGS = {
    ("Parallel", "base"): "config/speechCLIP/model_base/spchclp_p.yaml",
    ("Parallel", "large"): "config/speechCLIP/model_large/flickr/spchclp_p.yaml",
    ("Cascaded", "base"): "config/speechCLIP/model_base/spchclp_c.yaml",
    ("Cascaded", "large"): "config/speechCLIP/model_large/flickr/spchclp_c.yaml",
    ("Cascaded+", "base"): "config/speechCLIP+/model_base/spchclip_c+.yaml",
    ("Cascaded+", "large"): "config/speechCLIP+/model_large/flickr/spchclip_c+.yaml",
    ("Cascaded+", "large-coco"): "config/speechCLIP+/model_large/coco/spchclip_c+.yaml",  # 2 conv layers, width 5
    ("Hybrid", "base"): "config/speechCLIP+/model_base/spchclip_h.yaml",
    ("Hybrid", "large"): "config/speechCLIP+/model_large/flickr/spchclip_h.yaml",
    ("Hybrid", "large-coco"): "config/speechCLIP+/model_large/coco/spchclip_h.yaml",  # a TransformerEncoder block
    ("Hybrid+", "base"): "config/speechCLIP+/model_base/spchclip_h+.yaml",
    ("Hybrid+", "large"): "config/speechCLIP+/model_large/flickr/spchclip_h+.yaml",
}
WIDTHS = {"base": (768, 512), "large": (1024, 768), "large-coco": (1024, 768)}  # (upstream D, CLIP token width = joint width)
LENGTHS = [61, 47, 34, 58]  # frames of the padded batch; CIF fires ~3 segments on the shortest


def tiny_clip(width: int, directory: Path) -> FrozenCLIP:
    return tiny_clip_files(width, directory)[0]


def tiny_clip_files(width: int, directory: Path):
    """A one-layer open_clip text tower with the published token width and vocabulary size, and
    its files (state dict, model config, model name) for the converter."""
    config = {"embed_dim": width, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 32,
                                                 "patch_size": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": width, "heads": 8, "layers": 1}}
    name = f"parity-clip-{width}"
    path = directory / f"{name}.json"
    path.write_text(json.dumps(config))
    torch.manual_seed(width)
    clip = FrozenCLIP(name, None, str(path))
    weights = directory / f"{name}.pt"
    torch.save(clip.model.state_dict(), weights)
    return clip, (str(weights), str(path), name)


def randomise_batchnorms(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def no_dropout(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(m, torch.nn.MultiheadAttention):
            m.dropout = 0.0


def build_ours(mapped: dict, clip: FrozenCLIP, ids: torch.Tensor, table: torch.Tensor, size: int):
    shared = parallel = cascaded = None
    if mapped["shared_block"]:
        shared = shared_block_choices.get_class(mapped["shared_block"]).from_config(size, **mapped["shared_block_conf"])
    if mapped["parallel"]:
        parallel = parallel_choices.get_class(mapped["parallel"]).from_config(size, clip.embed_dim,
                                                                             **mapped["parallel_conf"])
    if mapped["segmenter"]:
        segmenter_class = segmenter_choices.get_class(mapped["segmenter"])
        extra = {"upstream_size": size} if mapped["segmenter"] == "cif" else {}
        segmenter = segmenter_class.from_config(size, clip.token_width, **extra, **mapped["segmenter_conf"])
        vq = dict(mapped["vq_conf"])
        norm = build_keyword_norm(vq.pop("keyword_norm"), table, segmenter.num_keywords)
        cascaded = CascadedBranch(segmenter, VQBridge(table, ids, norm, (0, 49406, 49407), **vq), clip)
    model_conf = {k: v for k, v in mapped["model_conf"].items()}
    upstream = torch.nn.Module()  # the upstream is compared on its own
    return ESPnetSpeechCLIPModel(upstream, None, None, parallel, cascaded, shared_block=shared, **model_conf)


def compare(name: str, ref: torch.Tensor, ours: torch.Tensor, rows: list) -> None:
    if ref.shape != ours.shape:
        rows.append((name, float("nan"), f"shape {tuple(ref.shape)} vs {tuple(ours.shape)}"))
        return
    rows.append((name, float((ref.double() - ours.double()).abs().max()) if ref.numel() else 0.0, ""))


def check(variant: str, size_name: str, repo: Path, reference, tmp: Path) -> list:
    config = yaml.safe_load((repo / CONFIGS[(variant, size_name)]).read_text())
    audio_dim, text_dim = WIDTHS[size_name]
    clip = tiny_clip(text_dim, tmp)
    ids = reduced_vocab()
    table = clip.token_table(ids)
    ref_clip = ReferenceClip(clip, ids, reference.ClipModel)
    torch.manual_seed(0)
    ref_branch = reference.build_branch(config, variant, audio_dim, text_dim, ref_clip)
    randomise_batchnorms(ref_branch, 1)
    prefix = "parallel_branch." if variant == "Parallel" else "cascaded_branch."
    mapped = task_config(config)
    ours = build_ours(mapped, clip, ids, table, audio_dim)
    state = {prefix + k: v for k, v in ref_branch.state_dict().items() if not k.startswith("clip.")}
    if mapped["model_conf"]["learnable_temperature"]:
        state["criterion.temperature"] = reference.loss(config).temperature.detach()
    missing, unexpected = ours.load_state_dict(map_state_dict(state, variant), strict=False)
    missing = [k for k in missing if not k.startswith(("cascaded.clip.", "cascaded.bridge.table", "cascaded.bridge.token_ids",
                                                       "cascaded.bridge.allowed", "shared_block.keyword_cls",
                                                       "loss_fn.logit_scale", "cascaded.segmenter.scaling.num_batches"))]
    if missing or unexpected:
        raise RuntimeError(f"{variant} {size_name}: missing {missing}, unexpected {unexpected}")
    lengths = torch.tensor(LENGTHS)
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(len(LENGTHS), max(LENGTHS), audio_dim, generator=g)
    image = torch.nn.functional.normalize(torch.randn(len(LENGTHS), text_dim, generator=g), dim=-1)
    rows = []
    for mode in ("eval", "train"):
        ref_branch.train(mode == "train")
        ours.train(mode == "train")
        if mode == "train":
            no_dropout(ref_branch), no_dropout(ours)
        ref_out = reference.run_branch(ref_branch, variant, feats, lengths)
        views = FrameViews(feats, lengths, feats, feats, lengths)
        views = views if ours.shared_block is None else ours.shared_block(views)
        our_out = {name: branch(views) for name, branch in ours.branches().items()}
        tag = f"{mode}: "
        if "parallel" in our_out:
            compare(tag + "parallel embedding", ref_out["parallel_audio_feat"], our_out["parallel"]["embedding"], rows)
        if "cascaded" in our_out:
            c = our_out["cascaded"]
            n = c["keyword_lengths"]
            compare(tag + "keyword count", ref_out["keyword_lengths"], n, rows)
            valid = torch.arange(c["keywords"].size(1))[None, :] < n[:, None]
            compare(tag + "keywords before BatchNorm", ref_out["keywords_before_bn"][valid], c["keywords"][valid], rows)
            compare(tag + "keywords after BatchNorm", ref_out["keywords_after_bn"][valid], c["normed_keywords"][valid], rows)
            compare(tag + "VQ token ids", ref_out["token_rows"][valid], c["keyword_indices"][valid], rows)
            compare(tag + "cascaded embedding (CLIP text tower)", ref_out["cascaded_audio_feat"], c["embedding"], rows)
            if "alpha" in c:
                compare(tag + "CIF weights alpha", ref_out["alpha"], c["alpha"], rows)
                compare(tag + "quantity loss", ref_out["quantity_loss"], c["quantity_loss"], rows)
                if "fire_frames" in ref_out:
                    compare(tag + "CIF fire frames", ref_out["fire_frames"],
                            reference.first_fires(c["fire_frames"], ref_out), rows)
        ref_states = reference.frame_states(ref_branch, variant, feats, lengths) if mode == "eval" else None
        if ref_states is not None:
            base = FrameViews(feats, lengths, feats, feats, lengths)
            our_states = []
            if ours.shared_block is not None:
                our_states += ours.shared_block.frame_states(base)
            for name in ("cascaded", "parallel"):
                if name in ours.branches():
                    our_states += ours.branches()[name].frame_states(views)
            if len(our_states) != len(ref_states):
                rows.append((tag + "branch frame states (s3prl)", float("nan"),
                             f"{len(our_states)} states vs the reference's {len(ref_states)}"))
            for i, (a, b) in enumerate(zip(ref_states, our_states)):
                compare(tag + f"branch frame state {i} (s3prl)", a, b, rows)
        loss = reference.loss(config)
        if mapped["model_conf"]["learnable_temperature"]:
            loss.temperature.data.copy_(state["criterion.temperature"])
        groups = torch.arange(len(LENGTHS))
        for name in our_out:
            key = f"{name}_audio_feat"
            ref_loss = loss(torch.nn.functional.normalize(ref_out[key], dim=-1), image, groups)
            our_loss, _ = ours.loss_fn(our_out[name]["embedding"], image, groups)
            compare(tag + f"{name} contrastive loss", ref_loss, our_loss, rows)
    return rows


def check_conversions(repo: Path, plus, speechclip, args) -> list:
    """Every base variant: reference model -> Lightning checkpoint -> converter -> from_pretrained."""
    from official_parity.end_to_end import check_conversion
    from official_parity.upstream import _reference_sources, _stubbed_imports

    rows = []
    with tempfile.TemporaryDirectory() as tmp, _stubbed_imports(_reference_sources(str(repo), tmp)) as upstream:
        from s3prl.upstream.hubert.hubert_model import HubertModel
        from s3prl.upstream.wav2vec2.wav2vec2_model import TransformerEncoder

        original = TransformerEncoder.extract_features
        try:
            for variant in args.variants.split(","):
                reference, config_repo = plus, repo
                if variant in ("Parallel", "Cascaded") and speechclip is not None:
                    reference, config_repo = speechclip, Path(args.speechclip_repo)
                elif variant == "Parallel":
                    continue
                for name, diff in check_conversion(reference, upstream, variant,
                                                   config_repo / CONFIGS[(variant, "base")], tiny_clip_files,
                                                   Path(tmp)):
                    rows.append((f"{variant} base: {name}", diff))
        finally:  # the reference patches s3prl's classes globally
            TransformerEncoder.extract_features = original
            if hasattr(HubertModel, "customHubertForward"):
                del HubertModel.customHubertForward
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official_repo", required=True, help="checkout of ShampooWang/SpeechCLIP_plus")
    parser.add_argument("--speechclip_repo", default=None,
                        help="checkout of atosystem/SpeechCLIP, whose code trained the published Parallel and "
                             "Cascaded models (SpeechCLIP_plus's own KW_ParallelBranch cannot run: its "
                             "self_att is None); without it those two are checked against SpeechCLIP_plus, "
                             "Parallel not at all")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--variants", default="Parallel,Cascaded,Cascaded+,Hybrid,Hybrid+")
    parser.add_argument("--skip_upstream", action="store_true", help="do not run the HuBERT forward check")
    parser.add_argument("--skip_conversion", action="store_true",
                        help="do not convert reference-layout checkpoints end to end (official_parity/end_to_end.py)")
    args = parser.parse_args()
    repo = Path(args.official_repo)
    plus = load_reference(repo)
    speechclip = None if args.speechclip_repo is None else load_speechclip_reference(Path(args.speechclip_repo))
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for variant, size_name in CONFIGS:
            if variant not in args.variants.split(","):
                continue
            reference, config_repo = plus, repo
            if variant in ("Parallel", "Cascaded") and speechclip is not None:
                reference, config_repo = speechclip, Path(args.speechclip_repo)
            elif variant == "Parallel":
                print("Parallel: skipped (give --speechclip_repo)")
                continue
            for name, diff, note in check(variant, size_name, config_repo, reference, Path(tmp)):
                worst = max(worst, diff) if diff == diff else float("inf")
                print(f"{variant:9s} {size_name:10s} {name:45s} {diff:.2e} {note}")
    if not args.skip_upstream:
        from official_parity.upstream import check_upstream
        for name, diff in check_upstream(str(repo)):
            worst = max(worst, diff)
            print(f"{'upstream':15s} {name:45s} {diff:.2e}")
    if not args.skip_conversion:
        for name, diff in check_conversions(repo, plus, speechclip, args):
            worst = max(worst, diff)
            print(f"{'conversion':15s} {name:60s} {diff:.2e}")
    print(f"largest difference {worst:.2e} ({'within' if worst <= args.tolerance else 'ABOVE'} {args.tolerance:g})")
    sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == "__main__":
    main()
