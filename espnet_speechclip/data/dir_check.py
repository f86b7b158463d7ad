"""Stage 2, before any audio is read: the consistency of a Kaldi-style data dir, leniently.

Stage 1's preparers write valid dirs (``kaldi_dir.validate_data_dir``), but stage 2 also takes dirs
made by hand or by other tools. Instead of stopping at the first problem, each one is reported by
id and the utterance is repaired (noted) or dropped, so one bad line never costs the whole split:

* a duplicated key: identical lines are merged (noted); differing lines drop the key;
* an utterance without a transcript or an image id, or pointing to an image absent from img.scp;
* an empty transcript, one that is not UTF-8, or one with non-ASCII characters: accents and
  typographic punctuation are folded to ASCII (noted, CLIP's captions are English), anything else
  that cannot be folded drops the utterance (the transcript would feed keyword metrics and the
  CLIP vocabulary with characters no caption has);
* an utterance without a speaker: its own id is its speaker (Kaldi's convention, noted).

Lines are ``key<whitespace>value``: the value is the rest of the line, so a wav path with spaces
survives (ESPnet's ``read_2columns_text`` splits the same way), a tab after the key works too.
"""
from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

logger = logging.getLogger(__name__)

# Typographic characters of real captions that have a plain ASCII equivalent.
_ASCII_PUNCT = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-",
                "\u2026": "...", "\u00a0": " "}


class ProblemReport:
    """``id<TAB>action<TAB>reason`` lines (the format of stage 1's problems.txt), logged as found."""

    def __init__(self, name: str):
        self.name = name
        self.lines: List[Tuple[str, str, str]] = []
        self.dropped: Set[str] = set()  # utterances

    def drop(self, utt: str, reason: str) -> None:
        if utt in self.dropped:
            return  # one reason per utterance: the first found
        self.dropped.add(utt)
        self._add(utt, "dropped", reason)

    def repair(self, key: str, note: str) -> None:
        self._add(key, "repaired", note)

    def ignore(self, key: str, reason: str) -> None:
        """A line that belongs to no utterance of wav.scp (nothing is lost with it)."""
        self._add(key, "ignored", reason)

    def _add(self, key: str, action: str, reason: str) -> None:
        self.lines.append((key, action, reason))
        log = logger.info if action == "repaired" else logger.warning
        log("%s: %s: %s (%s)", self.name, key, action, reason)

    def write(self, path: Path) -> None:
        path.write_text("".join(f"{k}\t{a}\t{r}\n" for k, a, r in self.lines), encoding="utf-8")


def read_lines(path: Path) -> List[Tuple[int, str, Optional[str]]]:
    """``(line number, key, value)``; value ``None`` when the line is not valid UTF-8."""
    out = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            parts = raw.strip().split(maxsplit=1)
            if not parts:
                continue  # a blank line holds nothing to lose
            key = parts[0].decode("utf-8", errors="replace")
            try:
                value: Optional[str] = parts[1].decode("utf-8").strip() if len(parts) > 1 else ""
            except UnicodeDecodeError as err:
                logger.debug("%s:%d: %s", path, lineno, err)
                value = None
            out.append((lineno, key, value))
    return out


def read_map(path: Path, report: ProblemReport) -> Tuple[Dict[str, str], Dict[str, str]]:
    """Read one file; returns (map, {key: reason} for keys that cannot be used).

    A key is unusable when its line is not UTF-8 or when it is duplicated with different values
    (which one is right cannot be told); identical duplicates are merged and noted in ``report``.
    """
    values: Dict[str, List[Tuple[int, Optional[str]]]] = {}
    for lineno, key, value in read_lines(path):
        values.setdefault(key, []).append((lineno, value))
    out, bad = {}, {}
    for key, found in values.items():
        where = ", ".join(str(n) for n, _ in found)
        if any(v is None for _, v in found):
            bad[key] = f"{path.name} line {where}: not valid UTF-8"
        elif len({v for _, v in found}) > 1:
            bad[key] = f"duplicated id: {path.name} lines {where} differ"
        else:
            if len(found) > 1:
                report.repair(key, f"duplicated id: {path.name} lines {where} are identical; kept one")
            out[key] = found[0][1]
    return out, bad


