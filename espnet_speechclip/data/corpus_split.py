"""What the real-corpus preparers (Flickr8k, SpokenCOCO) share: collect one split, report, write.

Real corpora have holes (a wav that was never recorded, an image listed but not shipped). A
preparer keeps everything usable and reports the rest by id, in ``<data>/<split>/problems.txt``
(``id<TAB>action<TAB>reason``, the format stage 2 uses) and in the log. Problems that belong to no
split (a wav whose image is in no split list) go to ``<data>/problems.txt``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Tuple

from espnet_speechclip.data.kaldi_dir import validate_data_dir, write_data_dir

logger = logging.getLogger(__name__)


class ProblemList:
    """Problems of one split (or of the corpus as a whole, ``name=""``), in the order found."""

    def __init__(self, name: str):
        self.name = name
        self.items: List[Tuple[str, str, str]] = []

    def add(self, key: str, action: str, reason: str) -> None:
        """Record ``key`` (an utterance, image or file id); ``action`` is "dropped" or "kept"."""
        self.items.append((key, action, reason))
        logger.warning("%s%s: %s (%s)", f"{self.name}: " if self.name else "", key, action, reason)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{k}\t{a}\t{r}\n" for k, a, r in self.items), encoding="utf-8")


class SplitCollector:
    """Utterances of one split as they are found, with the ones dropped on the way.

    ``drop_share`` counts dropped utterances only (a dropped image counts its captions), so a
    split fails for the same reason stage 2 fails: too much of it is unusable.
    """

    def __init__(self, name: str):
        self.name = name
        self.problems = ProblemList(name)
        self.wav_scp: Dict[str, str] = {}
        self.text: Dict[str, str] = {}
        self.utt2img: Dict[str, str] = {}
        self.utt2spk: Dict[str, str] = {}
        self.img_scp: Dict[str, str] = {}
        self.dropped_utts = 0

    def add(self, utt: str, *, wav: str, text: str, image_id: str, image_path: str, speaker: str) -> None:
        self.wav_scp[utt], self.text[utt], self.utt2img[utt] = wav, text, image_id
        self.utt2spk[utt], self.img_scp[image_id] = speaker, image_path

    def drop(self, key: str, reason: str, num_utts: int = 1) -> None:
        """Report ``key`` as dropped; ``num_utts`` utterances are lost with it."""
        self.problems.add(key, "dropped", reason)
        self.dropped_utts += num_utts

    def note(self, key: str, reason: str) -> None:
        """Report something odd that is kept (e.g. an image with 4 spoken captions instead of 5)."""
        self.problems.add(key, "kept", reason)

    def write(self, data_dir: Path, max_drop_share: float) -> Dict[str, int]:
        """Write, validate and check ``data_dir/<name>``; problems.txt is written first, always."""
        out = Path(data_dir) / self.name
        self.problems.write(out / "problems.txt")
        kept, total = len(self.wav_scp), len(self.wav_scp) + self.dropped_utts
        if not kept:
            raise RuntimeError(f"{out}: no usable utterance left; see {out / 'problems.txt'}")
        if self.dropped_utts > max_drop_share * total:
            raise RuntimeError(f"{out}: {self.dropped_utts} of {total} utterances dropped, more than "
                               f"{max_drop_share:.0%}; see {out / 'problems.txt'}")
        write_data_dir(out, wav_scp=self.wav_scp, text=self.text, utt2img=self.utt2img,
                       img_scp=self.img_scp, utt2spk=self.utt2spk)
        validate_data_dir(out)
        counts = {"images": len(self.img_scp), "utterances": kept, "dropped_utterances": self.dropped_utts,
                  "problems": len(self.problems.items)}
        logger.info("%s: %s (problems: %s)", out, counts, out / "problems.txt")
        return counts


def normalize_caption(text: str) -> str:
    """Collapse whitespace; drop a final stand-alone period ("... stairs ." -> "... stairs").

    Flickr8k's tokenised captions end in " ."; the period is no word of the spoken caption and
    would otherwise reach the CLIP vocabulary and the keyword references.
    """
    words = text.split()
    if words and words[-1] == ".":
        words = words[:-1]
    elif words and words[-1].endswith("."):
        words[-1] = words[-1][:-1]
    return " ".join(words)
