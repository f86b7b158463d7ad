"""Stage 3 on the CLIP side: image embeddings dumped as ``npy`` and the reduced token vocabulary.

ESPnet has no image data type, so the frozen CLIP image embedding of every image is written once
(``<out>/image_feats/<image>.npy``) with ``img_feats.scp`` (image -> npy) and ``image_feats.scp``
(utterance -> its image's npy) for ESPnet's ``npy`` reader. The reduced vocabulary holds the CLIP
token ids of the **training** captions only (``build_vocab``): SpeechCLIP's code built it from every
caption, test included, which lets test words into the VQ codebook. That reference rule is kept as an
option (``build_reference_vocab``), and the reference repository's own statistics file can be read
(``read_reference_vocab_stats``), for runs that must use the reference's exact reduced table.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Sequence, Union

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from espnet_speechclip.clip_adapter import FrozenCLIP
from espnet_speechclip.data.kaldi_dir import read_kaldi_map, write_kaldi_map

logger = logging.getLogger(__name__)


def load_rgb(image_id: str, path: str) -> Image.Image:
    """Open an image as RGB; a missing or corrupt file raises ``ValueError`` naming the image."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode != "RGB":
                logger.info("image %s: converted %s to RGB", image_id, img.mode)
                # Alpha is composited on white so transparent regions do not turn black.
                if img.mode in ("RGBA", "LA", "P"):
                    img = img.convert("RGBA")
                    background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                    img = Image.alpha_composite(background, img)
                return img.convert("RGB")
            return img.copy()
    except (OSError, SyntaxError) as err:
        raise ValueError(f"image {image_id}: cannot read {path}: {err}") from err


def load_image_batch(clip: FrozenCLIP, items: Sequence[tuple]) -> torch.Tensor:
    """(image_id, path) pairs -> (B, 3, H, W) preprocessed for this CLIP."""
    return torch.stack([clip.preprocess(load_rgb(i, p)) for i, p in items])


@torch.no_grad()
def dump_image_feats(clip: FrozenCLIP, data_dir: str, out_dir: str, batch_size: int = 64) -> Dict[str, str]:
    """Embed every image of ``data_dir/img.scp`` used by ``utt2img``; returns image -> npy path."""
    data, out = Path(data_dir), Path(out_dir)
    img_scp = read_kaldi_map(data / "img.scp")
    utt2img = read_kaldi_map(data / "utt2img")
    unknown = sorted({img for img in utt2img.values() if img not in img_scp})
    if unknown:
        raise ValueError(f"{data / 'utt2img'}: images not in img.scp: {unknown[:10]}")
    needed = sorted(set(utt2img.values()))
    feat_dir = out / "image_feats"
    feat_dir.mkdir(parents=True, exist_ok=True)
    paths: Dict[str, str] = {}
    for start in tqdm(range(0, len(needed), batch_size), desc=f"stage 3: image embeddings {data.name}"):
        chunk = needed[start:start + batch_size]
        feats = clip.encode_image(load_image_batch(clip, [(i, img_scp[i]) for i in chunk])).float().numpy()
        for image_id, feat in zip(chunk, feats):
            path = feat_dir / f"{image_id}.npy"
            np.save(path, feat)
            paths[image_id] = str(path.resolve())
    write_kaldi_map(out / "img_feats.scp", paths)
    write_kaldi_map(out / "image_feats.scp", {utt: paths[img] for utt, img in utt2img.items()})
    logger.info("%s: %d image embeddings (%d-d) for %d utterances", data.name, len(paths), feats.shape[1],
                len(utt2img))
    return paths


def build_vocab(clip: FrozenCLIP, train_text: str, output: str) -> List[int]:
    """CLIP token ids of the training captions (pad/SOT/EOT excluded) -> ``id piece`` lines."""
    captions = list(read_kaldi_map(train_text).values())
    ids = set()
    for start in range(0, len(captions), 1024):
        ids.update(clip.tokenize(captions[start:start + 1024]).flatten().tolist())
    ids -= {clip.pad_id, clip.sot_id, clip.eot_id}
    vocab = sorted(ids)
    write_vocab(clip, vocab, output)
    logger.info("reduced CLIP vocabulary: %d tokens from %d training captions -> %s", len(vocab), len(captions), output)
    return vocab


def write_vocab(clip: FrozenCLIP, vocab: Sequence[int], output: str) -> None:
    """``id piece`` lines in row order (``tasks/speechclip.py:read_vocab`` reads the first column)."""
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    pieces = clip.decode(vocab)
    Path(output).write_text("".join(f"{i} {p}\n" for i, p in zip(vocab, pieces)))


