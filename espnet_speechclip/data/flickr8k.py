"""Flickr8k + Flickr8k Audio Captions -> Kaldi-style dirs ``train``, ``dev``, ``test`` (DESIGN §4).

Expected layout under the corpus root (``FLICKR8K`` in db.sh)::

    Flicker8k_Dataset/<image>.jpg          8,091 images   (Flickr8k_Dataset.zip; "Flicker" sic)
    Flickr_8k.{train,dev,test}Images.txt   6,000 / 1,000 / 1,000 "<image>.jpg" lines (Flickr8k_text.zip)
    Flickr8k.token.txt                     "<image>.jpg#<n>\\t<caption>", 5 per image (Flickr8k_text.zip)
    flickr_audio/wavs/<image>_<n>.wav      40,000 spoken captions (flickr_audio.tar.gz)
    flickr_audio/wav2capt.txt              "<image>_<n>.wav <image>.jpg #<n>"
    flickr_audio/wav2spk.txt               optional: "<image>_<n>.wav <speaker number>"

The text files may also sit in ``Flickr8k_text/`` (how some mirrors unpack the zip). Utterance
ids are the wav names without ``.wav``; image ids the jpg names without ``.jpg``; transcripts
come from Flickr8k.token.txt (for evaluation and the CLIP vocabulary only).

The split lists are the benchmark, so their sizes are asserted (a different size is another
corpus version, not a hole). Missing or unmatched files are holes: each is listed by name in
``<data>/<split>/problems.txt`` (or ``<data>/problems.txt`` when it belongs to no split) and the
log, and the rest is kept; an image without exactly ``captions_per_image`` spoken captions is
listed and kept.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

from espnet_speechclip.data.corpus_split import ProblemList, SplitCollector, normalize_caption

logger = logging.getLogger(__name__)

FLICKR8K_SPLIT_SIZES = {"train": 6000, "dev": 1000, "test": 1000}
WHERE_TO_GET = ("Flickr8k images and text: https://github.com/jbrownlee/Datasets/releases "
                "(Flickr8k_Dataset.zip, Flickr8k_text.zip; originally hockenmaier.cs.illinois.edu); "
                "spoken captions: https://groups.csail.mit.edu/sls/downloads/flickraudio/ (flickr_audio.tar.gz)")
_TOKEN_LINE = re.compile(r"^(?P<image>\S+?)\.jpg#(?P<n>\d+)\s+(?P<text>.*)$")
_WAV2CAPT_LINE = re.compile(r"^(?P<wav>\S+\.wav)\s+(?P<image>\S+?)\.jpg\s+#(?P<n>\d+)$")


def _find(root: Path, name: str) -> Optional[Path]:
    for candidate in (root / name, root / "Flickr8k_text" / name):
        if candidate.is_file():
            return candidate
    return None


def locate_flickr8k(root: str | Path) -> Dict[str, Path]:
    """Paths of the corpus parts; one ``FileNotFoundError`` lists every missing part and its source."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Flickr8k root {root} does not exist. {WHERE_TO_GET}")
    parts: Dict[str, Optional[Path]] = {
        **{f"{s}_list": _find(root, f"Flickr_8k.{s}Images.txt") for s in FLICKR8K_SPLIT_SIZES},
        "token": _find(root, "Flickr8k.token.txt"),
        "images": root / "Flicker8k_Dataset" if (root / "Flicker8k_Dataset").is_dir() else None,
        "wavs": root / "flickr_audio" / "wavs" if (root / "flickr_audio" / "wavs").is_dir() else None,
        "wav2capt": root / "flickr_audio" / "wav2capt.txt" if (root / "flickr_audio" / "wav2capt.txt").is_file()
        else None,
    }
    expected = {**{f"{s}_list": f"Flickr_8k.{s}Images.txt" for s in FLICKR8K_SPLIT_SIZES},
                "token": "Flickr8k.token.txt", "images": "Flicker8k_Dataset/", "wavs": "flickr_audio/wavs/",
                "wav2capt": "flickr_audio/wav2capt.txt"}
    missing = [expected[k] for k, v in parts.items() if v is None]
    if missing:
        raise FileNotFoundError(f"Flickr8k root {root} lacks {', '.join(missing)}. {WHERE_TO_GET}")
    spk = root / "flickr_audio" / "wav2spk.txt"
    return {**parts, "wav2spk": spk if spk.is_file() else None}  # type: ignore[dict-item]


def read_split_list(path: Path, expected: int) -> list:
    """Image ids of ``Flickr_8k.<split>Images.txt``; its size must be ``expected``."""
    ids = [line.strip()[:-len(".jpg")] if line.strip().endswith(".jpg") else line.strip()
           for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"{path}: images listed twice: {dup[:10]}")
    if len(ids) != expected:
        raise ValueError(f"{path}: {len(ids)} images, expected {expected} (another Flickr8k version?)")
    return ids


