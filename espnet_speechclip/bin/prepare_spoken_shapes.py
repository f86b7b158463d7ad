"""Generate the SpokenShapes corpus and its Kaldi-style data dirs (recipe stage 1).

Images of coloured shapes with templated captions spoken by espeak-ng (word times exact);
see ``espnet_speechclip.data.spoken_shapes``. Needs the Debian packages espeak-ng and
libespeak-ng1.

Example::

    python -m espnet_speechclip.bin.prepare_spoken_shapes \\
        --corpus_dir downloads/spoken_shapes --data_dir data --nj 2
    # -> data/{train,dev,test,dev_unseen}/{wav.scp,text,utt2img,img.scp,utt2spk,spk2utt,word_align}

``--small`` makes a tiny corpus (40 / 10 / 12 / 10 images) for smoke tests.
"""
from __future__ import annotations

import argparse
import logging
import time

from espnet_speechclip.data.spoken_shapes import SMALL_SIZES, prepare_spoken_shapes


def get_parser() -> argparse.ArgumentParser:
    """Command-line options; defaults are the full corpus (3000 / 150 / 250 / 150 images)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus_dir", required=True, help="where images/ and wav/ are written")
    parser.add_argument("--data_dir", required=True, help="where <split>/ Kaldi dirs are written")
    parser.add_argument("--small", action="store_true",
                        help=f"tiny corpus {SMALL_SIZES} (overrides --num_*)")
    parser.add_argument("--num_train", type=int, default=3000, help="train images")
    parser.add_argument("--num_dev", type=int, default=150, help="dev images")
    parser.add_argument("--num_test", type=int, default=250, help="test images")
    parser.add_argument("--num_dev_unseen", type=int, default=150,
                        help="images of dev_unseen, a dev split spoken by voices in neither train nor test "
                             "(0: no such split)")
    parser.add_argument("--captions_per_image", type=int, default=2,
                        help="spoken captions per image, each by a different speaker")
    parser.add_argument("--train_captions_per_image", type=int, default=None,
                        help="the train split's count alone (default: --captions_per_image)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (output is deterministic)")
    parser.add_argument("--nj", type=int, default=2, help="parallel synthesis workers")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    sizes = dict(SMALL_SIZES) if args.small else {
        "num_train": args.num_train, "num_dev": args.num_dev, "num_test": args.num_test,
        "num_dev_unseen": args.num_dev_unseen}
    start = time.perf_counter()
    counts = prepare_spoken_shapes(args.corpus_dir, args.data_dir, **sizes,
                                   captions_per_image=args.captions_per_image,
                                   train_captions_per_image=args.train_captions_per_image,
                                   seed=args.seed, nj=args.nj)
    hours = sum(c["seconds"] for c in counts.values()) / 3600
    logging.info("SpokenShapes ready in %.1f s: %s, %.2f h of speech",
                 time.perf_counter() - start, counts, hours)


if __name__ == "__main__":
    main()
