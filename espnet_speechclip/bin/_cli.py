"""Shared bits of the stage entry points: logging with timestamps, like ESPnet's bin scripts."""
import logging


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
