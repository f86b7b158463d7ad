#!/usr/bin/env python3
"""Stage 3: frozen CLIP image embeddings of a data dir's images, as npy files + scp lists.

Example:
    python -m espnet_speechclip.bin.dump_image_feats --data_dir dump/test --out_dir dump/test \\
        --clip_model_name ViT-B-32 --clip_pretrained openai

Writes <out_dir>/image_feats/<image>.npy, img_feats.scp (image -> npy), image_feats.scp (utt -> npy).
"""
import argparse

from espnet_speechclip.bin._cli import setup_logging
from espnet_speechclip.bin._clip_args import add_clip_arguments, build_clip
from espnet_speechclip.clip_features import dump_image_feats


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="Data dir with img.scp and utt2img")
    parser.add_argument("--out_dir", required=True, help="Where the npy files and scp lists go")
    parser.add_argument("--batch_size", type=int, default=64)
    add_clip_arguments(parser)
    return parser


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    setup_logging()
    dump_image_feats(build_clip(args), args.data_dir, args.out_dir, batch_size=args.batch_size)


if __name__ == "__main__":
    main()
