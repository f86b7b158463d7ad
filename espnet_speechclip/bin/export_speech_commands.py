#!/usr/bin/env python3
"""Stage 8, data: SpokenShapes isolated words in the Speech Commands v0.01 layout (s3prl's KS task).

Example:
    python -m espnet_speechclip.bin.export_speech_commands --out_dir dump/speech_commands \\
        --num_train_speakers 24 --num_dev_speakers 4 --num_test_speakers 8

Writes <out_dir>/train (with _background_noise_) and <out_dir>/test, and class_map.txt (which
SpokenShapes word fills which command slot). Speech by espeak-ng, 1 s clips at 16 kHz.
"""
import argparse

from espnet_speechclip.bin._cli import setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--num_train_speakers", type=int, default=24, help="SpokenShapes training voices used")
    parser.add_argument("--num_dev_speakers", type=int, default=4, help="of those, held out for dev")
    parser.add_argument("--num_test_speakers", type=int, default=8, help="SpokenShapes test voices used")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nj", type=int, default=2)
    return parser


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    setup_logging()
    from espnet_speechclip.s3prl_upstream.speech_commands import export_speech_commands

    export_speech_commands(args.out_dir, num_train_speakers=args.num_train_speakers,
                           num_dev_speakers=args.num_dev_speakers, num_test_speakers=args.num_test_speakers,
                           seed=args.seed, nj=args.nj)


if __name__ == "__main__":
    main()
