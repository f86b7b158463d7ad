#!/usr/bin/env python3
"""Stage 3: the reduced CLIP vocabulary (token ids of the TRAIN captions only) for the VQ bridge.

Example:
    python -m espnet_speechclip.bin.build_clip_vocab --text data/train/text --output exp/clip/vocab.txt \\
        --clip_model_name ViT-B-32 --clip_pretrained openai
"""
import argparse

from espnet_speechclip.bin._cli import setup_logging
from espnet_speechclip.bin._clip_args import add_clip_arguments, build_clip
from espnet_speechclip.clip_features import build_vocab


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", required=True, help="Kaldi-style text file of the training split")
    parser.add_argument("--output", required=True, help="Output vocabulary (one 'id piece' per line)")
    add_clip_arguments(parser)
    return parser


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    setup_logging()
    build_vocab(build_clip(args), args.text, args.output)


if __name__ == "__main__":
    main()
