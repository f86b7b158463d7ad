#!/usr/bin/env python3
"""Stage 7: upload a packed model (stage 6) to the Hugging Face hub with a generated model card.

Example:
    python -m espnet_speechclip.bin.upload_model --packed exp/speechclip_hybrid_plus/packed_model.zip \\
        --hf_repo my-org/speechclip_spoken_shapes_hybrid_plus [--dry_run_dir exp/speechclip_hybrid_plus/hf_upload]

With --dry_run_dir, nothing is uploaded: that dir receives exactly what would be (the unpacked
model with meta.yaml at the top, as espnet_model_zoo expects, and README.md). Without a token
(`hf auth login` or HF_TOKEN) or a reachable hub it exits with status 1 and one message, having
changed nothing on disk.
"""
import argparse
import logging
import sys

from espnet_speechclip.bin._cli import setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packed", required=True, help="zip written by stage 6")
    parser.add_argument("--hf_repo", required=True, help="<user or org>/<name> on the Hugging Face hub")
    parser.add_argument("--dry_run_dir", default=None, help="write the folder to upload here instead of uploading")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    return parser


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    setup_logging()
    from espnet_speechclip.zoo import UploadError, upload_model

    try:
        upload_model(args.packed, args.hf_repo, dry_run_dir=args.dry_run_dir, private=args.private)
    except UploadError as err:
        logging.error("%s", err)
        sys.exit(1)


if __name__ == "__main__":
    main()
