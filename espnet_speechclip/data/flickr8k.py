"""Flickr8k + Flickr8k Audio Captions -> Kaldi-style dirs ``train``, ``dev``, ``test`` (DESIGN §4).

Expected layout under the corpus root (``FLICKR8K`` in db.sh)::

    Flicker8k_Dataset/<image>.jpg          8,091 images   (Flickr8k_Dataset.zip; "Flicker" sic)
    Flickr_8k.{train,dev,test}Images.txt   6,000 / 1,000 / 1,000 "<image>.jpg" lines (Flickr8k_text.zip)
    Flickr8k.token.txt                     "<image>.jpg#<n>\\t<caption>", n = 0..4 (Flickr8k_text.zip)
    flickr_audio/wavs/<image>_<n>.wav      40,000 spoken captions (flickr_audio.tar.gz)
    flickr_audio/wav2capt.txt              "<image>_<n>.wav <image>.jpg #<n>"
    flickr_audio/wav2spk.txt               "<image>_<n>.wav <speaker number>" (optional)

The text files may also sit in ``Flickr8k_text/`` (how some mirrors unpack the zip). Utterance ids
are ``flickr8k_spk<speaker number>-<wav name without .wav>`` (Kaldi's speaker prefix, speakers from
wav2spk.txt); a wav that wav2spk.txt does not name (or all, when the file is absent) is its own
speaker, with the wav name as its id, and is noted. Image ids are the jpg names without ``.jpg``;
transcripts come from Flickr8k.token.txt (for evaluation and the CLIP vocabulary only).

The split lists are the benchmark, so their sizes are asserted (a different size is another
corpus version, not a hole). Everything else is named in ``<data>/<split>/problems.txt``
(``<data>/problems.txt`` for what belongs to no split) and the log, and the rest is kept:

* dropped: the real Flickr8k.token.txt's five ``2258277193_586949ec62.jpg.1#<n>`` captions (an image
  in no split list and not in the zip), like any caption of an image neither listed nor shipped; a
  token line that is not ``<name>#<n> <caption>`` (named ``<file>:<line>``); a caption number given
  two different captions; an unreadable wav2capt.txt line; a wav it does not list; a missing wav or
  image; a spoken caption whose text caption is missing or empty;
* kept, noted: an image with other than ``captions_per_image`` spoken captions; an utterance
  without a speaker in wav2spk.txt (its own speaker);
* ignored, named: a shipped image that no split list holds (91 of the zip's 8,091); an unreadable
  wav2spk.txt line;
* read as the plain form: captions with or without the final " .", with "#" inside ("Sooners # 28 ."),
  ending "D.C." (``normalize_caption`` drops one final ".", as the reference loader does); a space
  instead of the tab after ``#<n>`` (seen in copies); CRLF ends, a UTF-8 BOM, blank lines (the
  distributed text files are ASCII with LF, but re-saved copies circulate).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from espnet_speechclip.data.corpus_split import ProblemList, SplitCollector, normalize_caption
from espnet_speechclip.data.kaldi_dir import is_speaker_id, utt2spk_sort_mismatch

logger = logging.getLogger(__name__)

FLICKR8K_SPLIT_SIZES = {"train": 6000, "dev": 1000, "test": 1000}
WHERE_TO_GET = ("Flickr8k images and text: https://github.com/jbrownlee/Datasets/releases "
                "(Flickr8k_Dataset.zip, Flickr8k_text.zip; originally hockenmaier.cs.illinois.edu); "
                "spoken captions: https://groups.csail.mit.edu/sls/downloads/flickraudio/ (flickr_audio.tar.gz)")
SPEAKER_PREFIX = "flickr8k_spk"
_CAPTION_NUMBER = re.compile(r"#?(\d+)")
# Problems found while reading one of the files: {key (a wav, an "<image>#<n>" or "<file>:<line>"): reason}.
LineProblems = Dict[str, str]


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


def _lines(path: Path) -> List[Tuple[int, str]]:
    """``(line number, stripped line)`` of the non-blank lines; a UTF-8 BOM and CRLF ends are dropped."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    return [(lineno, line.strip()) for lineno, line in enumerate(lines, 1) if line.strip()]


