"""Cluster bootstrap of recalls over images (espnet_speechclip.confidence)."""
import math

import numpy as np
import pytest
import torch

from espnet_speechclip.confidence import bootstrap_recalls, interval, per_image_counts


def test_per_image_counts_hand_case():
    # Image 0: 2 captions, 1 hit; image 1: no caption; image 2: 3 captions, 2 hits.
    hits = torch.tensor([True, False, True, True, False])
    index = torch.tensor([0, 0, 2, 2, 2])
    hit_counts, query_counts = per_image_counts(hits, index, 3)
    assert hit_counts.tolist() == [1.0, 0.0, 2.0]
    assert query_counts.tolist() == [2, 0, 3]


def test_equals_a_naive_loop_over_the_same_image_draws():
    rng = np.random.default_rng(3)
    num_images, num_resamples = 17, 50
    index = torch.tensor(rng.integers(0, num_images, 60))
    speech_hits = torch.tensor(rng.random(60) < 0.4)
    text_index = torch.arange(num_images)
    text_hits = torch.tensor(rng.random(num_images) < 0.6)
    got = bootstrap_recalls({"speech": (speech_hits, index), "text": (text_hits, text_index)}, num_images,
                            num_resamples=num_resamples, seed=5)
    draws = np.random.default_rng(5).integers(0, num_images, size=(num_resamples, num_images))
    for name, (hits, idx) in (("speech", (speech_hits, index)), ("text", (text_hits, text_index))):
        naive = []
        for draw in draws:
            num = den = 0
            for image in draw:  # an image drawn twice counts twice
                mine = idx == int(image)
                num += int(hits[mine].sum())
                den += int(mine.sum())
            naive.append(num / den if den else math.nan)
        np.testing.assert_array_equal(got[name], np.array(naive))


def test_all_hits_and_no_hits_give_degenerate_intervals():
    index = torch.tensor([0, 0, 1, 1, 2, 2])
    draws = bootstrap_recalls({"all": (torch.ones(6, dtype=torch.bool), index),
                               "none": (torch.zeros(6, dtype=torch.bool), index)}, 3)
    assert interval(draws["all"]) == (1.0, 1.0)
    assert interval(draws["none"]) == (0.0, 0.0)


def test_the_same_hits_give_a_ratio_of_exactly_one_on_every_draw():
    hits, index = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0]), torch.arange(8)
    draws = bootstrap_recalls({"a": (hits, index), "b": (hits, index)}, 8, num_resamples=200)
    ratio = draws["a"] / draws["b"]
    finite = ratio[np.isfinite(ratio)]
    assert finite.size > 150 and np.all(finite == 1.0)  # a draw of only misses is 0/0, left out


def test_width_is_that_of_a_binomial_proportion_for_one_query_per_image():
    # 400 images, 120 hits: R = 0.3, normal-approximation 95 % half-width 1.96 sqrt(0.21 / 400) = 0.045.
    hits = torch.arange(400) < 120
    low, high = interval(bootstrap_recalls({"r": (hits, torch.arange(400))}, 400, num_resamples=2000)["r"])
    assert low < 0.3 < high
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(0.21 / 400), rel=0.15)


def test_captions_of_one_image_that_agree_widen_the_interval():
    # 200 images x 2 captions whose hits agree within an image carry the information of 200 queries,
    # not 400: the cluster bootstrap must not shrink the interval by sqrt(2).
    index = torch.arange(200).repeat_interleave(2)
    hits = index < 60
    clustered = interval(bootstrap_recalls({"r": (hits, index)}, 200, num_resamples=2000)["r"])
    single = interval(bootstrap_recalls({"r": (torch.arange(200) < 60, torch.arange(200))}, 200,
                                        num_resamples=2000)["r"])
    assert clustered == pytest.approx(single)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="3 hits for 2 image indices"):
        per_image_counts(torch.tensor([1, 0, 1]), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\)"):
        per_image_counts(torch.tensor([1, 0]), torch.tensor([0, 2]), 2)
    with pytest.raises(ValueError, match="level"):
        interval(np.array([0.5]), level=1.0)
    with pytest.raises(ValueError, match="no finite"):
        interval(np.array([math.nan]))


def test_report_states_the_intervals_and_an_undefined_ratio_when_the_topline_is_zero():
    from espnet_speechclip.report import results_markdown

    results = {"num_utterances": 4, "num_images": 2, "branches": {}, "retrieval_branch": "parallel",
               "chance": {"speech_to_image_r1": 0.5, "speech_to_image_r10": 1.0},
               "speech_to_image": {"r1": 0.5}, "clip_text_to_image": {"r1": 0.0, "r5": 1.0, "r10": 1.0},
               "bootstrap_ci95": {"num_resamples": 10, "speech_to_image_r1": [0.25, 0.75],
                                  "clip_text_to_image_r1": [0.0, 0.0], "ratio_to_topline": None}}
    text = results_markdown(results, "exp", "dump/test")
    assert ("95 % intervals over 10 bootstrap resamples of the images: speech→image R@1 25.0-75.0, "
            "topline 0.0-0.0, ratio undefined (topline 0).") in text
    results["bootstrap_ci95"]["ratio_to_topline"] = [0.5, 1.25]
    assert "ratio 0.50-1.25." in results_markdown(results, "exp", "dump/test")
