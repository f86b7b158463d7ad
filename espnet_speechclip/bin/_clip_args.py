"""The three options that select a frozen CLIP, shared by the stage 3 and 5 entry points."""
import argparse

from espnet_speechclip.clip_adapter import FrozenCLIP


def add_clip_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clip_model_name", default="ViT-B-32", help="open_clip model name")
    parser.add_argument("--clip_pretrained", default=None, help="open_clip pretrained tag or local .pt")
    parser.add_argument("--clip_model_config", default=None, help="open_clip model config JSON (small CLIPs)")


def build_clip(args: argparse.Namespace) -> FrozenCLIP:
    return FrozenCLIP(model_name=args.clip_model_name, pretrained=args.clip_pretrained,
                      model_config=args.clip_model_config)
