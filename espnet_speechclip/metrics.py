"""Evaluation metrics: cross-modal retrieval recall, keyword precision/recall/F1 and hit rate,
CIF boundary F1 (definitions in DESIGN.md §6).

Retrieval is written once, for a generic query set against a generic gallery, with relevance
given by labels: gallery item j is relevant to query i iff ``query_labels[i] == gallery_labels[j]``.
Speech→image uses the image index of each utterance as its label and ``arange(M)`` for the
images; image→speech swaps the roles, so an image has as many relevant items as it has captions.
Zero-shot speech↔text is the same call with text embeddings as the gallery (one text per
utterance: labels ``arange(N)``; one text per image: the utterance's image index).

Ties are counted against the query (pessimistic): the rank of a query is

    rank = 1 + #{non-relevant gallery items whose score >= the best relevant score},

so a relevant image tied with a distractor at the top has rank 2, not 1. An optimistic rule
would let a degenerate model that maps everything to one point score R@1 = 1.
"""
from __future__ import annotations

import logging
import re
from typing import Dict, FrozenSet, List, Mapping, Optional, Sequence, Set, Tuple

import torch

logger = logging.getLogger(__name__)

RecallDict = Dict[str, float]


def _relevant_groups(
    query_labels: torch.Tensor, gallery_labels: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Locate each query's relevant gallery items in the label-sorted gallery.

    Returns:
        order: (G,) gallery indices sorted by label.
        start: (Q,) position in ``order`` of the query's first relevant item.
        count: (Q,) number of relevant gallery items (all >= 1).
    """
    sorted_labels, order = torch.sort(gallery_labels, stable=True)
    uniq, counts = torch.unique_consecutive(sorted_labels, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.searchsorted(uniq, query_labels).clamp_(max=max(len(uniq) - 1, 0))
    found = uniq[pos] == query_labels if len(uniq) else torch.zeros_like(query_labels).bool()
    if not bool(found.all()):
        bad = torch.nonzero(~found).flatten()[:5].tolist()
        raise ValueError(
            f"{int((~found).sum())} queries have no relevant gallery item "
            f"(e.g. query indices {bad} with labels {query_labels[bad].tolist()})"
        )
    return order, starts[pos], counts[pos]


@torch.no_grad()
def first_relevant_rank(
    query: torch.Tensor,
    gallery: torch.Tensor,
    query_labels: torch.Tensor,
    gallery_labels: Optional[torch.Tensor] = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Pessimistic rank of the best-scoring relevant gallery item for every query.

    Scores are cosine similarities in float32. Queries are processed ``chunk_size`` at a time,
    so at most a (chunk_size, G) score matrix exists; per chunk we take the best relevant score
    (gathered from that same matrix, so ties compare bit-identical values) and count the items
    scoring at least as high, then subtract the relevant ones among them.

    Args:
        query: (Q, D) query embeddings.
        gallery: (G, D) gallery embeddings.
        query_labels: (Q,) integer label of each query.
        gallery_labels: (G,) integer label of each gallery item; defaults to ``arange(G)``, in
            which case ``query_labels[i]`` is simply the index of query i's relevant item.
        chunk_size: number of queries scored at once (memory ~ 4 * chunk_size * G bytes).

    Returns:
        (Q,) int64 ranks, 1 = best.

    Raises:
        ValueError: on shape mismatch, or if a query has no relevant gallery item.
    """
    if query.dim() != 2 or gallery.dim() != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"expected query (Q, D) and gallery (G, D) with the same D, "
            f"got {tuple(query.shape)} and {tuple(gallery.shape)}"
        )
    num_q, num_g = query.shape[0], gallery.shape[0]
    if gallery_labels is None:
        gallery_labels = torch.arange(num_g)
    query_labels = torch.as_tensor(query_labels, dtype=torch.long).cpu()
    gallery_labels = torch.as_tensor(gallery_labels, dtype=torch.long).cpu()
    if query_labels.shape != (num_q,) or gallery_labels.shape != (num_g,):
        raise ValueError(
            f"expected query_labels ({num_q},) and gallery_labels ({num_g},), "
            f"got {tuple(query_labels.shape)} and {tuple(gallery_labels.shape)}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    order, rel_start, rel_count = _relevant_groups(query_labels, gallery_labels)

    query = torch.nn.functional.normalize(query.detach().float(), dim=-1)  # (Q, D)
    gallery_t = torch.nn.functional.normalize(gallery.detach().float(), dim=-1).t()  # (D, G)
    order = order.to(query.device)
    sum_dtype = torch.float32 if num_g < 2**24 else torch.float64
    ranks = torch.empty(num_q, dtype=torch.long)
    for lo in range(0, num_q, chunk_size):
        hi = min(lo + chunk_size, num_q)
        sims = query[lo:hi] @ gallery_t  # (C, G)
        count = rel_count[lo:hi].to(sims.device)  # (C,)
        # Enumerate the (query, relevant item) pairs of this chunk without a Python loop.
        row = torch.repeat_interleave(torch.arange(hi - lo, device=sims.device), count)  # (P,)
        first_pair = torch.cumsum(count, 0) - count
        offset = torch.arange(row.numel(), device=sims.device) - first_pair[row]
        col = order[rel_start[lo:hi].to(sims.device)[row] + offset]  # (P,)
        rel_scores = sims[row, col]  # (P,)
        best = torch.full((hi - lo,), float("-inf"), device=sims.device)
        best.scatter_reduce_(0, row, rel_scores, reduce="amax")
        # In place: sims becomes the 0/1 indicator of score >= best, summed in float32 (exact
        # below 2**24 items); avoids the int64 copy that summing a bool matrix makes.
        at_least_best = sims.ge_(best[:, None]).sum(1, dtype=sum_dtype).long()  # (C,)
        relevant_at_best = torch.zeros_like(at_least_best).index_add_(
            0, row, (rel_scores >= best[row]).long()
        )
        ranks[lo:hi] = (1 + at_least_best - relevant_at_best).cpu()
    return ranks


def recall_from_ranks(ranks: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> RecallDict:
    """``{"r{k}": fraction of queries with rank <= k}`` as Python floats."""
    if ranks.numel() == 0:
        raise ValueError("recall over an empty query set")
    return {f"r{k}": float((ranks <= k).double().mean()) for k in ks}


def recall_at_k(
    query: torch.Tensor,
    gallery: torch.Tensor,
    query_labels: torch.Tensor,
    gallery_labels: Optional[torch.Tensor] = None,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> RecallDict:
    """Query→gallery recall@k: hit if any relevant item is in the top k (ties count against).

    Arguments as in :func:`first_relevant_rank`.
    """
    ranks = first_relevant_rank(query, gallery, query_labels, gallery_labels, chunk_size)
    return recall_from_ranks(ranks, ks)


def recall_curve(
    query: torch.Tensor,
    gallery: torch.Tensor,
    query_labels: torch.Tensor,
    gallery_labels: Optional[torch.Tensor] = None,
    max_k: int = 50,
    chunk_size: int = 1024,
) -> Dict[int, float]:
    """Recall@k for every k in 1..max_k (for :func:`espnet_speechclip.plots.plot_recall_curves`)."""
    return curve_from_ranks(first_relevant_rank(query, gallery, query_labels, gallery_labels, chunk_size), max_k)


def curve_from_ranks(ranks: torch.Tensor, max_k: int = 50) -> Dict[int, float]:
    """``{k: recall@k}`` for every k in 1..max_k from precomputed ranks."""
    recalls = recall_from_ranks(ranks, range(1, max_k + 1))
    return {k: recalls[f"r{k}"] for k in range(1, max_k + 1)}


def retrieval_recall(
    speech_emb: torch.Tensor,
    image_emb: torch.Tensor,
    utt2img_index: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
    directions: Tuple[str, str] = ("speech_to_image", "image_to_speech"),
) -> Dict[str, RecallDict]:
    """Recall@k in both directions between N utterances and M distinct gallery items.

    Speech→gallery: each utterance ranks all M items; hit if its own item is in the top k.
    Gallery→speech: each item ranks all N utterances; hit if any of its captions is in the top k.
    For zero-shot speech↔text pass text embeddings as ``image_emb`` and
    ``directions=("speech_to_text", "text_to_speech")``.

    Args:
        speech_emb: (N, D) utterance embeddings.
        image_emb: (M, D) embeddings of the distinct images (or texts).
        utt2img_index: (N,) index in [0, M) of each utterance's image; every image needs at
            least one utterance.
        ks: cut-offs, giving result keys ``"r{k}"``; chunk_size: queries scored at once.
        directions: names of the two result entries.

    Returns:
        ``{directions[0]: {"r1": ..}, directions[1]: {"r1": ..}}``, floats in [0, 1].
    """
    ranks = retrieval_ranks(speech_emb, image_emb, utt2img_index, chunk_size, directions)
    return {direction: recall_from_ranks(r, ks) for direction, r in ranks.items()}


def retrieval_ranks(
    speech_emb: torch.Tensor,
    image_emb: torch.Tensor,
    utt2img_index: torch.Tensor,
    chunk_size: int = 1024,
    directions: Tuple[str, str] = ("speech_to_image", "image_to_speech"),
) -> Dict[str, torch.Tensor]:
    """The ranks behind :func:`retrieval_recall`: ``{directions[0]: (N,), directions[1]: (M,)}``,
    so that recalls, recall@k curves and bootstrap hits come from one ranking."""
    utt2img_index = torch.as_tensor(utt2img_index, dtype=torch.long).cpu()
    num_img = image_emb.shape[0]
    if utt2img_index.numel() and (utt2img_index.min() < 0 or utt2img_index.max() >= num_img):
        raise ValueError(
            f"utt2img_index must lie in [0, {num_img}), got range "
            f"[{int(utt2img_index.min())}, {int(utt2img_index.max())}]"
        )
    images = torch.arange(num_img)
    return {
        directions[0]: first_relevant_rank(speech_emb, image_emb, utt2img_index, images, chunk_size),
        directions[1]: first_relevant_rank(image_emb, speech_emb, images, utt2img_index, chunk_size),
    }


def mean_recall(result: Mapping[str, Mapping[str, float]]) -> float:
    """Mean of every r@k of every direction in a :func:`retrieval_recall` result."""
    values = [v for direction in result.values() for v in direction.values()]
    if not values:
        raise ValueError("mean_recall of an empty result")
    return sum(values) / len(values)


# ---- Keywords --------------------------------------------------------------------------------

# Function words only. Spatial words ("left", "right", "above") stay content words: in the
# SpokenShapes captions they carry meaning a keyword should capture.
STOP_WORDS: FrozenSet[str] = frozenset(
    """a an the this that these those some any each every no not very too also just only
    of to in on at by for from with without into onto about as than and or but nor so if then
    is are was were be been being am do does did has have had will would can could shall should
    may might must i me my we us our you your he him his she her it its it's they them their
    there here who whom whose which what where when how""".split()
)

_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def content_words(text: str) -> Set[str]:
    """Lowercased words of ``text``, punctuation stripped, stop words removed."""
    return {w for w in _WORD_RE.findall(text.lower()) if w not in STOP_WORDS}


def _words_of(items: Sequence[str]) -> Set[str]:
    out: Set[str] = set()
    for item in items:
        out |= content_words(item)
    return out


def _safe_div(num: float, den: float) -> float:
    return num / den if den else 0.0


def keyword_prf(predicted: Sequence[Sequence[str]], references: Sequence[str]) -> Dict[str, float]:
    """Micro-averaged keyword precision / recall / F1.

    Per utterance the predicted keywords are normalised like the reference (lowercased,
    punctuation stripped, stop words dropped) and deduplicated into a set; the reference is the
    content-word set of the transcript. Then precision = ΣTP / Σ|predicted|,
    recall = ΣTP / Σ|reference| over the test set; a zero denominator gives 0.0.
    """
    if len(predicted) != len(references):
        raise ValueError(f"{len(predicted)} predictions for {len(references)} references")
    tp = n_pred = n_ref = 0
    for pred, ref in zip(predicted, references):
        pred_set, ref_set = _words_of(pred), content_words(ref)
        tp += len(pred_set & ref_set)
        n_pred += len(pred_set)
        n_ref += len(ref_set)
    precision, recall = _safe_div(tp, n_pred), _safe_div(tp, n_ref)
    return {
        "precision": precision,
        "recall": recall,
        "f1": _safe_div(2 * precision * recall, precision + recall),
    }


def keyword_hit_rate(
    slot_candidates: Sequence[Sequence[Sequence[str]]], references: Sequence[str]
) -> float:
    """Share of keyword slots whose candidate words contain a content word of the transcript.

    ``slot_candidates[u][s]`` is the top-k candidate list (SpeechCLIP uses k = 5) of keyword
    slot s of utterance u. hit rate = hitting slots / all slots; 0.0 when there are no slots.
    With a fixed number of slots per utterance this is the mean over slots of SpeechCLIP's
    per-slot hit rate.
    """
    if len(slot_candidates) != len(references):
        raise ValueError(f"{len(slot_candidates)} candidate lists for {len(references)} references")
    hits = slots = 0
    for slots_u, ref in zip(slot_candidates, references):
        ref_set = content_words(ref)
        for candidates in slots_u:
            slots += 1
            hits += bool(_words_of(candidates) & ref_set)
    if slots == 0:
        logger.warning("keyword_hit_rate: no keyword slots; returning 0.0")
    return _safe_div(hits, slots)


# ---- Boundaries ------------------------------------------------------------------------------

_TIME_SLACK = 1e-9  # seconds: keeps a difference of exactly `tolerance` inside despite rounding


def _match_boundaries(pred: Sequence[float], ref: Sequence[float], tolerance: float) -> int:
    """Size of a maximum one-to-one matching with |p - r| <= tolerance.

    Two pointers over the sorted points. The prediction p_i compatible with the earliest
    remaining reference r_j can be matched to it: if an optimal matching pairs p_i with r_k and
    p_l with r_j (p_l >= p_i, r_k >= r_j), then r_j - tol <= p_i <= p_l and
    r_k <= p_i + tol <= p_l + tol, r_k >= r_j >= p_l - tol, so swapping to (p_i, r_j), (p_l, r_k)
    keeps it valid. A point that lies beyond the tolerance window of the other side's earliest
    remaining point cannot match anything later and is dropped. So greedy is optimal.
    """
    p, r = sorted(pred), sorted(ref)
    i = j = matched = 0
    tol = tolerance + _TIME_SLACK
    while i < len(p) and j < len(r):
        if p[i] < r[j] - tol:
            i += 1
        elif r[j] < p[i] - tol:
            j += 1
        else:
            matched += 1
            i += 1
            j += 1
    return matched


def boundary_f1(
    predicted: Sequence[Sequence[float]],
    reference: Sequence[Sequence[float]],
    tolerance: float = 0.05,
) -> Dict[str, float]:
    """Boundary precision / recall / F1, micro over utterances.

    Each predicted boundary (seconds) matches at most one reference boundary within
    ±``tolerance`` (inclusive) and vice versa, with a maximum matching per utterance;
    precision = matched / Σ|predicted|, recall = matched / Σ|reference|, 0.0 on a zero
    denominator. Default tolerance ±50 ms (DESIGN.md §6).
    """
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predicted utterances for {len(reference)} references")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    matched = n_pred = n_ref = 0
    for pred, ref in zip(predicted, reference):
        matched += _match_boundaries(pred, ref, tolerance)
        n_pred += len(pred)
        n_ref += len(ref)
    precision, recall = _safe_div(matched, n_pred), _safe_div(matched, n_ref)
    return {
        "precision": precision,
        "recall": recall,
        "f1": _safe_div(2 * precision * recall, precision + recall),
    }


def boundary_f1_by_offset(
    predicted: Sequence[Sequence[float]],
    reference: Sequence[Sequence[float]],
    offsets: Sequence[float],
    tolerance: float = 0.05,
) -> List[float]:
    """Boundary F1 after adding each constant ``offset`` (seconds) to every predicted boundary.

    A diagnostic, not a score, and only read against :func:`evenly_spaced_times` with the same
    counts: when words have similar lengths, fires at a constant rate (a flat CIF α) also peak far
    above random times at some shift. Only a peak above that one means the predicted boundaries
    follow the reference ones with a steady lag.
    """
    return [boundary_f1([[t + offset for t in utt] for utt in predicted], reference, tolerance)["f1"]
            for offset in offsets]


def evenly_spaced_times(counts: Sequence[int], durations: Sequence[float]) -> List[List[float]]:
    """Where a constant CIF weight fires: n times per utterance of duration d at t_k = k d / n,
    k = 1..n (the running sum of α = n / T per frame crosses k at frame k T / n)."""
    if len(counts) != len(durations):
        raise ValueError(f"evenly_spaced_times: {len(counts)} counts for {len(durations)} durations")
    return [[k * d / n for k in range(1, n + 1)] for n, d in zip(counts, durations)]
