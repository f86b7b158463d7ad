"""Metrics against hand-worked cases and a brute-force reference; plots write PNGs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from espnet_speechclip.metrics import (
    STOP_WORDS,
    boundary_f1,
    boundary_f1_by_offset,
    evenly_spaced_times,
    content_words,
    curve_from_ranks,
    first_relevant_rank,
    keyword_hit_rate,
    keyword_prf,
    mean_recall,
    recall_at_k,
    recall_curve,
    retrieval_ranks,
    retrieval_recall,
)
from espnet_speechclip.plots import plot_boundary_f1_by_offset, plot_cif_firing, plot_recall_curves


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32)


# ---- retrieval: hand-worked ----------------------------------------------------------------

# Images I0 = (1, 0), I1 = (0, 1); utterances are unit vectors, so cosine = the coordinates.
#            score vs I0  score vs I1   image
#   u0 (0.8, 0.6)   0.8        0.6        I0
#   u1 (0.6, 0.8)   0.6        0.8        I0
#   u2 (0.96, 0.28) 0.96       0.28       I1
# speech→image: u0 rank 1 (0.8 > 0.6); u1 rank 2 (0.6 < 0.8); u2 rank 2 (0.28 < 0.96)
#   -> R@1 = 1/3, R@2 = 3/3.
# image→speech: I0 ranks u2 0.96 > u0 0.8 > u1 0.6; best caption u0 is 2nd -> rank 2.
#   I1 ranks u1 0.8 > u0 0.6 > u2 0.28; its only caption u2 is 3rd -> rank 3.
#   -> R@1 = 0, R@2 = 1/2, R@3 = 2/2.
HAND_SPEECH = _t([[0.8, 0.6], [0.6, 0.8], [0.96, 0.28]])
HAND_IMAGES = _t([[1.0, 0.0], [0.0, 1.0]])
HAND_UTT2IMG = torch.tensor([0, 0, 1])


def test_hand_worked_both_directions():
    result = retrieval_recall(HAND_SPEECH, HAND_IMAGES, HAND_UTT2IMG, ks=(1, 2, 3))
    assert result["speech_to_image"] == pytest.approx({"r1": 1 / 3, "r2": 1.0, "r3": 1.0})
    assert result["image_to_speech"] == pytest.approx({"r1": 0.0, "r2": 0.5, "r3": 1.0})
    assert all(isinstance(v, float) for d in result.values() for v in d.values())
    assert mean_recall(result) == pytest.approx((1 / 3 + 1 + 1 + 0 + 0.5 + 1) / 6)


def test_scale_does_not_matter_cosine():
    result = retrieval_recall(HAND_SPEECH * 7.0, HAND_IMAGES * 0.1, HAND_UTT2IMG, ks=(1, 2, 3))
    assert result["speech_to_image"]["r1"] == pytest.approx(1 / 3)


def test_default_ks_keys_and_directions_names():
    result = retrieval_recall(
        HAND_SPEECH, HAND_IMAGES, HAND_UTT2IMG, directions=("speech_to_text", "text_to_speech")
    )
    assert set(result) == {"speech_to_text", "text_to_speech"}
    assert set(result["speech_to_text"]) == {"r1", "r5", "r10"}


def test_ties_count_against_query():
    # u0 = (1, 1) scores exactly 1/sqrt(2) against both images: its image I0 ties with I1 -> rank 2.
    # u1 = (0, 1) belongs to I1 and scores 1 vs 0 -> rank 1.
    speech = _t([[1.0, 1.0], [0.0, 1.0]])
    ranks = first_relevant_rank(speech, HAND_IMAGES, torch.tensor([0, 1]))
    assert ranks.tolist() == [2, 1]
    # Reverse: u0 (I0's caption) and u1 = (1, 1) (I1's caption) tie for I0 -> rank 2.
    speech = _t([[1.0, 1.0], [1.0, 1.0]])
    ranks = first_relevant_rank(HAND_IMAGES, speech, torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert ranks.tolist() == [2, 2]


def test_tied_relevant_items_do_not_count():
    # Two identical captions of I0 both score best: rank 1, not 2.
    speech = _t([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    ranks = first_relevant_rank(HAND_IMAGES, speech, torch.arange(2), torch.tensor([0, 0, 1]))
    assert ranks.tolist() == [1, 1]


def test_any_caption_hits():
    # I0 = (1, 0) has captions u0 (score 0.1) and u2 (1.0): u2 is top, so I0 hits at 1 even
    # though u0 ranks last. I1 = (0, 1) has caption u1 (0.954), beaten by u0 (0.995): rank 2.
    speech = _t([[0.1, 0.995], [0.3, 0.954], [1.0, 0.0]])
    utt2img = torch.tensor([0, 1, 0])
    result = retrieval_recall(speech, HAND_IMAGES, utt2img, ks=(1,))
    assert result["image_to_speech"]["r1"] == 0.5  # I0 hits through u2; I1: u0 0.995 beats u1
    assert first_relevant_rank(HAND_IMAGES, speech, torch.arange(2), utt2img).tolist() == [1, 2]


def test_image_without_caption_is_an_error():
    with pytest.raises(ValueError, match="no relevant gallery item"):
        retrieval_recall(HAND_SPEECH, _t([[1, 0], [0, 1], [1, 1]]), HAND_UTT2IMG)


def test_bad_shapes_and_indices():
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        recall_at_k(HAND_SPEECH, torch.zeros(2, 3), HAND_UTT2IMG)
    with pytest.raises(ValueError, match="must lie in"):
        retrieval_recall(HAND_SPEECH, HAND_IMAGES, torch.tensor([0, 1, 2]))


# ---- retrieval: brute force ----------------------------------------------------------------


def _brute_force_ranks(query, gallery, query_labels, gallery_labels):
    q = query.double().numpy()
    g = gallery.double().numpy()
    ranks = []
    for i in range(len(q)):
        scores = []
        for j in range(len(g)):
            scores.append(float(q[i] @ g[j]) / (np.linalg.norm(q[i]) * np.linalg.norm(g[j])))
        relevant = [j for j in range(len(g)) if gallery_labels[j] == query_labels[i]]
        best = max(scores[j] for j in relevant)
        ranks.append(1 + sum(1 for j in range(len(g)) if j not in relevant and scores[j] >= best))
    return ranks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(20, 8, generator=gen)
    utt2img = torch.cat([torch.arange(20), torch.randint(0, 20, (30,), generator=gen)])
    speech = images[utt2img] + 1.5 * torch.randn(50, 8, generator=gen)
    result = retrieval_recall(speech, images, utt2img, ks=(1, 3, 5, 10, 20))
    s2i = _brute_force_ranks(speech, images, utt2img.tolist(), list(range(20)))
    i2s = _brute_force_ranks(images, speech, list(range(20)), utt2img.tolist())
    for k in (1, 3, 5, 10, 20):
        assert result["speech_to_image"][f"r{k}"] == pytest.approx(np.mean([r <= k for r in s2i]))
        assert result["image_to_speech"][f"r{k}"] == pytest.approx(np.mean([r <= k for r in i2s]))


def test_many_to_many_labels_match_brute_force():
    gen = torch.Generator().manual_seed(3)
    query, gallery = torch.randn(40, 6, generator=gen), torch.randn(30, 6, generator=gen)
    query_labels = torch.randint(0, 5, (40,), generator=gen)
    gallery_labels = torch.cat([torch.arange(5), torch.randint(0, 8, (25,), generator=gen)])
    ranks = first_relevant_rank(query, gallery, query_labels, gallery_labels, chunk_size=6)
    expected = _brute_force_ranks(query, gallery, query_labels.tolist(), gallery_labels.tolist())
    assert ranks.tolist() == expected


@pytest.mark.parametrize("chunk_size", [1, 7, 50, 4096])
def test_chunking_is_invisible(chunk_size):
    gen = torch.Generator().manual_seed(4)
    images = torch.randn(20, 16, generator=gen)
    utt2img = torch.arange(50) % 20
    speech = images[utt2img] + torch.randn(50, 16, generator=gen)
    reference = retrieval_recall(speech, images, utt2img, ks=(1, 2, 5), chunk_size=10**6)
    chunked = retrieval_recall(speech, images, utt2img, ks=(1, 2, 5), chunk_size=chunk_size)
    assert chunked == reference


def test_recall_curve_is_monotone_and_ends_at_one():
    curve = recall_curve(HAND_SPEECH, HAND_IMAGES, HAND_UTT2IMG, max_k=4)
    assert list(curve) == [1, 2, 3, 4]
    assert curve[1] == pytest.approx(1 / 3) and curve[2] == curve[4] == 1.0


def test_retrieval_ranks_are_the_brute_force_ranks_behind_recalls_and_curves():
    gen = torch.Generator().manual_seed(5)
    images = torch.randn(12, 6, generator=gen)
    utt2img = torch.cat([torch.arange(12), torch.randint(0, 12, (18,), generator=gen)])
    speech = images[utt2img] + 1.5 * torch.randn(30, 6, generator=gen)
    ranks = retrieval_ranks(speech, images, utt2img, chunk_size=7)
    assert ranks["speech_to_image"].tolist() == _brute_force_ranks(speech, images, utt2img.tolist(), list(range(12)))
    assert ranks["image_to_speech"].tolist() == _brute_force_ranks(images, speech, list(range(12)), utt2img.tolist())
    assert curve_from_ranks(ranks["image_to_speech"], max_k=12) == recall_curve(images, speech, torch.arange(12),
                                                                               utt2img, max_k=12)
    recalls = retrieval_recall(speech, images, utt2img, ks=(1, 3))
    assert recalls["speech_to_image"]["r3"] == pytest.approx(float((ranks["speech_to_image"] <= 3).double().mean()))
    with pytest.raises(ValueError, match="utt2img_index must lie in"):
        retrieval_ranks(speech, images, utt2img + 1)


# ---- keywords ------------------------------------------------------------------------------


def test_content_words():
    assert content_words("A big red circle, LEFT of the small star!") == {
        "big", "red", "circle", "left", "small", "star"
    }
    assert {"a", "an", "the", "of", "and", "is", "with"} <= STOP_WORDS
    assert not {"left", "right", "above", "below"} & STOP_WORDS


def test_keyword_prf_hand_case():
    predicted = [["Red", "circle", "the", "red", "star."], ["blue"], []]
    references = [
        "A big red circle left of a small blue star.", "The green square.", "a yellow triangle"
    ]
    # utt 0: predicted {red, circle, star} (dup "red" and stop word "the" dropped) vs
    #        {big, red, circle, left, small, blue, star}: TP 3, |pred| 3, |ref| 7
    # utt 1: {blue} vs {green, square}: TP 0, 1, 2;  utt 2: {} vs {yellow, triangle}: 0, 0, 2
    # P = 3/4, R = 3/11, F1 = 2PR/(P+R) = (4.5/11) / (11.25/11) = 0.4
    result = keyword_prf(predicted, references)
    assert result == pytest.approx({"precision": 0.75, "recall": 3 / 11, "f1": 0.4})


def test_keyword_prf_no_predictions():
    assert keyword_prf([[], ["the", "of"]], ["red circle", "blue star"]) == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0
    }
    with pytest.raises(ValueError):
        keyword_prf([[]], ["a", "b"])


def test_keyword_hit_rate_hand_case():
    slots = [[["red", "crimson"], ["the", "a"], ["Circle"]], [["star"], []]]
    references = ["a red circle", "a blue square"]
    # utt 0: slot 0 hits (red), slot 1 only stop words, slot 2 hits (circle, case-folded)
    # utt 1: slot 0 misses (star), slot 1 is empty -> 2 hits / 5 slots
    assert keyword_hit_rate(slots, references) == pytest.approx(0.4)
    assert keyword_hit_rate([[], []], ["x", "y"]) == 0.0


# ---- boundaries ----------------------------------------------------------------------------


def test_boundary_f1_hand_case():
    reference = [[0.10, 0.17, 0.50, 0.90], [0.30], []]
    predicted = [[0.14, 0.21, 0.56, 0.945, 1.50], [], [0.70]]
    # utt 0: 0.14 is within 0.05 of both 0.10 (0.04) and 0.17 (0.03, nearer); 0.21 only of 0.17.
    #        The optimal matching is 0.14-0.10, 0.21-0.17 (nearest-first would lose one).
    #        0.56 is 0.06 from 0.50 (just outside); 0.945 is 0.045 from 0.90 (just inside);
    #        1.50 matches nothing. -> 3 matches.
    # utt 1: a missed boundary; utt 2: a spurious one. P = 3/6, R = 3/5, F1 = 2*0.3/1.1 = 6/11.
    result = boundary_f1(predicted, reference, tolerance=0.05)
    assert result == pytest.approx({"precision": 0.5, "recall": 0.6, "f1": 6 / 11})


def test_boundary_one_to_one_and_inclusive_tolerance():
    # Duplicate predictions can use a reference only once.
    assert boundary_f1([[0.10, 0.10]], [[0.10]]) == pytest.approx(
        {"precision": 0.5, "recall": 1.0, "f1": 2 / 3}
    )
    # Binary-exact distance equal to the tolerance is inside; a hair more is outside.
    assert boundary_f1([[0.75]], [[0.5]], tolerance=0.25)["f1"] == 1.0
    assert boundary_f1([[0.76]], [[0.5]], tolerance=0.25)["f1"] == 0.0


def test_boundary_zero_predictions():
    zero = {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert boundary_f1([[], []], [[0.1], [0.2, 0.3]]) == zero
    assert boundary_f1([[]], [[]]) == zero


def test_boundary_f1_by_offset_finds_a_steady_lag():
    reference = [[0.10, 0.40, 0.80], [0.25, 0.60]]
    lagged = [[t + 0.10 for t in utt] for utt in reference]  # every fire 100 ms late
    offsets = [-0.15, -0.10, -0.05, 0.0]
    f1 = boundary_f1_by_offset(lagged, reference, offsets, tolerance=0.02)
    # At -0.10 every fire lands on its word end; at -0.05 / -0.15 / 0 each is 50-100 ms off.
    assert f1 == pytest.approx([0.0, 1.0, 0.0, 0.0])
    # Equal to boundary_f1 on the shifted times, tolerance included.
    shifted = [[t - 0.05 for t in utt] for utt in lagged]
    assert boundary_f1_by_offset(lagged, reference, [-0.05], tolerance=0.05) == [
        boundary_f1(shifted, reference, tolerance=0.05)["f1"]]


def test_evenly_spaced_times_are_where_a_constant_alpha_fires():
    got = evenly_spaced_times([2, 4, 0], [1.0, 2.0, 0.5])
    assert [len(u) for u in got] == [2, 4, 0]
    assert got[0] == pytest.approx([0.5, 1.0]) and got[1] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    from espnet_speechclip.evaluation import cif_fire_times
    frames, hop, n = 50, 0.04, 7
    alpha = np.full(frames, n / frames)
    assert cif_fire_times(alpha, n, hop) == pytest.approx(evenly_spaced_times([n], [frames * hop])[0])
    with pytest.raises(ValueError, match="2 counts for 1 durations"):
        evenly_spaced_times([1, 2], [1.0])


def test_evenly_spaced_fires_peak_under_a_shift_when_words_have_equal_lengths():
    # Four 0.3 s words ending 50 ms after each point of a constant-rate grid: with no word
    # information at all, a shift lifts F1 from 0 to 1; this is why the stage-5 diagnostic
    # reports the evenly spaced curve beside the model's.
    reference = [[0.35, 0.65, 0.95, 1.25]]
    steady = evenly_spaced_times([4], [1.2])
    f1 = boundary_f1_by_offset(steady, reference, [0.0, 0.05], tolerance=0.02)
    assert f1 == pytest.approx([0.0, 1.0])


# ---- plots ---------------------------------------------------------------------------------


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_recall_curves(tmp_path):
    curves = {
        "parallel speech→image": {k: 1 - math.exp(-k / 5) for k in range(1, 51)},
        "parallel image→speech": {k: 1 - math.exp(-k / 3) for k in range(1, 51)},
    }
    path = tmp_path / "sub" / "recall.png"
    plot_recall_curves(curves, path, "test recall")
    assert _is_png(path)


def test_plot_cif_firing(tmp_path):
    sr, fr = 16000, 50.0
    t = np.arange(int(1.2 * sr)) / sr
    waveform = np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 1.5 * t) ** 2)
    alpha = np.clip(0.3 + 0.25 * np.sin(np.arange(60) / 3.0), 0, 1)
    fire_frames = np.nonzero(np.diff(np.floor(np.cumsum(alpha))) > 0)[0] + 1
    words = [("red", 0.05, 0.40), ("circle", 0.45, 0.85), ("left", 0.90, 1.15)]
    path = tmp_path / "cif.png"
    plot_cif_firing(waveform, sr, alpha, fr, (fire_frames / fr).tolist(), words, path, "CIF")
    assert _is_png(path)


def test_plot_boundary_f1_by_offset(tmp_path):
    path = tmp_path / "lag.png"
    plot_boundary_f1_by_offset([-0.1, 0.0, 0.1], [0.45, 0.28, 0.3], 0.29, path, evenly_spaced_f1=[0.46, 0.25, 0.3])
    assert _is_png(path)
    with pytest.raises(ValueError, match="2 evenly spaced F1 values for 3"):
        plot_boundary_f1_by_offset([-0.1, 0.0, 0.1], [0.45, 0.28, 0.3], 0.29, tmp_path / "b.png",
                                   evenly_spaced_f1=[0.4, 0.3])
    with pytest.raises(ValueError, match="2 offsets for 3"):
        plot_boundary_f1_by_offset([-0.1, 0.0], [0.45, 0.28, 0.3], 0.29, tmp_path / "bad.png")


def test_r1_by_speaker_hand_worked():
    from espnet_speechclip.evaluation import r1_by_speaker
    ranks = {"parallel": torch.tensor([1, 2, 1, 1]), "fused": torch.tensor([1, 1, 3, 1])}
    assert r1_by_speaker(ranks, ["b", "a", "b", "a"]) == {
        "a": {"num_utterances": 2, "parallel": 0.5, "fused": 1.0},
        "b": {"num_utterances": 2, "parallel": 1.0, "fused": 0.5}}
    with pytest.raises(ValueError, match="3 speakers for ranks of lengths \\[4\\]"):
        r1_by_speaker(ranks, ["a", "b", "a"])


def test_per_speaker_report_is_a_table_for_few_voices_and_one_line_for_many():
    from espnet_speechclip.report import MAX_SPEAKER_ROWS, _speaker_lines
    few = {"spk1": {"num_utterances": 3, "fused": 2 / 3}, "spk2": {"num_utterances": 1, "fused": 0.0}}
    assert _speaker_lines(few)[-3:] == ["|---|---|---|", "|spk1|3|66.7|", "|spk2|1|0.0|"]
    many = {f"s{i:02d}": {"num_utterances": 1 + i % 2, "fused": 0.5} for i in range(MAX_SPEAKER_ROWS + 2)}
    assert _speaker_lines(many)[-1] == (f"{MAX_SPEAKER_ROWS + 2} speakers, 1.5 utterances each on average: more "
                                        f"than {MAX_SPEAKER_ROWS} rows, so the figures are only in `results.json`.")
    assert _speaker_lines({}) == []