# ---------------------------------------------------------------------------------------------------
# The reference rule: SpeechCLIP+ avssl/data/{flickr,coco}_stat/stat_textCLIP_input.py, whose
# text_clip_vocab_usage_byfreq.npy avssl/module/clip_official.py reads (column 0 = reduced row order).

# clip.tokenize(captions, context_length=77, truncate=False) in both scripts; the padding counts.
REFERENCE_CONTEXT_LENGTH = 77
# numpy's npysort/quicksort.cpp: partitions of at most this many + 1 elements are insertion-sorted.
_SMALL_QUICKSORT = 15


def reference_caption(text: str, strip_final_period: bool = True) -> str:
    """The caption as the Flickr8k stat script feeds it to CLIP: stripped, one final "." dropped.

    The SpokenCOCO script keeps the caption as it is (``strip_final_period=False``).
    """
    text = text.strip()
    if strip_final_period and text.endswith("."):
        text = text[:-1].strip()
    return text


def numpy_quicksort_argsort(values: Sequence[int]) -> List[int]:
    """``np.argsort(values)`` as numpy's generic introsort (``aquicksort_``) orders it, ties included.

    The reference sorted its counts with the default, unstable ``argsort``; in 2022 that was this
    introsort. numpy >= 1.25 dispatches the same call to SIMD sorts on AVX2/AVX-512 CPUs, which
    order ties differently (on an AVX-512 machine with numpy 2.5, 7,725 of the 8,112 Flickr8k rows
    move), so the tie order is reproduced by this port rather than by calling numpy.
    """
    v = list(values)
    order = list(range(len(v)))
    if len(v) < 2:
        return order

    def swap(a: int, b: int) -> None:
        order[a], order[b] = order[b], order[a]

    stack = []  # (left, right, depth) of the larger partitions still to sort
    left, right = 0, len(v) - 1
    depth = (len(v).bit_length() - 1) * 2  # npy_get_msb(num) * 2
    while True:
        if depth < 0:  # not enough progress: heapsort the rest of this partition
            _numpy_heapsort_argsort(v, order, left, right - left + 1)
        else:
            while right - left > _SMALL_QUICKSORT:
                mid = left + ((right - left) >> 1)  # median of three
                if v[order[mid]] < v[order[left]]:
                    swap(mid, left)
                if v[order[right]] < v[order[mid]]:
                    swap(right, mid)
                if v[order[mid]] < v[order[left]]:
                    swap(mid, left)
                pivot = v[order[mid]]
                i, j = left, right - 1
                swap(mid, j)
                while True:
                    i += 1
                    while v[order[i]] < pivot:
                        i += 1
                    j -= 1
                    while pivot < v[order[j]]:
                        j -= 1
                    if i >= j:
                        break
                    swap(i, j)
                swap(i, right - 1)
                depth -= 1
                if i - left < right - i:
                    stack.append((i + 1, right, depth))
                    right = i - 1
                else:
                    stack.append((left, i - 1, depth))
                    left = i + 1
            for i in range(left + 1, right + 1):  # insertion sort
                item, j = order[i], i
                while j > left and v[item] < v[order[j - 1]]:
                    order[j] = order[j - 1]
                    j -= 1
                order[j] = item
        if not stack:
            return order
        left, right, depth = stack.pop()


def _numpy_heapsort_argsort(v: List[int], order: List[int], start: int, n: int) -> None:
    """numpy's ``aheapsort_`` on ``order[start:start + n]`` (1-based heap indices), in place."""

    def at(k: int) -> int:
        return order[start + k - 1]

    def put(k: int, item: int) -> None:
        order[start + k - 1] = item

    def sift(item: int, i: int, j: int, size: int) -> None:
        while j <= size:
            if j < size and v[at(j)] < v[at(j + 1)]:
                j += 1
            if not v[item] < v[at(j)]:
                break
            put(i, at(j))
            i, j = j, j + j
        put(i, item)

    for k in range(n >> 1, 0, -1):
        sift(at(k), k, k << 1, n)
    while n > 1:
        item = at(n)
        put(n, at(1))
        n -= 1
        sift(item, 1, 2, n)


def reference_token_counts(tokens: np.ndarray) -> np.ndarray:
    """tokens (B, 77) padded CLIP ids -> (N, 2) rows ``[id, count]`` in the reference's row order.

    The stat scripts' own lines: ``np.unique(tokens.flatten(), return_counts=True)`` (ids ascending),
    ``result = np.asarray((unique, counts)).T`` and ``result[result[:, 1].argsort()[::-1]]``:
    descending count, ties in the reverse of the introsort's order (``numpy_quicksort_argsort``).
    Pad (0), SOT and EOT are counted like any other token.
    """
    if tokens.ndim != 2:
        raise ValueError(f"tokens (B, L) expected, got shape {tokens.shape}")
    unique, counts = np.unique(tokens.reshape(-1), return_counts=True)
    result = np.asarray((unique, counts)).T  # (N, 2)
    return result[numpy_quicksort_argsort(result[:, 1].tolist())[::-1]]


