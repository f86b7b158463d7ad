#!/usr/bin/env python3
"""Stage 6: pack a trained model for the ESPnet model zoo (zip with ESPnet's meta.yaml).

Example (from the recipe dir):
    python -m espnet_speechclip.bin.pack_model --exp_dir exp/speechclip_train_hybrid_plus \\
        --outpath exp/speechclip_train_hybrid_plus/packed_model.zip

The zip holds config.yaml, the selected checkpoint, RESULTS.md, results.json of every evaluated
split, and every file the config names for building the model (CLIP config and weights, reduced
vocabulary, upstream config), with the config's paths rewritten to their place in the archive.
Load it anywhere with ``SpeechCLIP.from_pretrained("packed_model.zip")``.
"""
import argparse

from espnet_speechclip.bin._cli import setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp_dir", required=True, help="ESPnet exp dir of stage 4 (config.yaml + *.pth)")
    parser.add_argument("--outpath", required=True, help="zip to write")
    parser.add_argument("--model_file", default=None, help="default: the config's best_model_criterion checkpoint")
    parser.add_argument("--search_dir", action="append", default=[],
                        help="where relative paths of the config are found (default: . then the recipe dir)")
    return parser


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    setup_logging()
    from espnet_speechclip.zoo import pack_model

    pack_model(args.exp_dir, args.outpath, model_file=args.model_file, search_dirs=args.search_dir)


if __name__ == "__main__":
    main()
