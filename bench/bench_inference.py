"""Inference floor: utterance embeddings of the full Hybrid+ model vs the frozen HuBERT upstream alone.

Usage:
    tools/venv/bin/python bench/bench_inference.py                 # 64 utts of 3-10 s, HuBERT base, ViT-B/32
    tools/venv/bin/python bench/bench_inference.py --quick         # 8 utts, 2 HuBERT layers: a smoke run

Setting (issue 6, target: full / upstream <= 1.10x):
  * upstream: HuBERT BASE architecture (7-layer conv extractor, 12 x 768, FFN 3072) with random
    weights, written once in s3prl's checkpoint format and loaded through ``hubert_local``, as the
    ``random_hubert`` upstream option does (``--layers`` changes the number of Transformer layers).
  * full model: ``egs2/flickr8k/speechclip1/conf/tuning/train_hybrid_plus_base.yaml`` (SpeechCLIP+
    Hybrid+ base: parallel branch + CIF cascaded branch + VQ bridge + CLIP text tower) built by
    ``SpeechCLIPTask.build_model``, with that upstream and a randomly initialised open_clip ViT-B-32
    (no weights can be downloaded here; speed does not depend on them) and a reduced vocabulary of
    ``--vocab_size`` token ids (Flickr8k's training captions give about 8k).
  * input: ``--num_utts`` noise waveforms with lengths uniform in [3, 10] s, sorted by length and
    run in batches of ``--batch_size``, under ``torch.inference_mode``, float32, CPU.
  * timed: the upstream alone (``model.upstream.hidden_states``: s3prl's HuBERT, all layers) and the
    whole ``model.encode_speech`` (upstream, weighted sum, both branches; the cascaded branch runs
    CIF, VQ and the CLIP text tower up to the last keyword).
  * CIF firing rate: random weights give alpha ~ 0.5, so CIF would fire at every other frame and
    always fill its 75 segments. A trained model fires ~0.05 times per frame (the quantity loss
    pulls sum(alpha) to 0.05 x frames), so by default the weight predictor's output layer is set
    to a constant alpha = ``--cif_rate`` (0.05); ``--cif_rate -1`` keeps the random weights (the
    75-segment worst case).
  * First one pass of each over all batches (the warm-up) measures peak RSS: the kernel's
    high-water mark (VmHWM) is reset before each pass, so each figure is that pass's own peak, the
    model's weights included. Then the two alternate batch by batch, ``--repeats`` times, each batch
    keeping its best time, so a change in the load of a shared machine hits both alike.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, peak_window, print_result, ratio, rss_mib  # noqa: E402

BASE_CONFIG = REPO / "egs2/flickr8k/speechclip1/conf/tuning/train_hybrid_plus_base.yaml"


def build_model(layers: int, vocab_size: int, work: Path):
    """The Hybrid+ base model with a random HuBERT-base upstream and a random ViT-B-32 CLIP."""
    from espnet_speechclip.tasks.speechclip import SpeechCLIPTask
    from espnet_speechclip.upstream import HUBERT_BASE

    # Special ids 0 / 49406 / 49407 (pad, SOT, EOT) are masked by the VQ bridge; skip them.
    ids = np.linspace(256, 49405, vocab_size).astype(int)
    (work / "vocab.txt").write_text("".join(f"{i}\n" for i in ids))
    config = yaml.safe_load(BASE_CONFIG.read_text())
    config["upstream_conf"] = {"random_hubert": dict(HUBERT_BASE, encoder_layers=layers), "frozen": True}
    config["clip_conf"] = {"model_name": "ViT-B-32", "pretrained": None}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    args = SpeechCLIPTask.get_parser().parse_args(
        ["--config", str(work / "config.yaml"), "--clip_vocab", str(work / "vocab.txt")])
    torch.manual_seed(0)
    return SpeechCLIPTask.build_model(args).eval()


def set_cif_rate(model, rate: float) -> None:
    """Constant alpha = rate: the firing rate of a trained SpeechCLIP+ model (see the docstring)."""
    segmenter = model.cascaded.segmenter
    if not segmenter.has_cif_weights:
        raise ValueError(f"--cif_rate needs a CIF segmenter, the config builds {type(segmenter).__name__}")
    # Both weight predictors (cif.CIFWeightPredictor, cif_parts.ReferenceCIFWeights) end in proj -> sigmoid.
    proj = segmenter.weight_predictor.proj
    with torch.no_grad():
        proj.weight.zero_()
        proj.bias.fill_(float(np.log(rate / (1.0 - rate))))


def make_batches(num_utts: int, batch_size: int, min_s: float, max_s: float) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(0)
    lengths = np.sort((rng.uniform(min_s, max_s, num_utts) * 16000).astype(int))[::-1]
    batches = []
    for start in range(0, num_utts, batch_size):
        lens = torch.tensor(lengths[start:start + batch_size].copy())
        wav = torch.zeros(len(lens), int(lens.max()))
        for i, n in enumerate(lens.tolist()):
            wav[i, :n] = torch.from_numpy(0.1 * rng.standard_normal(n).astype(np.float32))
        batches.append((wav, lens))
    return batches


def run_pass(fn, batches) -> Dict[str, float]:
    record: Dict[str, float] = {}
    with torch.inference_mode(), peak_window(record):
        for wav, lens in batches:
            fn(wav, lens)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_utts", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--min_seconds", type=float, default=3.0)
    parser.add_argument("--max_seconds", type=float, default=10.0)
    parser.add_argument("--layers", type=int, default=12, help="HuBERT Transformer layers (base: 12)")
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--cif_rate", type=float, default=0.05,
                        help="constant CIF alpha (trained-model rate); -1 keeps the random weights")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes; each batch keeps its best")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="8 utterances, 2 layers, 1 round: checks it runs")
    args = parser.parse_args()
    if args.quick:
        args.num_utts, args.layers, args.repeats = 8, 2, 1
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        # The random HuBERT checkpoint (~380 MB for base) goes to a throw-away cache.
        os.environ["SPEECHCLIP_CACHE"] = tmp
        rss_before = rss_mib()
        model = build_model(args.layers, args.vocab_size, Path(tmp))
    rss_model = rss_mib()
    if args.cif_rate > 0:
        set_cif_rate(model, args.cif_rate)
    batches = make_batches(args.num_utts, args.batch_size, args.min_seconds, args.max_seconds)
    audio_s = sum(float(lens.sum()) for _, lens in batches) / 16000
    n_up = sum(p.numel() for p in model.upstream.parameters())
    n_all = sum(p.numel() for p in model.parameters())
    print(f"{args.num_utts} utterances, {args.min_seconds:g}-{args.max_seconds:g} s ({audio_s:.0f} s of audio), "
          f"batches of {args.batch_size}; HuBERT base architecture with {args.layers} layers (random weights, "
          f"{n_up / 1e6:.1f} M parameters); full Hybrid+ base model {n_all / 1e6:.1f} M parameters "
          f"(random ViT-B-32 CLIP, vocabulary {args.vocab_size}, CIF alpha "
          f"{'random' if args.cif_rate <= 0 else args.cif_rate}); torch {torch.__version__}, "
          f"threads={torch.get_num_threads()}, per batch best of {args.repeats}")
    print(f"RSS: {rss_before:.0f} MiB before building, {rss_model:.0f} MiB with the model built")

    upstream = lambda wav, lens: model.upstream.hidden_states(wav, lens)  # noqa: E731
    segments = []

    def full(wav, lens):
        out = model.encode_speech(wav, lens)
        segments.append(out["cascaded"]["keyword_lengths"].float().mean().item())
        return out["embedding"]

    # Peak RSS: one pass of each over all batches, each in its own VmHWM window (also the warm-up).
    peaks = {name: run_pass(fn, batches) for name, fn in (("upstream", upstream), ("full", full))}
    # Time: the two alternate batch by batch, so a change in the machine's load hits both alike;
    # each batch keeps its best of --repeats.
    per_batch = {name: [float("inf")] * len(batches) for name in peaks}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for i, (wav, lens) in enumerate(batches):
                for name, fn in (("upstream", upstream), ("full", full)):
                    start = time.perf_counter()
                    fn(wav, lens)
                    per_batch[name][i] = min(per_batch[name][i], time.perf_counter() - start)
    best = {name: dict(peaks[name], wall_s=sum(per_batch[name])) for name in peaks}

    print(f"{'pass':<34} {'time s':>8} {'utt/s':>7} {'x real time':>11} {'peak RSS MiB':>13}")
    for name, label in (("upstream", "frozen upstream alone (s3prl)"), ("full", "full Hybrid+ (encode_speech)")):
        r = best[name]
        print(f"{label:<34} {r['wall_s']:>8.2f} {args.num_utts / r['wall_s']:>7.2f} "
              f"{audio_s / r['wall_s']:>11.1f} {r['peak_rss_mib']:>13.0f}")
    time_ratio = best["full"]["wall_s"] / best["upstream"]["wall_s"]
    mem_ratio = best["full"]["peak_rss_mib"] / best["upstream"]["peak_rss_mib"]
    print(f"cascaded segments per utterance (mean over batches): {np.mean(segments):.1f}")
    print(f"full / upstream time: {time_ratio:.3f}x (target <= 1.10x); peak RSS: {mem_ratio:.3f}x"
          + ("" if best["full"]["peak_is_window"] else " (whole-process peaks: VmHWM could not be reset)"))
    print_result("inference", [ratio("inference: full Hybrid+ / upstream time", time_ratio, "<= 1.10"),
                               ratio("inference: full Hybrid+ / upstream peak RSS", mem_ratio)],
                 upstream_s=best["upstream"]["wall_s"], full_s=best["full"]["wall_s"],
                 upstream_peak_rss_mib=best["upstream"]["peak_rss_mib"],
                 full_peak_rss_mib=best["full"]["peak_rss_mib"], layers=args.layers, num_utts=args.num_utts, cif_rate=args.cif_rate,
                 audio_seconds=audio_s, quick=args.quick)


if __name__ == "__main__":
    main()
