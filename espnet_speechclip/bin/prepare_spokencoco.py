#!/usr/bin/env python3
"""Stage 1 of the SpokenCOCO recipe: Kaldi-style dirs on the Karpathy split of MSCOCO 2014.

Example::

    python -m espnet_speechclip.bin.prepare_spokencoco --spokencoco_dir /data/SpokenCOCO \\
        --mscoco_dir /data/mscoco --data_dir data
    # -> data/{train,dev,test}/{wav.scp,text,utt2img,img.scp,utt2spk,spk2utt,problems.txt}, data/problems.txt

The expected layouts are in ``espnet_speechclip.data.spoken_coco``. The Karpathy split sizes
(113287 train+restval / 5000 val / 5000 test images) are checked; pass smaller ones only for test corpora.
"""
import argparse

from espnet_speechclip.bin._cli import setup_logging
from espnet_speechclip.data.spoken_coco import KARPATHY_SPLIT_SIZES, prepare_spoken_coco


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spokencoco_dir", required=True, help="SpokenCOCO root (SPOKENCOCO in db.sh)")
    parser.add_argument("--mscoco_dir", required=True, help="MSCOCO root with train2014/ val2014/ (MSCOCO in db.sh)")
    parser.add_argument("--karpathy_split", default=None,
                        help="Karpathy's dataset_coco.json (default: <mscoco_dir>/dataset_coco.json)")
    parser.add_argument("--data_dir", required=True, help="Where <split>/ Kaldi dirs are written")
    for split, size in KARPATHY_SPLIT_SIZES.items():
        parser.add_argument(f"--num_{split}", type=int, default=size, help=f"Images in the {split} split")
    parser.add_argument("--max_drop_share", type=float, default=0.1,
                        help="Fail if a split loses more than this share of its utterances")
    return parser


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    setup_logging()
    prepare_spoken_coco(args.spokencoco_dir, args.mscoco_dir, args.data_dir, karpathy_split=args.karpathy_split,
                        split_sizes={s: getattr(args, f"num_{s}") for s in KARPATHY_SPLIT_SIZES},
                        max_drop_share=args.max_drop_share)


if __name__ == "__main__":
    main()
