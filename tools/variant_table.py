#!/usr/bin/env python3
"""One markdown table comparing trained variants, read from their stage-4/5 outputs.

Usage: tools/variant_table.py [--split test] [--dev_split dev] EXP_DIR [EXP_DIR ...]

Each EXP_DIR is a stage-4 exp dir with eval_<split>/results.json (stage 5) and train.log. The rows
give speech->image R@1 of the model's retrieval embedding with its bootstrap interval, the ratio to
the CLIP topline, R@1 on the dev split, keyword F1 and CIF boundary F1 (with chance), and the
training time from ESPnet's "# Accounting: time=" line. Nothing is typed by hand.
"""
import argparse
import json
import re
from pathlib import Path


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def row(exp: Path, split: str, dev_split: str) -> str:
    test = json.loads((exp / f"eval_{split}" / "results.json").read_text())
    dev_file = exp / f"eval_{dev_split}" / "results.json"
    dev = json.loads(dev_file.read_text()) if dev_file.is_file() else None
    r1, top = test["speech_to_image"]["r1"], test.get("clip_text_to_image", {}).get("r1", 0.0)  # no text: no topline
    ci = test.get("bootstrap_ci95", {}).get("speech_to_image_r1")
    branches = ", ".join(f"{name} {_pct(res['speech_to_image']['r1'])}" for name, res in test["branches"].items())
    keyword = test.get("keyword", {}).get("f1")
    boundary = test.get("cif_boundary", {}).get("f1")
    boundary_chance = test.get("cif_boundary_chance", {}).get("f1")
    match = re.search(r"# Accounting: time=(\d+)", (exp / "train.log").read_text()) if (exp / "train.log").is_file() else None
    cells = [f"`{exp.name}`", test["retrieval_branch"], _pct(r1) + (f" ({_pct(ci[0])}-{_pct(ci[1])})" if ci else ""),
             f"{r1 / top:.2f} ×" if top > 0 else "-", branches,
             _pct(dev["speech_to_image"]["r1"]) if dev else "-", _pct(keyword),
             "-" if boundary is None else f"{_pct(boundary)} ({_pct(boundary_chance)})",
             f"{match.group(1)} s" if match else "-"]
    return "|" + "|".join(cells) + "|"


def main(cmd=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="test")
    parser.add_argument("--dev_split", default="dev")
    parser.add_argument("exp_dirs", nargs="+", type=Path)
    args = parser.parse_args(cmd)
    print(f"|exp|retrieval embedding|{args.split} speech→image R@1 (95 % interval)|× topline|each branch|"
          f"{args.dev_split} R@1|keyword F1|boundary F1 (chance)|stage 4|")
    print("|---|---|---|---|---|---|---|---|---|")
    for exp in args.exp_dirs:
        print(row(exp, args.split, args.dev_split))


if __name__ == "__main__":
    main()
