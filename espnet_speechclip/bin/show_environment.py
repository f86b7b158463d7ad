#!/usr/bin/env python3
"""Stage 5: print the "## Environments" block that opens the recipe's RESULTS.md (ESPnet style):
date, Python / ESPnet / PyTorch / s3prl / open_clip versions, CPU cores, Git hash of this checkout.

Example:
    python -m espnet_speechclip.bin.show_environment >> exp/speechclip_train_hybrid_plus/RESULTS.md
"""
import argparse

from espnet_speechclip.environment import environment_markdown


def get_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)


def main(cmd=None):
    get_parser().parse_args(cmd)
    print("\n".join(environment_markdown()))


if __name__ == "__main__":
    main()
