#!/usr/bin/env python3
"""Copy a recipe's generated RESULTS.md into README.md between the results markers.

Usage: tools/update_readme_results.py egs2/spoken_shapes/speechclip1/exp/speechclip_train_hybrid_plus/RESULTS.md
The README's figures thus always come from a real run's output, never typed by hand.
"""
import sys
from pathlib import Path

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def main(results: str, readme: str = "README.md", heading_shift: int = 2) -> None:
    body = Path(results).read_text()
    body = "\n".join(("#" * heading_shift + line) if line.startswith("#") else line for line in body.splitlines())
    text = Path(readme).read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: markers {BEGIN} / {END} not found")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    Path(readme).write_text(f"{head}{BEGIN}\n{body}\n{END}{tail}")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
