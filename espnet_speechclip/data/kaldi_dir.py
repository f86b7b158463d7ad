"""Kaldi-style data directories for SpeechCLIP (DESIGN §4).

One directory per split holds::

    wav.scp     utt -> wav path (absolute), or a Kaldi pipe command ending in "|"
    text        utt -> transcript (evaluation and the CLIP vocabulary only)
    utt2img     utt -> image id
    img.scp     image id -> image path
    utt2spk     utt -> speaker id;  spk2utt is derived from it
    word_align  optional: utt -> "word start end word start end ..." (seconds)

Every file is sorted by key (byte order, as Kaldi's ``LC_ALL=C sort``) with unique keys. Utterance ids
begin with their speaker id (``<speaker>-<rest>``, Kaldi's convention) so that utt2spk sorted by
utterance is also sorted by speaker, as Kaldi's ``validate_data_dir.sh`` requires of utt2spk and spk2utt.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

REQUIRED_FILES = ("wav.scp", "text", "utt2img", "img.scp", "utt2spk")
# Files keyed by utterance whose key sets must be identical.
UTT_FILES = ("wav.scp", "text", "utt2img", "utt2spk")

WordAlign = list[tuple[str, float, float]]
# Every character of a speaker id sorts after "-" (byte order), so "<speaker>-<rest>" utterance ids sort
# like their speakers even when one speaker id is a prefix of another ("spk1-x" < "spk10-x", while
# "spk1_x" > "spk10_x"). An utterance that is its own speaker needs an id of this form too.
SPEAKER_ID = re.compile(r"[.0-9A-Z_a-z]+")


def is_speaker_id(value: object) -> bool:
    """Whether ``value`` can prefix utterance ids (see ``SPEAKER_ID``)."""
    return isinstance(value, str) and SPEAKER_ID.fullmatch(value) is not None


def utt2spk_sort_mismatch(utt2spk: Mapping[str, str]) -> str | None:
    """The first utterance where sorting by utterance and by (speaker, utterance) disagree, else ``None``.

    Kaldi's ``validate_data_dir.sh`` compares utt2spk with spk2utt expanded back to utt2spk, so both
    orders must agree; speaker-prefixed ids with ``SPEAKER_ID`` speakers always do.
    """
    by_speaker = sorted(utt2spk, key=lambda utt: (utt2spk[utt], utt))
    return next((utt for utt, other in zip(sorted(utt2spk), by_speaker) if utt != other), None)


def _read_lines(path: Path) -> list[tuple[str, str]]:
    """(key, rest-of-line) pairs in file order; a line without a value keeps ``""``."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                raise ValueError(f"{path}:{lineno}: empty line")
            key, _, rest = line.partition(" ")
            if not key:
                raise ValueError(f"{path}:{lineno}: line starts with a space: {line!r}")
            pairs.append((key, rest.strip()))
    return pairs


def read_kaldi_map(path: str | Path) -> dict[str, str]:
    """Read ``key rest-of-line`` lines into a dict; a duplicate key raises ``ValueError``.

    A dict would silently keep the last of two duplicate lines, hiding a broken data dir,
    hence the check here rather than only in :func:`validate_data_dir`.
    """
    path = Path(path)
    out: dict[str, str] = {}
    for key, rest in _read_lines(path):
        if key in out:
            raise ValueError(f"{path}: duplicate key {key!r}")
        out[key] = rest
    return out


def write_kaldi_map(path: str | Path, mapping: Mapping[str, str]) -> None:
    """Write ``key value`` lines sorted by key (Python's code-point order == ``LC_ALL=C``)."""
    with open(path, "w", encoding="utf-8") as f:
        for key in sorted(mapping):
            if not key or any(c.isspace() for c in key):
                raise ValueError(f"{path}: invalid key {key!r} (empty or contains whitespace)")
            f.write(f"{key} {mapping[key]}\n")


def format_word_align(words: Sequence[tuple[str, float, float]]) -> str:
    """``[("a", 0.0, 0.12), ...]`` -> ``"a 0.000 0.120 ..."`` (millisecond resolution)."""
    return " ".join(f"{w} {s:.3f} {e:.3f}" for w, s, e in words)


def parse_word_align(value: str) -> WordAlign:
    """Inverse of :func:`format_word_align`; raises ``ValueError`` on a malformed line."""
    fields = value.split()
    if len(fields) % 3:
        raise ValueError(f"word_align value has {len(fields)} fields, not a multiple of 3")
    return [(fields[i], float(fields[i + 1]), float(fields[i + 2])) for i in range(0, len(fields), 3)]


