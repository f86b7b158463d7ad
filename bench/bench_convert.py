#!/usr/bin/env python
"""Cost of converting a large published checkpoint (HuBERT large + ViT-L/14, ~3 GB).

    tools/venv/bin/python bench/bench_convert.py [--workdir /tmp/bench_convert] [--keep]

Writes a stand-in of the SpokenCOCO large Hybrid+ checkpoint at full size (test/official_fixtures.py:
24 HuBERT-large layers, the ViT-L/14 image tower at its real width, every tensor in its own
storage), then runs ``python -m espnet_speechclip.bin.convert_official`` on it in a fresh process
and reports its wall time and peak resident memory (the child's ru_maxrss) against the
checkpoint's size. Targets (issue): under a minute on 2 cores, peak memory under twice the size.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/bench_convert")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint and the exp dir")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    import official_fixtures as fixtures

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    record = next(r for r in fixtures.PUBLISHED if r.variant == "Hybrid+" and r.size == "large" and r.corpus == "coco")
    fixtures.VISION_WIDTH = 1024  # ViT-L/14's image tower at its real width (the fixtures shrink it)
    ckpt = work / "model.ckpt"
    start = time.time()
    fixtures.write_reference_checkpoint(ckpt, record, hubert_layers=24, clip_layers=24, compact=False,
                                        vocab_ids=fixtures.default_vocab_ids(rows=fixtures.REDUCED_VOCAB_ROWS["coco"]))
    written = time.time() - start
    size = ckpt.stat().st_size
    start = time.time()
    subprocess.run([sys.executable, "-m", "espnet_speechclip.bin.convert_official", "--ckpt", str(ckpt),
                    "--out_dir", str(work / "exp")], check=True, capture_output=True)
    wall = time.time() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kB on Linux
    result = {"checkpoint_bytes": size, "convert_seconds": round(wall, 1), "peak_rss_bytes": peak,
              "peak_over_size": round(peak / size, 2), "fixture_write_seconds": round(written, 1)}
    print(json.dumps(result, indent=1))
    print(f"converted {size / 2**30:.2f} GiB in {wall:.1f} s, peak RSS {peak / 2**30:.2f} GiB "
          f"= {peak / size:.2f} x the checkpoint (targets: < 60 s, < 2 x)")
    if args.json:
        Path(args.json).write_text(json.dumps(result))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
