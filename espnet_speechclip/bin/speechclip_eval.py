#!/usr/bin/env python3
"""Stage 5: evaluate a trained SpeechCLIP model on any Kaldi-style data dir.

Example:
    python -m espnet_speechclip.bin.speechclip_eval --data_dir dump/test --model_dir exp/hybrid_plus \\
        --output_dir exp/hybrid_plus/eval_test

The data dir needs wav.scp, utt2img, img.scp (and text for zero-shot text retrieval and keywords,
word_align for CIF boundary F1, utt2spk for speech→image R@1 per speaker). Writes results.json,
RESULTS.md, recall_curves.png, cif_*.png.
"""
import argparse
import logging
from pathlib import Path

import torch

from espnet_speechclip.bin._cli import setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--model_dir", required=True, help="ESPnet exp dir with config.yaml and *.pth")
    parser.add_argument("--model_file", default=None,
                        help="Default: the checkpoint kept for the config's first best_model_criterion "
                             "(e.g. valid.mean_r1.best.pth), the one stage 6 packs; else latest.pth")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num_cif_plots", type=int, default=4)
    return parser


def load_model(model_dir: str, model_file: str = None, device: str = "cpu"):
    """(model in eval mode, train args, path of the checkpoint loaded)."""
    import yaml

    import tempfile

    from espnet_speechclip.tasks.speechclip import SpeechCLIPTask
    from espnet_speechclip.zoo import find_model_file, resolve_config_paths

    model_dir = Path(model_dir)
    config = model_dir / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{model_dir}: no config.yaml (has stage 4 run?)")
    if model_file is None:
        # The same checkpoint as the packed model (stage 6), so that RESULTS.md describes what is shipped.
        model_file = str(find_model_file(model_dir, yaml.safe_load(config.read_text()) or {}))
    logging.info("evaluating %s", model_file)
    # Files named relative to the recipe dir (ESPnet's exp dirs) or to the exp dir (converted models).
    resolved = resolve_config_paths(yaml.safe_load(config.read_text()), [Path.cwd(), model_dir])
    with tempfile.TemporaryDirectory(prefix="speechclip_config_") as tmp:
        (Path(tmp) / "config.yaml").write_text(yaml.safe_dump(resolved))
        model, args = SpeechCLIPTask.build_model_from_file(str(Path(tmp) / "config.yaml"), model_file, device)
    return model.eval(), args, model_file


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    setup_logging()
    from espnet_speechclip.clip_adapter import FrozenCLIP
    from espnet_speechclip.evaluation import evaluate
    from espnet_speechclip.report import write_report

    torch.manual_seed(0)
    model, train_args, model_file = load_model(args.model_dir, args.model_file, args.device)
    clip = model.cascaded.clip if model.cascaded is not None else FrozenCLIP(**train_args.clip_conf)
    pieces = clip.decode(model.cascaded.bridge.token_ids.tolist()) if model.cascaded is not None else None
    result = evaluate(model, clip, args.data_dir, vocab_pieces=pieces)
    result["results"]["checkpoint"] = Path(model_file).name
    write_report(result, args.model_dir, args.data_dir, args.output_dir, num_cif_plots=args.num_cif_plots,
                 config=str(Path(args.model_dir) / "config.yaml"))


if __name__ == "__main__":
    main()