def _image_id(name: str) -> str:
    """``<image>.jpg`` -> ``<image>``; a name that does not end in .jpg stays whole (``x.jpg.1``)."""
    return name[:-len(".jpg")] if name.endswith(".jpg") else name


def read_split_list(path: Path, expected: int) -> list:
    """Image ids of ``Flickr_8k.<split>Images.txt``; its size must be ``expected``."""
    ids = [_image_id(line) for _, line in _lines(path)]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"{path}: images listed twice: {dup[:10]}")
    if len(ids) != expected:
        raise ValueError(f"{path}: {len(ids)} images, expected {expected} (another Flickr8k version?)")
    return ids


def read_token_file(path: Path) -> Tuple[Dict[Tuple[str, int], str], LineProblems]:
    """``({(image id, caption number): caption}, {key: reason})`` of Flickr8k.token.txt.

    The image id is the name before ``#<n>`` without ``.jpg``; the real file's ``<image>.jpg.1#<n>``
    lines keep their whole name, which no split list holds. A line that is not ``<name>#<n>`` and a
    caption, and a caption number given two different captions, are problems (their captions are
    not used); an identical repeated line is not.
    """
    captions: Dict[Tuple[str, int], str] = {}
    seen: Dict[Tuple[str, int], int] = {}  # first line of each caption number
    problems: LineProblems = {}
    for lineno, line in _lines(path):
        key, text = (line.split(maxsplit=1) + [""])[:2]
        name, hash_sign, number = key.rpartition("#")
        if not hash_sign or not name or not number.isdigit():
            problems[f"{path.name}:{lineno}"] = f"line {lineno} is not '<image>.jpg#<n><TAB><caption>': {line!r}"
            continue
        image, n, caption = _image_id(name), int(number), normalize_caption(text)
        if (image, n) not in seen:
            seen[image, n], captions[image, n] = lineno, caption
        elif captions.get((image, n)) != caption:
            problems[f"{image}#{n}"] = f"{path.name} lines {seen[image, n]} and {lineno} give {name}#{n} " \
                                       f"different captions"
            captions.pop((image, n), None)
    return captions, problems


def read_wav2capt(path: Path) -> Tuple[Dict[str, Tuple[str, int]], LineProblems]:
    """``({wav name: (image id, caption number)}, {key: reason})`` of flickr_audio/wav2capt.txt."""
    out: Dict[str, Tuple[str, int]] = {}
    seen: Dict[str, int] = {}
    problems: LineProblems = {}
    for lineno, line in _lines(path):
        fields = line.split()
        number = _CAPTION_NUMBER.fullmatch(fields[-1])
        if len(fields) != 3 or not fields[0].endswith(".wav") or number is None:
            key = fields[0] if fields[0].endswith(".wav") else f"{path.name}:{lineno}"
            problems[key] = f"{path.name} line {lineno} is not '<image>_<n>.wav <image>.jpg #<n>': {line!r}"
            continue
        wav, entry = fields[0], (_image_id(fields[1]), int(number[1]))
        if wav not in seen:
            seen[wav], out[wav] = lineno, entry
        elif out.get(wav) != entry:
            problems[wav] = f"{path.name} lines {seen[wav]} and {lineno} give it different captions"
            out.pop(wav, None)
    return out, problems


def read_wav2spk(path: Path) -> Tuple[Dict[str, str], LineProblems]:
    """``({wav name: speaker id}, {key: reason})`` of flickr_audio/wav2spk.txt; ids are ``SPEAKER_PREFIX<n>``."""
    out: Dict[str, str] = {}
    seen: Dict[str, int] = {}
    problems: LineProblems = {}
    for lineno, line in _lines(path):
        fields = line.split()
        speaker = SPEAKER_PREFIX + fields[-1]
        if len(fields) != 2 or not fields[0].endswith(".wav") or not is_speaker_id(speaker):
            key = fields[0] if fields[0].endswith(".wav") else f"{path.name}:{lineno}"
            problems[key] = f"{path.name} line {lineno} is not '<image>_<n>.wav <speaker number>': {line!r}"
            continue
        wav = fields[0]
        if wav not in seen:
            seen[wav], out[wav] = lineno, speaker
        elif out.get(wav) != speaker:
            problems[wav] = f"{path.name} lines {seen[wav]} and {lineno} give it different speakers"
            out.pop(wav, None)
    return out, problems