def tokenize_reference(clip: FrozenCLIP, captions: Sequence[str]) -> np.ndarray:
    """(B, 77) CLIP ids with padding; a caption longer than 77 tokens raises, as ``truncate=False`` did."""
    tokenizer = clip.tokenizer
    if getattr(tokenizer, "encoder", None) is None or getattr(tokenizer, "reduction_fn", None) is not None:
        raise ValueError(f"the reference rule needs CLIP's BPE tokenizer (open_clip SimpleTokenizer without "
                         f"a reduction), {clip.model_name!r} has {type(tokenizer).__name__}")
    # One position more than the reference: open_clip truncates silently, a token there is an overflow.
    tokens = tokenizer(list(captions), context_length=REFERENCE_CONTEXT_LENGTH + 1).numpy()  # (B, 78)
    too_long = np.flatnonzero(tokens[:, -1] != clip.pad_id)
    if len(too_long):
        raise ValueError(f"{len(too_long)} caption(s) exceed CLIP's {REFERENCE_CONTEXT_LENGTH} tokens, e.g. "
                         f"{captions[too_long[0]]!r}")
    return tokens[:, :REFERENCE_CONTEXT_LENGTH]


def build_reference_vocab(clip: FrozenCLIP, texts: Sequence[str], output: str,
                          strip_final_period: bool = True) -> List[int]:
    """The reference's reduced vocabulary from the Kaldi ``text`` files of every split -> ``id piece`` lines.

    Row order is the reference's (descending count, pad/SOT/EOT included); ``strip_final_period``
    follows the Flickr8k script, the SpokenCOCO one does not strip.
    """
    captions: List[str] = []
    seen: Dict[str, str] = {}
    for text in texts:
        for utt, caption in read_kaldi_map(text).items():
            if utt in seen:
                raise ValueError(f"utterance {utt!r} is in both {seen[utt]} and {text}: a split given twice?")
            seen[utt] = text
            captions.append(reference_caption(caption, strip_final_period))
    if not captions:
        raise ValueError(f"no captions in {list(texts)}")
    tokens = np.concatenate([tokenize_reference(clip, captions[start:start + 1024])
                             for start in range(0, len(captions), 1024)])  # (B, 77)
    stats = reference_token_counts(tokens)
    vocab = stats[:, 0].tolist()
    write_vocab(clip, vocab, output)
    logger.info("reduced CLIP vocabulary (reference rule): %d tokens from %d captions of %d split(s) -> %s",
                len(vocab), len(captions), len(texts), output)
    return vocab


def read_reference_vocab_stats(path: Union[str, Path]) -> List[int]:
    """CLIP ids, in row order, of the reference's ``text_clip_vocab_usage_byfreq.npy`` (or its ``.txt``).

    The file is an (N, 2) array of ``[id, count]`` rows (the ``.txt`` holds them as floats, from
    ``np.savetxt``); column 0 is the reduced table's row order (``clip_official.py``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference vocabulary statistics not found: {path}")
    try:
        stats = np.load(path, allow_pickle=False) if path.suffix == ".npy" else np.loadtxt(path, ndmin=2)
    except ValueError as err:
        raise ValueError(f"{path}: not an (N, 2) array of CLIP ids and counts ({err})") from err
    if stats.ndim != 2 or stats.shape[0] == 0 or stats.shape[1] != 2 or not np.issubdtype(stats.dtype, np.number):
        raise ValueError(f"{path}: not an (N, 2) array of CLIP ids and counts: shape {stats.shape}, "
                         f"dtype {stats.dtype}")
    ids = stats[:, 0]
    if (ids != np.round(ids)).any() or (ids < 0).any() or (stats[:, 1] < 0).any():
        raise ValueError(f"{path}: column 0 must hold CLIP ids and column 1 counts (non-negative integers)")
    ids = ids.astype(np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{path}: a CLIP id appears twice in column 0")
    return ids.tolist()


def convert_reference_vocab_stats(clip: FrozenCLIP, stats: str, output: str) -> List[int]:
    """The reference's statistics file -> our ``id piece`` vocabulary, rows in the same order."""
    vocab = read_reference_vocab_stats(stats)
    num_tokens = clip.model.token_embedding.weight.shape[0]
    if max(vocab) >= num_tokens:
        raise ValueError(f"{stats}: CLIP id {max(vocab)} is outside {clip.model_name!r}'s {num_tokens} tokens")
    write_vocab(clip, vocab, output)
    logger.info("reduced CLIP vocabulary: %d tokens in the row order of %s -> %s", len(vocab), stats, output)
    return vocab