def fold_transcript(text: str) -> Tuple[Optional[str], str]:
    """``(ASCII transcript or None, note or reason)``; the note is "" when nothing changed."""
    if not text.strip():
        return None, "empty transcript"
    if text.isascii():
        return text, ""
    folded = "".join(_ASCII_PUNCT.get(c, c) for c in unicodedata.normalize("NFKD", text)
                     if not unicodedata.combining(c))
    rest = sorted({c for c in folded if not c.isascii()})
    if rest:
        return None, f"transcript has non-ASCII characters that do not fold to ASCII: {''.join(rest)!r}"
    folded = re.sub(r" +", " ", folded).strip()
    return folded, f"transcript folded to ASCII: {text!r} -> {folded!r}"


@dataclass
class CheckedDir:
    """The usable part of a data dir; ``utts`` are the utterances of wav.scp still kept."""
    wav_scp: Dict[str, str]
    img_scp: Dict[str, str]
    per_utt: Dict[str, Dict[str, str]] = field(default_factory=dict)  # file name -> map
    num_utts: int = 0  # distinct utterance ids of wav.scp

    @property
    def utts(self) -> List[str]:
        return sorted(self.wav_scp)


def check_data_dir(src: Path, report: ProblemReport, per_utt_files=("text", "utt2img", "utt2spk", "word_align")
                   ) -> CheckedDir:
    """Read ``src`` leniently; every problem goes to ``report``; returns what is left."""
    for name in ("wav.scp", "utt2img", "img.scp"):
        if not (src / name).is_file():
            raise FileNotFoundError(f"{src / name}: missing (stage 2 needs wav.scp, utt2img and img.scp)")
    wav_scp, bad = read_map(src / "wav.scp", report)
    wav_keys = set(wav_scp) | set(bad)
    num_utts = len(wav_keys)
    img_scp, bad_images = read_map(src / "img.scp", report)
    for img, reason in sorted(bad_images.items()):
        report.ignore(img, f"image: {reason}")  # its utterances are dropped below: unknown image
    per_utt: Dict[str, Dict[str, str]] = {}
    for name in per_utt_files:
        if (src / name).is_file():
            mapping, bad_here = read_map(src / name, report)
            bad.update(bad_here)
            per_utt[name] = mapping
            for key in sorted(set(mapping) - set(wav_scp) - set(bad)):
                report.ignore(key, f"{name}: no wav.scp entry")
    for utt, reason in sorted(bad.items()):
        (report.drop if utt in wav_keys else report.ignore)(utt, reason)
    for utt in sorted(wav_scp):
        img = per_utt["utt2img"].get(utt)
        if utt in bad:
            continue
        if img is None:
            report.drop(utt, "no utt2img entry")
        elif img not in img_scp:
            report.drop(utt, f"utt2img points to image {img!r}, absent from img.scp")
        elif "text" in per_utt:
            text, note = fold_transcript(per_utt["text"].get(utt, ""))
            if text is None:
                report.drop(utt, note if utt in per_utt["text"] else "no transcript in text")
            elif note:
                per_utt["text"][utt] = text
                report.repair(utt, note)
        if "utt2spk" in per_utt and utt not in per_utt["utt2spk"] and utt not in report.dropped:
            per_utt["utt2spk"][utt] = utt
            report.repair(utt, "no utt2spk entry: the utterance is its own speaker")
    kept = {u: p for u, p in wav_scp.items() if u not in report.dropped}
    return CheckedDir(wav_scp=kept, img_scp=img_scp, per_utt=per_utt, num_utts=num_utts)