def utterance_id(wav: str, wav2spk: Mapping[str, str]) -> Tuple[str, str]:
    """``(speaker, utterance id)`` of a wav named in wav2capt.txt.

    ``<speaker>-<wav name without .wav>`` when wav2spk.txt names its speaker. Otherwise the corpus
    gives no speaker to prefix, and the wav name is both (Kaldi's convention for an unknown speaker),
    which keeps utt2spk in speaker order as long as the name ``is_speaker_id`` (``<image>_<n>`` is).
    """
    stem = wav[:-len(".wav")]
    speaker = wav2spk.get(wav)
    return (speaker, f"{speaker}-{stem}") if speaker is not None else (stem, stem)


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
    captions, token_problems = read_token_file(parts["token"])
    wav2capt, capt_problems = read_wav2capt(parts["wav2capt"])
    wav2spk, spk_problems = read_wav2spk(parts["wav2spk"]) if parts["wav2spk"] is not None else ({}, {})
    on_disk = {p.name for p in parts["wavs"].glob("*.wav")}
    images_on_disk = {p.stem for p in parts["images"].glob("*.jpg")}

    corpus = ProblemList("")
    splits = {split: SplitCollector(split) for split in split_sizes}
    for key, reason in {**token_problems, **capt_problems}.items():
        corpus.add(key, "dropped", reason)
    for key, reason in spk_problems.items():
        corpus.add(key, "ignored", reason)
    if parts["wav2spk"] is None:
        corpus.add("wav2spk.txt", "kept", f"{root / 'flickr_audio' / 'wav2spk.txt'} is absent: every utterance is "
                                          f"its own speaker, its id the wav name")
    for wav in sorted(on_disk - set(wav2capt) - set(capt_problems)):
        corpus.add(wav, "dropped", f"{parts['wavs'] / wav} is not listed in {parts['wav2capt'].name}")
    for image in sorted(images_on_disk - set(img2split)):  # 91 of the real zip's 8,091 images
        corpus.add(image, "ignored", f"{parts['images'].name}/{image}.jpg is in no split list")
    for (image, n) in sorted(captions):
        if image not in img2split and image not in images_on_disk:
            corpus.add(f"{image}#{n}", "dropped", f"a caption of {image!r}, which is in no split list and not in "
                                                  f"{parts['images'].name}/")
    spoken: Dict[str, int] = {}
    for wav, (image, n) in sorted(wav2capt.items()):
        speaker, utt = utterance_id(wav, wav2spk)
        split = img2split.get(image)
        if split is None:
            corpus.add(utt, "dropped", f"{wav}: its image {image!r} is in no split list")
            continue
        spoken[image] = spoken.get(image, 0) + 1
        if image not in images_on_disk:
            continue  # reported once per image below
        collector, text = splits[split], captions.get((image, n))
        if wav not in on_disk:
            collector.drop(utt, f"missing wav {parts['wavs'] / wav}")
        elif text is None:
            collector.drop(utt, f"{wav}: no caption {image}.jpg#{n} in {parts['token'].name}")
        elif not text:
            collector.drop(utt, f"{wav}: empty caption {image}.jpg#{n} in {parts['token'].name}")
        elif speaker == utt and not is_speaker_id(utt):
            collector.drop(utt, f"{wav}: no speaker, and its name cannot be a speaker id (characters other "
                                f"than letters, digits, '_' and '.')")
        else:
            if parts["wav2spk"] is not None and wav not in wav2spk:
                collector.note(utt, f"{wav} has no speaker in {parts['wav2spk'].name}: it is its own speaker")
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
    for collector in splits.values():
        out_of_order = utt2spk_sort_mismatch(collector.utt2spk)
        if out_of_order is not None:  # the ids above are built so that this cannot happen
            raise AssertionError(f"{collector.name}: utterance {out_of_order} breaks the speaker order of utt2spk")
    counts = {split: collector.write(data_dir, max_drop_share) for split, collector in splits.items()}
    logger.info("Flickr8k: %s; %d problems outside the splits (%s)", counts, len(corpus.items),
                data_dir / "problems.txt")
    return counts