def read_token_file(path: Path) -> Dict[Tuple[str, int], str]:
    """(image id, caption number) -> caption text of Flickr8k.token.txt."""
    captions = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        m = _TOKEN_LINE.match(line.strip())
        if m is None:
            raise ValueError(f"{path}:{lineno}: not '<image>.jpg#<n><TAB><caption>': {line!r}")
        captions[(m["image"], int(m["n"]))] = normalize_caption(m["text"])
    return captions


def read_wav2capt(path: Path) -> Dict[str, Tuple[str, int]]:
    """wav name -> (image id, caption number) of flickr_audio/wav2capt.txt."""
    out: Dict[str, Tuple[str, int]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        m = _WAV2CAPT_LINE.match(line.strip())
        if m is None:
            raise ValueError(f"{path}:{lineno}: not '<image>_<n>.wav <image>.jpg #<n>': {line!r}")
        if m["wav"] in out:
            raise ValueError(f"{path}:{lineno}: wav {m['wav']} listed twice")
        out[m["wav"]] = (m["image"], int(m["n"]))
    return out


def prepare_flickr8k(corpus_dir: str | Path, data_dir: str | Path, *,
                     split_sizes: Mapping[str, int] = FLICKR8K_SPLIT_SIZES, captions_per_image: int = 5,
                     max_drop_share: float = 0.1) -> Dict[str, Dict[str, int]]:
    """Write validated ``data_dir/{train,dev,test}`` from a Flickr8k root; returns counts per split.

    ``split_sizes`` / ``captions_per_image`` are the published sizes; tests pass small ones.
    Raises ``ValueError`` for a split list of another size, ``RuntimeError`` when a split loses
    more than ``max_drop_share`` of its utterances.
    """
    root, data_dir = Path(corpus_dir).absolute(), Path(data_dir)
    parts = locate_flickr8k(root)
    img2split: Dict[str, str] = {}
    for split, size in split_sizes.items():
        for image in read_split_list(parts[f"{split}_list"], size):
            if image in img2split:
                raise ValueError(f"image {image} is in both the {img2split[image]} and the {split} list")
            img2split[image] = split
    captions = read_token_file(parts["token"])
    wav2capt = read_wav2capt(parts["wav2capt"])
    wav2spk = {}
    if parts["wav2spk"] is not None:
        wav2spk = dict(line.split()[:2] for line in parts["wav2spk"].read_text().splitlines() if line.strip())
    on_disk = {p.name for p in parts["wavs"].glob("*.wav")}
    images_on_disk = {p.stem for p in parts["images"].glob("*.jpg")}

    corpus = ProblemList("")
    splits = {split: SplitCollector(split) for split in split_sizes}
    for wav in sorted(on_disk - set(wav2capt)):
        corpus.add(wav, "dropped", f"{parts['wavs'] / wav} is not listed in {parts['wav2capt'].name}")
    for (image, n) in sorted(captions):
        if image not in img2split and image not in images_on_disk:
            corpus.add(f"{image}#{n}", "dropped", f"caption of image {image}.jpg, which is in no split list "
                                                  f"and not in {parts['images'].name}/")
    spoken: Dict[str, int] = {}
    for wav, (image, n) in sorted(wav2capt.items()):
        utt = wav[:-len(".wav")]
        split = img2split.get(image)
        if split is None:
            corpus.add(utt, "dropped", f"its image {image} is in no split list")
            continue
        spoken[image] = spoken.get(image, 0) + 1
        if image not in images_on_disk:
            continue  # reported once per image below
        collector, text = splits[split], captions.get((image, n))
        if wav not in on_disk:
            collector.drop(utt, f"missing wav {parts['wavs'] / wav}")
        elif text is None:
            collector.drop(utt, f"no caption {image}.jpg#{n} in {parts['token'].name}")
        elif not text:
            collector.drop(utt, f"empty caption {image}.jpg#{n} in {parts['token'].name}")
        else:
            speaker = f"flickr8k_spk{wav2spk[wav]}" if wav in wav2spk else utt
            collector.add(utt, wav=str(parts["wavs"] / wav), text=text, image_id=image,
                          image_path=str(parts["images"] / f"{image}.jpg"), speaker=speaker)
    for image, split in sorted(img2split.items()):
        num = spoken.get(image, 0)
        if image not in images_on_disk:
            splits[split].drop(image, f"missing image {parts['images'] / (image + '.jpg')} "
                                      f"({num} spoken caption(s) dropped)", num_utts=num)
        elif num != captions_per_image:
            splits[split].note(image, f"{num} spoken captions in {parts['wav2capt'].name}, "
                                      f"expected {captions_per_image}")
    corpus.write(data_dir / "problems.txt")
    counts = {split: collector.write(data_dir, max_drop_share) for split, collector in splits.items()}
    logger.info("Flickr8k: %s; %d problems outside the splits (%s)", counts, len(corpus.items),
                data_dir / "problems.txt")
    return counts
