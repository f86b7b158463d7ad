"""Training throughput (utterances/s): cached CLIP image embeddings vs the frozen image tower every step.

Usage:
    tools/venv/bin/python bench/bench_train_throughput.py                      # recipe's tiny CLIP
    tools/venv/bin/python bench/bench_train_throughput.py --clip ViT-B-32      # a ViT-B/32 image tower
    tools/venv/bin/python bench/bench_train_throughput.py --quick              # 32 images, 4 steps
    tools/venv/bin/python bench/bench_train_throughput.py \\
        --data_dir egs2/spoken_shapes/speechclip1/dump/train                   # an existing data dir

Setting (issue 6, no target; the ratio cached / on-the-fly is reported):
  * data: a small SpokenShapes train set generated here with ``prepare_spoken_shapes`` (espeak-ng,
    ``--num_images`` images x 2 captions, deterministic), or ``--data_dir`` (wav.scp, utt2img,
    img.scp). Batches of ``--batch_size`` utterances sorted by length (ESPnet's ``sorted`` batches),
    in a fixed shuffled order, the same for both variants.
  * model: the SpokenShapes default, ``egs2/spoken_shapes/speechclip1/conf/train_hybrid_plus.yaml``
    (Hybrid+ on s3prl fbank + a 3-layer Transformer), built by ``SpeechCLIPTask.build_model``, Adam
    at the config's lr; the CLIP is the recipe's tiny CLIP architecture (``--clip tiny``) or
    open_clip's ViT-B-32 (``--clip ViT-B-32``), random weights (speed does not depend on them).
  * cached (what the recipe does): stage 3's ``dump_image_feats`` writes one .npy per image first
    (not timed: it runs once per corpus); each step reads speech and ``image_feats`` through
    ESPnet's ``ESPnetDataset`` (``sound`` and ``npy`` types) with the task's preprocessor.
  * on the fly: each step reads speech the same way, then opens the batch's images (PNG), applies
    CLIP's preprocessing and runs the frozen image tower (``encode_image``, no gradient).
  * each step = load + forward + backward + Adam step, in this process (``num_workers=0``: on 2 cores
    a loader worker would compete with the step for the same cores). The variants alternate step by
    step on one model, so both see the same load; one untimed warm-up step each.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import soundfile
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, print_result, ratio  # noqa: E402

RECIPE = REPO / "egs2/spoken_shapes/speechclip1"


def prepare_data(work: Path, num_images: int) -> Path:
    from espnet_speechclip.data.spoken_shapes import prepare_spoken_shapes

    prepare_spoken_shapes(work / "corpus", work / "data", num_train=num_images, num_dev=2, num_test=2, nj=2)
    return work / "data" / "train"


def build_clip(kind: str):
    from espnet_speechclip.clip_adapter import FrozenCLIP

    if kind == "tiny":
        return FrozenCLIP("spoken_shapes_tiny_clip", None, str(RECIPE / "conf/spoken_shapes_tiny_clip.json")), {
            "model_name": "spoken_shapes_tiny_clip", "model_config": str(RECIPE / "conf/spoken_shapes_tiny_clip.json")}
    return FrozenCLIP(kind, None), {"model_name": kind}


def build_model(clip_conf: Dict, vocab: Path, work: Path):
    from espnet_speechclip.tasks.speechclip import SpeechCLIPTask

    config = yaml.safe_load((RECIPE / "conf/train_hybrid_plus.yaml").read_text())
    # The recipe's paths are relative to its directory.
    config["upstream_conf"]["extra_conf"]["model_config"] = str(RECIPE / config["upstream_conf"]["extra_conf"]["model_config"])
    config["clip_conf"] = dict(clip_conf, pretrained=None)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    args = SpeechCLIPTask.get_parser().parse_args(["--config", str(work / "config.yaml"), "--clip_vocab", str(vocab)])
    torch.manual_seed(0)
    return SpeechCLIPTask.build_model(args), args


def make_batches(wav_scp: Dict[str, str], batch_size: int) -> List[List[str]]:
    lengths = {utt: soundfile.info(path).frames for utt, path in wav_scp.items()}
    ordered = sorted(lengths, key=lambda u: (-lengths[u], u))
    batches = [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]
    batches = [b for b in batches if len(b) == batch_size] or batches  # drop a short last batch
    order = np.random.default_rng(0).permutation(len(batches))
    return [batches[i] for i in order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", type=Path, default=None, help="existing data dir (default: generate one)")
    parser.add_argument("--num_images", type=int, default=96, help="images to generate (2 captions each)")
    parser.add_argument("--clip", default="tiny", help="tiny (the recipe's CLIP) or an open_clip name, e.g. ViT-B-32")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per variant")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="32 images, 4 steps: checks it runs")
    args = parser.parse_args()
    if args.quick:
        args.num_images, args.steps = 32, 4
    torch.set_num_threads(args.threads)

    from espnet2.train.collate_fn import CommonCollateFn
    from espnet2.train.dataset import ESPnetDataset

    from espnet_speechclip.clip_features import build_vocab, dump_image_feats, load_image_batch
    from espnet_speechclip.data.kaldi_dir import read_kaldi_map
    from espnet_speechclip.tasks.speechclip import SpeechCLIPTask

    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        data_dir = args.data_dir if args.data_dir is not None else prepare_data(work, args.num_images)
        prep_s = time.perf_counter() - start
        clip, clip_conf = build_clip(args.clip)
        start = time.perf_counter()
        dump_image_feats(clip, str(data_dir), str(work / "feats"))
        dump_s = time.perf_counter() - start
        build_vocab(clip, str(data_dir / "text"), str(work / "vocab.txt"))
        model, task_args = build_model(clip_conf, work / "vocab.txt", work)
        model.train()
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], **task_args.optim_conf)

        wav_scp = read_kaldi_map(data_dir / "wav.scp")
        utt2img, img_scp = read_kaldi_map(data_dir / "utt2img"), read_kaldi_map(data_dir / "img.scp")
        batches = make_batches(wav_scp, args.batch_size)
        preprocess = SpeechCLIPTask.build_preprocess_fn(task_args, train=True)
        collate = CommonCollateFn(float_pad_value=0.0, int_pad_value=-1, not_sequence=["image_feats"])
        cached_set = ESPnetDataset([(str(data_dir / "wav.scp"), "speech", "sound"),
                                    (str(work / "feats" / "image_feats.scp"), "image_feats", "npy")],
                                   preprocess=preprocess)
        speech_set = ESPnetDataset([(str(data_dir / "wav.scp"), "speech", "sound")], preprocess=preprocess)

        def load_cached(utts):
            return collate([cached_set[u] for u in utts])[1]

        def load_on_the_fly(utts):
            batch = collate([speech_set[u] for u in utts])[1]
            images = load_image_batch(clip, [(utt2img[u], img_scp[utt2img[u]]) for u in utts])
            batch["image_feats"] = clip.encode_image(images)
            return batch

        def step(load, utts) -> float:
            start = time.perf_counter()
            batch = load(utts)
            loss, _, _ = model(speech=batch["speech"], speech_lengths=batch["speech_lengths"],
                               image_feats=batch["image_feats"].float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return time.perf_counter() - start

        variants = {"cached": load_cached, "on_the_fly": load_on_the_fly}
        for load in variants.values():  # warm-up
            step(load, batches[0])
        times = {name: [] for name in variants}
        for i in range(args.steps):
            utts = batches[(i + 1) % len(batches)]
            for name, load in variants.items():
                times[name].append(step(load, utts))

    n_utts = args.steps * len(batches[0])
    speed = {name: n_utts / sum(t) for name, t in times.items()}
    print(f"SpokenShapes train set: {len(wav_scp)} utterances, {len(set(utt2img.values()))} images "
          f"({'generated in %.0f s' % prep_s if args.data_dir is None else data_dir}); Hybrid+ "
          f"(conf/train_hybrid_plus.yaml), CLIP {args.clip} (image {clip.model.visual.image_size}), batches of "
          f"{len(batches[0])}, {args.steps} timed steps per variant (alternating), torch {torch.__version__}, "
          f"threads={torch.get_num_threads()}; stage-3 dump of the embeddings took {dump_s:.1f} s (once per corpus)")
    print(f"{'variant':<44} {'utt/s':>7} {'median step s':>14}")
    for name, label in (("cached", "cached embeddings (image_feats npy, ESPnet)"),
                        ("on_the_fly", "frozen CLIP image tower every step")):
        print(f"{label:<44} {speed[name]:>7.1f} {np.median(times[name]):>14.3f}")
    speedup = speed["cached"] / speed["on_the_fly"]
    print(f"cached / on-the-fly throughput: {speedup:.2f}x")
    print_result("train_throughput", [ratio(f"training ({args.clip} CLIP): cached / on-the-fly utt/s", speedup)],
                 cached_utt_per_s=speed["cached"], on_the_fly_utt_per_s=speed["on_the_fly"], clip=args.clip,
                 steps=args.steps, batch_size=len(batches[0]), quick=args.quick)


if __name__ == "__main__":
    main()