def read_word_align(path: str | Path) -> dict[str, WordAlign]:
    """Read a ``word_align`` file into utt -> [(word, start, end), ...]."""
    return {utt: parse_word_align(v) for utt, v in read_kaldi_map(path).items()}


def spk2utt_from_utt2spk(utt2spk: Mapping[str, str]) -> dict[str, str]:
    """Derive spk2utt (speaker -> space-separated sorted utterance ids)."""
    spk2utts: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utts.setdefault(utt2spk[utt], []).append(utt)
    return {spk: " ".join(utts) for spk, utts in spk2utts.items()}


def write_data_dir(
    path: str | Path,
    *,
    wav_scp: Mapping[str, str],
    text: Mapping[str, str],
    utt2img: Mapping[str, str],
    img_scp: Mapping[str, str],
    utt2spk: Mapping[str, str],
    word_align: Mapping[str, Sequence[tuple[str, float, float]]] | None = None,
) -> None:
    """Write all files of one split (plus the derived ``spk2utt``) into ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name, mapping in (("wav.scp", wav_scp), ("text", text), ("utt2img", utt2img),
                          ("img.scp", img_scp), ("utt2spk", utt2spk)):
        write_kaldi_map(path / name, mapping)
    write_kaldi_map(path / "spk2utt", spk2utt_from_utt2spk(utt2spk))
    if word_align is not None:
        write_kaldi_map(path / "word_align", {u: format_word_align(a) for u, a in word_align.items()})


def _read_checked(path: Path) -> dict[str, str]:
    """Read a map and check that its keys are sorted and unique."""
    pairs = _read_lines(path)
    for (prev, _), (key, _) in zip(pairs, pairs[1:]):
        if key == prev:
            raise ValueError(f"{path}: duplicate key {key!r}")
        if key < prev:
            raise ValueError(f"{path}: not sorted: key {key!r} comes after {prev!r}")
    return dict(pairs)


def validate_data_dir(path: str | Path) -> None:
    """Check a data dir; raise ``ValueError`` naming the file and key of the first problem.

    Checks: required files present; keys sorted and unique; the same utterances in wav.scp,
    text, utt2img and utt2spk; every utt2img image id in img.scp; every wav / image path
    exists (pipe commands ending in ``|`` are not run); spk2utt (if present) agrees with
    utt2spk; word_align (if present) covers known utterances with ordered, non-negative times.
    """
    path = Path(path)
    for name in REQUIRED_FILES:
        if not (path / name).is_file():
            raise ValueError(f"{path / name}: missing")
    maps = {name: _read_checked(path / name) for name in REQUIRED_FILES}
    utts = set(maps["wav.scp"])
    for name in UTT_FILES[1:]:
        diff = utts.symmetric_difference(maps[name])
        if diff:
            key = min(diff)
            where = "wav.scp" if key in utts else name
            raise ValueError(f"{path / name}: utterance {key!r} is in {where} only")
    for utt, img in maps["utt2img"].items():
        if img not in maps["img.scp"]:
            raise ValueError(f"{path / 'utt2img'}: utterance {utt!r} points to image id {img!r} "
                             f"absent from img.scp")
    for name in ("wav.scp", "img.scp"):
        for key, value in maps[name].items():
            if not value.endswith("|") and not Path(value).is_file():
                raise ValueError(f"{path / name}: {key!r}: file does not exist: {value}")
    if (path / "spk2utt").is_file():
        spk2utt = _read_checked(path / "spk2utt")
        expected = spk2utt_from_utt2spk(maps["utt2spk"])
        for spk in sorted(set(spk2utt) | set(expected)):
            if spk2utt.get(spk, "").split() != expected.get(spk, "").split():
                raise ValueError(f"{path / 'spk2utt'}: speaker {spk!r} disagrees with utt2spk")
    if (path / "word_align").is_file():
        for utt, value in _read_checked(path / "word_align").items():
            if utt not in utts:
                raise ValueError(f"{path / 'word_align'}: unknown utterance {utt!r}")
            try:
                words = parse_word_align(value)
            except ValueError as e:
                raise ValueError(f"{path / 'word_align'}: {utt!r}: {e}") from None
            times = [t for _, s, e in words for t in (s, e)]
            if any(t < 0 for t in times) or any(b < a for a, b in zip(times, times[1:])):
                raise ValueError(f"{path / 'word_align'}: {utt!r}: times not ordered: {value}")
    logger.debug("validated %s: %d utterances, %d images", path, len(utts), len(maps["img.scp"]))
