#!/usr/bin/env python3
"""Stage 8: s3prl's speech_commands downstream (SUPERB KS protocol) on a trained model and on its
bare upstream; both accuracies go side by side into RESULTS.md.

Example:
    python -m espnet_speechclip.bin.s3prl_probe --model exp/speechclip_hybrid_plus/packed_model.zip \\
        --sc_root dump/speech_commands --expdir exp/speechclip_hybrid_plus/probe \\
        --results_md exp/speechclip_hybrid_plus/RESULTS.md --total_steps 300 --device cpu

--model is anything SpeechCLIP.from_pretrained takes (packed zip, exp dir, zoo tag). The s3prl runs
are in <expdir>/speechclip_local and <expdir>/speechclip_upstream_local (log.log, checkpoints);
<expdir>/results.json and <expdir>/RESULTS.md hold the figures.
"""
import argparse
import json
from pathlib import Path

from espnet_speechclip.bin._cli import setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="packed zip, exp dir or model-zoo tag")
    parser.add_argument("--sc_root", required=True, help="output of export_speech_commands")
    parser.add_argument("--expdir", required=True)
    parser.add_argument("--results_md", default=None, help="RESULTS.md to add the probe's table to")
    parser.add_argument("--total_steps", type=int, default=300, help="SUPERB runs 200000; a few hundred on CPU")
    parser.add_argument("--eval_step", type=int, default=100, help="dev evaluation (checkpoint selection) every N steps")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--upstreams", nargs="+", default=["speechclip_local", "speechclip_upstream_local"])
    return parser


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    setup_logging()
    from espnet_speechclip.s3prl_upstream.probe import probe, results_section, write_results

    results = {name: probe(args.model, name, args.sc_root, str(Path(args.expdir) / name), args.total_steps,
                           args.eval_step, args.device, args.batch_size, args.num_workers)
               for name in args.upstreams}
    (Path(args.expdir) / "results.json").write_text(json.dumps(results, indent=2))
    section = results_section(results, args.sc_root)
    (Path(args.expdir) / "RESULTS.md").write_text(section)
    if args.results_md:
        write_results(args.results_md, section)


if __name__ == "__main__":
    main()
