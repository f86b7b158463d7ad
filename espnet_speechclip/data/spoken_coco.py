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

Utterance ids are SpokenCOCO's ``uttid``, which already begins with the caption's ``speaker`` and a
"-" (``m071506418gb9vo0w5xq3-3LUY3GC63Z0R9PYEETJGN5HO4UEP7B_325114_629297``): Kaldi's speaker prefix.
A caption whose ``uttid`` lacks that prefix gets it (repaired, noted); one without a usable
``speaker`` takes the part of its ``uttid`` before "-" as speaker (repaired, noted), or is its own
speaker (kept, noted); one without a usable ``uttid`` takes its wav name (repaired, noted).
Transcripts keep SpokenCOCO's casing and typos (upper case, "TABKE"; CLIP's tokenizer and the
keyword metrics lower-case them) with whitespace collapsed; an entry that is not
``{"image": ..., "captions": [...]}`` or a caption without a usable wav or text is dropped and named.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from espnet_speechclip.data.corpus_split import ProblemList, SplitCollector, normalize_caption
from espnet_speechclip.data.kaldi_dir import is_speaker_id, utt2spk_sort_mismatch

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
    images = json.loads(path.read_text(encoding="utf-8-sig")).get("images")
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


def utterance_id(caption: Mapping) -> Tuple[Optional[str], str, List[Tuple[str, str]]]:
    """``(utterance id, speaker, [(action, note), ...])`` of one SpokenCOCO caption.

    The id is ``None`` (the note says why) when neither the ``uttid`` nor the wav name can be one.
    """
    uttid, speaker, notes = caption.get("uttid"), caption.get("speaker"), []
    if isinstance(uttid, int) and not isinstance(uttid, bool):
        uttid = str(uttid)
    if not isinstance(uttid, str) or not uttid or any(c.isspace() for c in uttid):
        stem = Path(caption["wav"]).stem if isinstance(caption.get("wav"), str) else ""
        if not stem or any(c.isspace() for c in stem):
            return None, "", [("dropped", f"no usable 'uttid' ({uttid!r}) nor wav name")]
        notes.append(("repaired", f"no usable 'uttid' ({uttid!r}): its wav name {stem} is its id"))
        uttid = stem
    if is_speaker_id(speaker):
        if uttid.startswith(f"{speaker}-"):
            return uttid, speaker, notes
        return f"{speaker}-{uttid}", speaker, notes + [("repaired", f"uttid {uttid} does not begin with its "
                                                                    f"speaker {speaker}")]
    prefix, dash, _ = uttid.partition("-")
    if dash and is_speaker_id(prefix):
        return uttid, prefix, notes + [("repaired", f"no usable 'speaker' ({speaker!r}): the start of its uttid, "
                                                    f"{prefix}, is its speaker")]
    if is_speaker_id(uttid):
        return uttid, uttid, notes + [("kept", f"no usable 'speaker' ({speaker!r}): it is its own speaker")]
    return None, "", [("dropped", f"no usable 'speaker' ({speaker!r}), and uttid {uttid!r} cannot be its own "
                                  f"speaker id (characters other than letters, digits, '_' and '.')")]


def prepare_spoken_coco(spokencoco_dir: str | Path, mscoco_dir: str | Path, data_dir: str | Path, *,
                        karpathy_split: str | Path | None = None,
                        split_sizes: Mapping[str, int] = KARPATHY_SPLIT_SIZES,
                        max_drop_share: float = 0.1) -> Dict[str, Dict[str, int]]:
    """Write validated ``data_dir/{train,dev,test}``; returns counts per split.

    ``karpathy_split`` defaults to ``<mscoco_dir>/dataset_coco.json``. Utterance ids are
    ``utterance_id``'s (SpokenCOCO's speaker-prefixed ``uttid``), image ids the jpg names without ``.jpg``.
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
        entries = json.loads(manifest.read_text(encoding="utf-8-sig")).get("data")
        if not isinstance(entries, list):
            raise ValueError(f"{manifest}: no 'data' list (not a SpokenCOCO manifest)")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) \
                    or not isinstance(entry.get("captions"), list):
                corpus.add(f"{manifest.name}:data[{i}]", "dropped",
                           f"not {{'image': <path>, 'captions': [...]}}: {entry!r:.200}")
                continue
            name = Path(entry["image"]).name
            image_id, split = Path(name).stem, img2split.get(name)
            captions = entry["captions"]
            if split is None:
                for j, cap in enumerate(captions):
                    utt = utterance_id(cap)[0] if isinstance(cap, dict) else None
                    corpus.add(utt or f"{image_id}[{j}]", "dropped", f"its image {name} is in no Karpathy split")
                continue
            collector, image_path = splits[split], mscoco / entry["image"]
            with_captions.add(name)
            if not image_path.is_file():
                collector.drop(image_id, f"missing image {image_path} ({len(captions)} spoken caption(s) "
                                         f"dropped)", num_utts=len(captions))
                continue
            for j, cap in enumerate(captions):
                cap = cap if isinstance(cap, dict) else {}
                utt, speaker, notes = utterance_id(cap)
                wav, text = cap.get("wav"), cap.get("text")
                text = normalize_caption(text) if isinstance(text, str) else ""
                if utt is None or not isinstance(wav, str) or not wav:
                    why = notes[0][1] if utt is None else "no 'wav'"
                    collector.drop(f"{image_id}[{j}]", f"{manifest.name}: caption {j} of {name}: {why}: {cap!r}")
                elif utt in seen_utts:
                    collector.drop(utt, f"{manifest.name}: uttid listed twice")
                elif not (spoken / wav).is_file():
                    collector.drop(utt, f"missing wav {spoken / wav}")
                elif not text:
                    collector.drop(utt, f"empty transcript: {cap.get('text')!r}")
                else:
                    for action, note in notes:
                        collector.problems.add(utt, action, f"{manifest.name}: {note}")
                    collector.add(utt, wav=str(spoken / wav), text=text, image_id=image_id,
                                  image_path=str(image_path), speaker=speaker)
                seen_utts.add(utt)
    for name, split in sorted(img2split.items()):
        if name not in with_captions:
            splits[split].note(Path(name).stem, "in the Karpathy split but has no SpokenCOCO captions")
    corpus.write(data_dir / "problems.txt")
    for collector in splits.values():
        out_of_order = utt2spk_sort_mismatch(collector.utt2spk)
        if out_of_order is not None:  # utterance_id builds ids so that this cannot happen
            raise AssertionError(f"{collector.name}: utterance {out_of_order} breaks the speaker order of utt2spk")
    counts = {split: collector.write(data_dir, max_drop_share) for split, collector in splits.items()}
    logger.info("SpokenCOCO: %s; %d problems outside the splits (%s)", counts, len(corpus.items),
                data_dir / "problems.txt")
    return counts
