"""SpokenCOCO + MSCOCO 2014 images, Karpathy split -> Kaldi-style dirs ``train``, ``dev``, ``test``.

Expected layout (``SPOKENCOCO`` and ``MSCOCO`` in db.sh)::

    $SPOKENCOCO/SpokenCOCO_train.json, SpokenCOCO_val.json
        {"data": [{"image": "val2014/COCO_val2014_000000325114.jpg",
                   "captions": [{"text": ..., "speaker": ..., "uttid": ..., "wav": "wavs/val/0/<uttid>.wav"}]}]}
    $SPOKENCOCO/wavs/{train,val}/<n>/<uttid>.wav        (SpokenCOCO.tar.gz, MIT CSAIL)
    $MSCOCO/train2014/*.jpg, $MSCOCO/val2014/*.jpg      (MSCOCO 2014 train/val images)
    $MSCOCO/dataset_coco.json                           Karpathy split (caption_datasets.zip)
        {"images": [{"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg",
                     "split": "train|restval|val|test", ...}]}

SpokenCOCO's own train/val files follow MSCOCO's 2014 train/val; SpeechCLIP reports on the
Karpathy split instead (the reference code re-splits the SpokenCOCO entries by image file name with
Karpathy's ``dataset_coco.json``), as done here: ``train`` = train + restval (113,287 images),
``dev`` = val (5,000), ``test`` = test (5,000). Those sizes are asserted on the split file; every
image or wav that is missing, and every entry whose image is in no split, is listed by name in
``problems.txt`` and the rest is kept.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, Mapping

from espnet_speechclip.data.corpus_split import ProblemList, SplitCollector, normalize_caption

logger = logging.getLogger(__name__)

KARPATHY_SPLIT_SIZES = {"train": 113287, "dev": 5000, "test": 5000}
# Karpathy split name -> ours; "restval" (30,504 val2014 images) joins train, as is customary.
KARPATHY_NAMES = {"train": "train", "restval": "train", "val": "dev", "test": "test"}
WHERE_TO_GET = {
    "SPOKENCOCO": "SpokenCOCO: https://groups.csail.mit.edu/sls/downloads/placesaudio/ (SpokenCOCO.tar.gz, "
                  "Hsu et al. 2021)",
    "MSCOCO": "MSCOCO 2014 images: http://images.cocodataset.org/zips/train2014.zip and val2014.zip",
    "KARPATHY": "Karpathy split: dataset_coco.json from "
                "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip",
}


def read_karpathy_split(path: str | Path, split_sizes: Mapping[str, int] = KARPATHY_SPLIT_SIZES) -> Dict[str, str]:
    """Image file name -> ``train``/``dev``/``test``; the number of images per split is asserted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Karpathy split file {path} does not exist. {WHERE_TO_GET['KARPATHY']}")
    images = json.loads(path.read_text()).get("images")
    if not isinstance(images, list):
        raise ValueError(f"{path}: no 'images' list (not Karpathy's dataset_coco.json)")
    img2split: Dict[str, str] = {}
    for i, entry in enumerate(images):
        try:
            name, split = entry["filename"], KARPATHY_NAMES[entry["split"]]
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path}: images[{i}]: needs 'filename' and a split in {sorted(KARPATHY_NAMES)} "
                             f"({err!r})") from None
        if name in img2split:
            raise ValueError(f"{path}: image {name} listed twice")
        img2split[name] = split
    for split, size in split_sizes.items():
        found = sum(1 for s in img2split.values() if s == split)
        if found != size:
            raise ValueError(f"{path}: {found} {split} images, expected {size} (another split file?)")
    return img2split


def prepare_spoken_coco(spokencoco_dir: str | Path, mscoco_dir: str | Path, data_dir: str | Path, *,
                        karpathy_split: str | Path | None = None,
                        split_sizes: Mapping[str, int] = KARPATHY_SPLIT_SIZES,
                        max_drop_share: float = 0.1) -> Dict[str, Dict[str, int]]:
    """Write validated ``data_dir/{train,dev,test}``; returns counts per split.

    ``karpathy_split`` defaults to ``<mscoco_dir>/dataset_coco.json``. Utterance ids are
    SpokenCOCO's ``uttid`` (speaker-prefixed), image ids the jpg names without ``.jpg``.
    """
    spoken, mscoco, data_dir = Path(spokencoco_dir).absolute(), Path(mscoco_dir).absolute(), Path(data_dir)
    for root, var in ((spoken, "SPOKENCOCO"), (mscoco, "MSCOCO")):
        if not root.is_dir():
            raise FileNotFoundError(f"{var} root {root} does not exist. {WHERE_TO_GET[var]}")
    manifests = [spoken / f"SpokenCOCO_{part}.json" for part in ("train", "val")]
    missing = [str(p) for p in manifests if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing {', '.join(missing)}. {WHERE_TO_GET['SPOKENCOCO']}")
    img2split = read_karpathy_split(karpathy_split or mscoco / "dataset_coco.json", split_sizes)

    corpus = ProblemList("")
    splits = {split: SplitCollector(split) for split in split_sizes}
    seen_utts: set = set()
    with_captions: set = set()
    for manifest in manifests:
        entries = json.loads(manifest.read_text()).get("data")
        if not isinstance(entries, list):
            raise ValueError(f"{manifest}: no 'data' list (not a SpokenCOCO manifest)")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "image" not in entry or not isinstance(entry.get("captions"), list):
                raise ValueError(f"{manifest}: data[{i}]: needs 'image' and a 'captions' list")
            name = Path(entry["image"]).name
            image_id, split = Path(name).stem, img2split.get(name)
            captions = entry["captions"]
            if split is None:
                for cap in captions:
                    corpus.add(str(cap.get("uttid", f"{image_id}[?]")), "dropped",
                               f"its image {name} is in no Karpathy split")
                continue
            collector, image_path = splits[split], mscoco / entry["image"]
            with_captions.add(name)
            if not image_path.is_file():
                collector.drop(image_id, f"missing image {image_path} ({len(captions)} spoken caption(s) "
                                         f"dropped)", num_utts=len(captions))
                continue
            for j, cap in enumerate(captions):
                utt = str(cap.get("uttid", "")) if isinstance(cap, dict) else ""
                if not utt or any(c.isspace() for c in utt) or not cap.get("wav"):
                    collector.drop(f"{image_id}[{j}]", f"{manifest.name}: caption {j} of {name} has no usable "
                                                       f"'uttid'/'wav': {cap!r}")
                    continue
                wav, text = spoken / cap["wav"], normalize_caption(str(cap.get("text", "")))
                if utt in seen_utts:
                    collector.drop(utt, f"{manifest.name}: uttid listed twice")
                elif not wav.is_file():
                    collector.drop(utt, f"missing wav {wav}")
                elif not text:
                    collector.drop(utt, "empty transcript")
                else:
                    collector.add(utt, wav=str(wav), text=text, image_id=image_id, image_path=str(image_path),
                                  speaker=str(cap.get("speaker") or utt))
                seen_utts.add(utt)
    for name, split in sorted(img2split.items()):
        if name not in with_captions:
            splits[split].note(Path(name).stem, "in the Karpathy split but has no SpokenCOCO captions")
    corpus.write(data_dir / "problems.txt")
    counts = {split: collector.write(data_dir, max_drop_share) for split, collector in splits.items()}
    logger.info("SpokenCOCO: %s; %d problems outside the splits (%s)", counts, len(corpus.items),
                data_dir / "problems.txt")
    return counts
