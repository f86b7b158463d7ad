"""Convert a published SpeechCLIP / SpeechCLIP+ checkpoint (PyTorch-Lightning .ckpt) into an exp dir.

Usage:
    python -m espnet_speechclip.bin.convert_official --ckpt parallel_base.ckpt --out_dir exp/parallel_base \\
        [--clip_pt ViT-B-32.pt] [--hubert hubert_base_ls960.pt] [--vocab_stats text_clip_vocab_usage_byfreq.npy]

The exp dir then works with every stage and API of this plugin (see README, 'Published models').
"""
from __future__ import annotations

import argparse
import logging
import sys

from espnet_speechclip.official_convert import convert


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a published .ckpt (README lists the 15)")
    parser.add_argument("--out_dir", required=True, help="exp dir to create (must not exist)")
    parser.add_argument("--clip_pt", default=None,
                        help="CLIP weights: OpenAI's .pt or an open_clip state dict (default: the 'openai' tag, "
                             "downloaded by open_clip where a network exists)")
    parser.add_argument("--clip_model_name", default=None, help="open_clip model name (default: from the checkpoint)")
    parser.add_argument("--clip_model_config", default=None, help="open_clip model-config JSON for a custom CLIP")
    parser.add_argument("--hubert", default=None,
                        help="s3prl converted HuBERT checkpoint to use instead of the weights in the .ckpt")
    parser.add_argument("--vocab_stats", default=None,
                        help="the reference repo's text_clip_vocab_usage_byfreq.npy, when the reduced vocabulary "
                             "cannot be recovered from the CLIP weights")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        out = convert(args.ckpt, args.out_dir, args.clip_pt, args.clip_model_name, args.clip_model_config,
                      args.hubert, args.vocab_stats)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as err:
        logging.error("%s", err)
        sys.exit(1)
    print(out)


if __name__ == "__main__":
    main()
