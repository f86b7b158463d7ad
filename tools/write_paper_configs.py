#!/usr/bin/env python
"""Rewrite the model part of the paper configs from the reference repository's own YAML files.

    tools/venv/bin/python tools/write_paper_configs.py --official_repo /path/to/SpeechCLIP_plus

Each ``egs2/{flickr8k,spokencoco}/speechclip1/conf/tuning/train_<variant>_<size>.yaml`` mirrors one
reference config (named in its header); its model slots come from ``espnet_speechclip.official.
task_config``, the mapping the parity check proves, so the paper configs build the reference
architectures. The optimisation and data options of each file are kept as they are.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from espnet_speechclip.official import task_config

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = {  # (recipe, variant, size) -> reference config
    ("flickr8k", "parallel", "base"): "config/speechCLIP/model_base/spchclp_p.yaml",
    ("flickr8k", "cascaded", "base"): "config/speechCLIP/model_base/spchclp_c.yaml",
    ("flickr8k", "parallel", "large"): "config/speechCLIP/model_large/flickr/spchclp_p.yaml",
    ("flickr8k", "cascaded", "large"): "config/speechCLIP/model_large/flickr/spchclp_c.yaml",
    ("flickr8k", "cascaded_plus", "base"): "config/speechCLIP+/model_base/spchclip_c+.yaml",
    ("flickr8k", "hybrid", "base"): "config/speechCLIP+/model_base/spchclip_h.yaml",
    ("flickr8k", "hybrid_plus", "base"): "config/speechCLIP+/model_base/spchclip_h+.yaml",
    ("flickr8k", "cascaded_plus", "large"): "config/speechCLIP+/model_large/flickr/spchclip_c+.yaml",
    ("flickr8k", "hybrid", "large"): "config/speechCLIP+/model_large/flickr/spchclip_h.yaml",
    ("flickr8k", "hybrid_plus", "large"): "config/speechCLIP+/model_large/flickr/spchclip_h+.yaml",
    ("spokencoco", "parallel", "large"): "config/speechCLIP/model_large/coco/spchclp_p.yaml",
    ("spokencoco", "cascaded", "large"): "config/speechCLIP/model_large/coco/spchclp_c.yaml",
    ("spokencoco", "cascaded_plus", "large"): "config/speechCLIP+/model_large/coco/spchclip_c+.yaml",
    ("spokencoco", "hybrid", "large"): "config/speechCLIP+/model_large/coco/spchclip_h.yaml",
    ("spokencoco", "hybrid_plus", "large"): "config/speechCLIP+/model_large/coco/spchclip_h+.yaml",
}
HUBERT = {"base": "downloads/hubert_base_ls960.pt", "large": "downloads/hubert_large_ll60k.pt"}
SLOTS = ("upstream", "upstream_conf", "shared_block", "shared_block_conf", "parallel", "parallel_conf", "segmenter",
         "segmenter_conf", "vq_conf", "model_conf")


def upstream_conf(reference: dict, size: str) -> dict:
    encoder = reference["audio_encoder"]
    # Waveform layer norm: the fairseq task of hubert_large_ll60k normalises; base SpeechCLIP+ configs
    # do it in the dataset (data.dataset.normalize_waveform).
    normalize = size == "large" or bool(reference["data"]["dataset"].get("normalize_waveform", False))
    return {"path_or_url": HUBERT[size], "normalize_waveform": normalize,
            "layer_norm": bool(encoder.get("normalize_hiddenstates", False)), "frozen": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official_repo", required=True)
    args = parser.parse_args()
    for (recipe, variant, size), source in REFERENCE.items():
        reference = yaml.safe_load((Path(args.official_repo) / source).read_text())
        path = ROOT / f"egs2/{recipe}/speechclip1/conf/tuning/train_{variant}_{size}.yaml"
        current = yaml.safe_load(path.read_text())
        mapped = task_config(reference)
        model = {"upstream": "reference_hubert", "upstream_conf": upstream_conf(reference, size)}
        model.update({k: mapped[k] for k in SLOTS[2:] if k in mapped and (mapped[k] or k.endswith("_conf"))})
        if mapped.get("segmenter") is not None and "vq_conf" not in model:
            raise ValueError(f"{source}: a cascaded model without vq options")
        rest = {k: v for k, v in current.items() if k not in SLOTS}
        header = (f"# {mapped['variant']} ({size}): the reference architecture of {source} in "
                  f"ShampooWang/SpeechCLIP_plus\n# (Parallel / Cascaded: the same file in atosystem/SpeechCLIP), "
                  f"written by tools/write_paper_configs.py.\n# Optimisation as in the SpeechCLIP / SpeechCLIP+ "
                  f"code: Adam 1e-4, wd 1e-6, 5k-step warm-up, decay to 50k steps, batch 256, grad clip 4.\n"
                  f"# HuBERT: s3prl's converted checkpoint (README, 'Published models'); CLIP: OpenAI's weights.\n")
        path.write_text(header + yaml.safe_dump({**model, **rest}, sort_keys=False, width=110))
        print(path.relative_to(ROOT), mapped["variant"])


if __name__ == "__main__":
    main()
