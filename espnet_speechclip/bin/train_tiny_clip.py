#!/usr/bin/env python3
"""Stage 3 (synthetic corpus): train a tiny open_clip CLIP on the train image–caption pairs.

Example:
    python -m espnet_speechclip.bin.train_tiny_clip --train_dir data/train --valid_dir data/dev \\
        --model_config conf/tiny_clip.json --output exp/clip/tiny_clip.pt
"""
import argparse
import json
from pathlib import Path

from espnet_speechclip.bin._cli import setup_logging
from espnet_speechclip.tiny_clip import train_tiny_clip


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_dir", required=True, help="Data dir with img.scp, utt2img, text")
    parser.add_argument("--valid_dir", default=None, help="Data dir to report text->image recall on")
    parser.add_argument("--model_config", required=True, help="open_clip model config JSON")
    parser.add_argument("--model_name", default="spoken_shapes_tiny_clip", help="Name to register the config as")
    parser.add_argument("--output", required=True, help="Where to save the state dict (.pt)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    setup_logging()
    result = train_tiny_clip(args.train_dir, args.model_config, args.output, model_name=args.model_name,
                             valid_dir=args.valid_dir, epochs=args.epochs, batch_size=args.batch_size,
                             lr=args.lr, seed=args.seed)
    Path(args.output).with_suffix(".valid.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
