#!/usr/bin/env python3
"""Stage 1 of the Flickr8k recipe: Kaldi-style dirs from Flickr8k + Flickr8k Audio Captions.

Example::

    python -m espnet_speechclip.bin.prepare_flickr8k --corpus_dir /data/flickr8k --data_dir data
    # -> data/{train,dev,test}/{wav.scp,text,utt2img,img.scp,utt2spk,spk2utt,problems.txt}, data/problems.txt

The expected layout under --corpus_dir is in ``espnet_speechclip.data.flickr8k``. The split sizes
(6000 / 1000 / 1000 images, 5 captions each) are checked; pass smaller ones only for test corpora.
"""
import argparse

from espnet_speechclip.bin._cli import setup_logging
from espnet_speechclip.data.flickr8k import FLICKR8K_SPLIT_SIZES, prepare_flickr8k


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus_dir", required=True, help="Flickr8k root (FLICKR8K in db.sh)")
    parser.add_argument("--data_dir", required=True, help="Where <split>/ Kaldi dirs are written")
    for split, size in FLICKR8K_SPLIT_SIZES.items():
        parser.add_argument(f"--num_{split}", type=int, default=size, help=f"Images in the {split} list")
    parser.add_argument("--captions_per_image", type=int, default=5, help="Spoken captions expected per image")
    parser.add_argument("--max_drop_share", type=float, default=0.1,
                        help="Fail if a split loses more than this share of its utterances")
    return parser


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    setup_logging()
    prepare_flickr8k(args.corpus_dir, args.data_dir,
                     split_sizes={s: getattr(args, f"num_{s}") for s in FLICKR8K_SPLIT_SIZES},
                     captions_per_image=args.captions_per_image, max_drop_share=args.max_drop_share)


if __name__ == "__main__":
    main()
