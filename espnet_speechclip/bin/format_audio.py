#!/usr/bin/env python3
"""Stage 2: check, repair and filter the audio and images of a data dir into a dump dir.

Example:
    python -m espnet_speechclip.bin.format_audio --data_dir data/train --out_dir dump/train --nj 2

Writes <out_dir>/{wav.scp,speech_shape,text,utt2img,img.scp,utt2spk,spk2utt,word_align,problems.txt}
(plus wav/ and images/ for repaired copies). problems.txt lists every dropped, repaired or ignored
utterance / image as id<TAB>action<TAB>reason; the run fails when the split becomes empty or more
than --max_drop_share of its utterances is dropped.
"""
import argparse

from espnet_speechclip.bin._cli import setup_logging
from espnet_speechclip.data.audio_format import format_data_dir


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="Kaldi-style input data dir")
    parser.add_argument("--out_dir", required=True, help="Output dump dir")
    parser.add_argument("--fs", type=int, default=16000, help="Target sample rate")
    parser.add_argument("--min_sec", type=float, default=0.1, help="Shorter utterances are dropped")
    parser.add_argument("--max_sec", type=float, default=60.0, help="Longer utterances are dropped")
    parser.add_argument("--max_drop_share", type=float, default=0.1, help="Fail if more than this share is dropped")
    parser.add_argument("--nj", type=int, default=1, help="Parallel jobs (audio and image checks)")
    return parser


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    setup_logging()
    format_data_dir(args.data_dir, args.out_dir, fs=args.fs, min_sec=args.min_sec, max_sec=args.max_sec,
                    max_drop_share=args.max_drop_share, nj=args.nj)


if __name__ == "__main__":
    main()
