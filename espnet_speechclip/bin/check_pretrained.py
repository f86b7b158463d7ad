#!/usr/bin/env python3
"""Before any work: can the pretrained CLIP and speech upstream of a training config be loaded?

Run by the real-corpus run.sh scripts before stage 1, so that a missing checkpoint stops the run
with one message (the file to fetch and the option to set) instead of after hours of data
preparation. A local path must exist; an open_clip tag or s3prl hub name is downloaded into its
cache now (the later stages find it there). Prints the CLIP options for speechclip.sh, taken
from the config's ``clip_conf`` unless given here, so stage 3 embeds images with the very CLIP
the training uses. Options it does not know (the rest of run.sh's) are ignored.

Example::

    python -m espnet_speechclip.bin.check_pretrained --train_config conf/train.yaml --stop_stage 5
    # -> --clip_model_name ViT-B-32 --clip_pretrained openai
"""
import argparse
import logging
import shlex
import sys

import yaml

from espnet_speechclip.bin._cli import setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--train_config", "--train-config", required=True, help="Training YAML")
    parser.add_argument("--clip_model_name", "--clip-model-name", default=None,
                        help="Overrides clip_conf.model_name")
    parser.add_argument("--clip_pretrained", "--clip-pretrained", default=None,
                        help="Overrides clip_conf.pretrained (open_clip tag or local .pt)")
    parser.add_argument("--clip_model_config", "--clip-model-config", default=None,
                        help="Overrides clip_conf.model_config")
    parser.add_argument("--model_dir", "--model-dir", default=None,
                        help="exp dir of a model not trained here (stages 5-8): its config.yaml replaces "
                             "--train_config, its files named relative to it")
    parser.add_argument("--stage", type=int, default=1, help="First stage to run")
    parser.add_argument("--stop_stage", "--stop-stage", type=int, default=5, help="Last stage to run")
    return parser


def main(cmd=None):
    args, _ = get_parser().parse_known_args(cmd)
    setup_logging()
    if args.model_dir:
        from pathlib import Path

        from espnet_speechclip.zoo import resolve_config_paths

        args.train_config = str(Path(args.model_dir) / "config.yaml")
        with open(args.train_config) as f:
            config = resolve_config_paths(yaml.safe_load(f) or {}, [Path.cwd(), Path(args.model_dir)])
    else:
        with open(args.train_config) as f:
            config = yaml.safe_load(f) or {}
    clip_conf = config.get("clip_conf") or {}
    name = args.clip_model_name or clip_conf.get("model_name", "ViT-B-32")
    pretrained = args.clip_pretrained or clip_conf.get("pretrained")
    model_config = args.clip_model_config or clip_conf.get("model_config")
    # Imported here: torch/open_clip/s3prl take seconds to import and --help should not wait.
    from espnet_speechclip.clip_adapter import check_clip_weights
    from espnet_speechclip.upstream import _LOCAL_NAMES, S3PRLWeightedSumUpstream, check_upstream_weights

    try:
        if pretrained is None:
            raise ValueError("clip_conf.pretrained is not set: name an open_clip tag or a local checkpoint")
        if args.stage <= 5 and args.stop_stage >= 3:
            check_clip_weights(name, pretrained)
        upstream_conf = dict(config.get("upstream_conf") or {})
        if args.stage <= 4 <= args.stop_stage and config.get("upstream") == "reference_hubert":
            check_upstream_weights("hubert_local", upstream_conf.get("path_or_url"))  # s3prl's converted format
        elif args.stage <= 4 <= args.stop_stage:
            upstream = upstream_conf.get("name", "hubert")
            check_upstream_weights(upstream, upstream_conf.get("path_or_url"), upstream_conf.get("extra_conf"))
            if upstream not in _LOCAL_NAMES and "random_hubert" not in upstream_conf:
                S3PRLWeightedSumUpstream(**upstream_conf)  # s3prl downloads hub checkpoints on build
    except (FileNotFoundError, ImportError, ValueError) as err:
        logging.error("%s: %s", args.train_config, err)
        sys.exit(1)
    clip_args = ["--clip_model_name", name, "--clip_pretrained", str(pretrained)]
    if model_config:
        clip_args += ["--clip_model_config", model_config]
    print(shlex.join(clip_args))  # the last line of stdout: run.sh reads it


if __name__ == "__main__":
    main()
