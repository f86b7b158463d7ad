#!/usr/bin/env python3
"""Stage 3: the reduced CLIP vocabulary (one CLIP token id per line, in row order) for the VQ bridge.

Three sources, one output format:
  --rule train (default)  ids of the TRAIN captions only, ascending, pad/SOT/EOT left out;
  --rule reference        SpeechCLIP's rule (avssl/data/*_stat/stat_textCLIP_input.py): the captions
                          of EVERY split, test included, padded to 77 tokens, rows by descending count
                          (pad, SOT and EOT included); pass the text file of each split;
  --from_reference_stats  the reference repository's own text_clip_vocab_usage_byfreq.npy (or .txt).

Examples:
    python -m espnet_speechclip.bin.build_clip_vocab --text data/train/text --output exp/clip/vocab.txt \\
        --clip_model_name ViT-B-32 --clip_pretrained openai
    python -m espnet_speechclip.bin.build_clip_vocab --rule reference --output exp/clip/vocab.txt \\
        --text data/train/text data/dev/text data/test/text
    python -m espnet_speechclip.bin.build_clip_vocab --output exp/clip/vocab.txt \\
        --from_reference_stats SpeechCLIP/avssl/data/flickr_stat/text_clip_vocab_usage_byfreq.npy

Without --clip_pretrained the CLIP keeps random weights: enough here, only its tokenizer and
vocabulary size are used.
"""
import argparse

from espnet_speechclip.bin._cli import setup_logging
from espnet_speechclip.bin._clip_args import add_clip_arguments, build_clip
from espnet_speechclip.clip_features import build_reference_vocab, build_vocab, convert_reference_vocab_stats


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", nargs="+", default=None,
                        help="Kaldi-style text file(s): the training split's (--rule train) or every split's "
                             "(--rule reference)")
    parser.add_argument("--rule", choices=("train", "reference"), default="train",
                        help="train: train captions only; reference: SpeechCLIP's all-split count order")
    parser.add_argument("--strip_final_period", action=argparse.BooleanOptionalAction, default=True,
                        help="--rule reference: drop a caption's final '.' as the Flickr8k stat script does "
                             "(the SpokenCOCO one does not: --no-strip_final_period)")
    parser.add_argument("--from_reference_stats", default=None,
                        help="Convert the reference's text_clip_vocab_usage_byfreq.npy/.txt instead")
    parser.add_argument("--output", required=True, help="Output vocabulary (one 'id piece' per line)")
    add_clip_arguments(parser)
    return parser


def main(cmd=None):
    parser = get_parser()
    args = parser.parse_args(cmd)
    if args.from_reference_stats is not None:
        if args.text is not None or args.rule != "train":
            parser.error("--from_reference_stats takes the vocabulary from the file: no --text, no --rule")
    elif args.text is None:
        parser.error("--text is required (or --from_reference_stats)")
    elif args.rule == "train" and len(args.text) != 1:
        parser.error(f"--rule train takes the training split's text only, got {len(args.text)} files")
    if args.rule != "reference" and not args.strip_final_period:
        parser.error("--no-strip_final_period applies to --rule reference only")
    setup_logging()
    clip = build_clip(args)
    if args.from_reference_stats is not None:
        convert_reference_vocab_stats(clip, args.from_reference_stats, args.output)
    elif args.rule == "reference":
        build_reference_vocab(clip, args.text, args.output, strip_final_period=args.strip_final_period)
    else:
        build_vocab(clip, args.text[0], args.output)


if __name__ == "__main__":
    main()
