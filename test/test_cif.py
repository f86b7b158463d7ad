"""CIF against a naive left-to-right implementation written from the CIF equations."""
import pytest
import torch

from espnet_speechclip import cif as cif_module
from espnet_speechclip.cif import (
    CIFWeightPredictor,
    integrate_and_fire,
    quantity_loss,
    scale_to_target,
    target_lengths_from_frames,
    uniform_within_segments,
)


def naive_cif(frames, alpha, length, threshold=1.0, tail_threshold=0.5):
    """One utterance, a Python loop over frames: integrate, fire, split the crossing frame."""
    segments, fires = [], []
    acc = torch.zeros((), dtype=frames.dtype)
    state = torch.zeros(frames.size(-1), dtype=frames.dtype)
    for t in range(length):
        a = alpha[t]
        while acc + a >= threshold:
            part = threshold - acc  # completes the current segment
            segments.append(state + part * frames[t])
            fires.append(t)
            a = a - part
            acc = torch.zeros((), dtype=frames.dtype)
            state = torch.zeros_like(state)
        acc = acc + a
        state = state + a * frames[t]
    if length > 0 and acc >= tail_threshold:
        segments.append(state * (threshold / acc.detach()))
        fires.append(length - 1)
    return segments, fires


@pytest.fixture(autouse=True, params=["dense", "scattered"])
def kernel_path(request, monkeypatch):
    """Every test runs through both ways of building segments (matmul and scatter)."""
    monkeypatch.setattr(cif_module, "DENSE_MAX_SEGMENTS", 10**9 if request.param == "dense" else -1)
    return request.param


def random_case(batch=4, frames=37, dim=5, seed=0, alpha_scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, frames, dim, generator=gen, dtype=torch.float64)
    a = torch.rand(batch, frames, generator=gen, dtype=torch.float64) * alpha_scale
    lengths = torch.randint(1, frames + 1, (batch,), generator=gen)
    lengths[0] = frames
    return x, a, lengths


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [1.0, 0.7])
def test_matches_naive_values_counts_and_fires(seed, threshold):
    x, a, lengths = random_case(seed=seed)
    seg, counts, fires = integrate_and_fire(x, a, lengths, threshold=threshold)
    for b in range(x.size(0)):
        ref, ref_fires = naive_cif(x[b], a[b], int(lengths[b]), threshold=threshold)
        assert int(counts[b]) == len(ref)
        assert fires[b, : len(ref)].tolist() == ref_fires
        assert (fires[b, len(ref):] == -1).all()
        if ref:
            torch.testing.assert_close(seg[b, : len(ref)], torch.stack(ref), rtol=1e-10, atol=1e-10)
        assert (seg[b, len(ref):] == 0).all()


def test_threshold_below_one_fires_twice_in_one_frame():
    x = torch.eye(3, dtype=torch.float64)[None]
    a = torch.tensor([[0.2, 0.9, 0.3]], dtype=torch.float64)
    seg, counts, fires = integrate_and_fire(x, a, torch.tensor([3]), threshold=0.5, tail_threshold=0.5)
    # running sum 0.2 | 1.1 | 1.4: fires at 0.5 and 1.0 inside frame 1; the 0.4 tail stays below 0.5
    assert counts.tolist() == [2]
    assert fires[0].tolist() == [1, 1]
    torch.testing.assert_close(seg[0], torch.tensor([[0.2, 0.3, 0.0], [0.0, 0.5, 0.0]], dtype=torch.float64))


def test_tail_rule_hand_case():
    x = torch.tensor([[[1.0], [2.0], [4.0]]], dtype=torch.float64)
    lengths = torch.tensor([3])
    # 0.6 + 0.6 fires at frame 1 (0.4 of it), leftover 0.2 + 0.4 = 0.6 >= 0.5 -> tail scaled by 1/0.6
    seg, counts, fires = integrate_and_fire(x, torch.tensor([[0.6, 0.6, 0.4]], dtype=torch.float64), lengths)
    assert counts.tolist() == [2] and fires[0].tolist() == [1, 2]
    torch.testing.assert_close(seg[0, :, 0], torch.tensor([0.6 + 0.8, (0.4 + 1.6) / 0.6], dtype=torch.float64))
    # leftover 0.2 + 0.2 = 0.4 < 0.5: no tail
    seg, counts, _ = integrate_and_fire(x, torch.tensor([[0.6, 0.6, 0.2]], dtype=torch.float64), lengths)
    assert counts.tolist() == [1]


def test_padding_never_leaks_and_batch_equals_single():
    x, a, lengths = random_case(batch=3, frames=30, seed=5)
    lengths = torch.tensor([30, 11, 4])
    seg, counts, fires = integrate_and_fire(x, a, lengths)
    poisoned_x = x.clone()
    poisoned_a = a.clone()
    for b, n in enumerate(lengths.tolist()):
        poisoned_x[b, n:] = 1e6
        poisoned_a[b, n:] = 1.0
    seg2, counts2, _ = integrate_and_fire(poisoned_x, poisoned_a, lengths)
    torch.testing.assert_close(seg, seg2)
    for b, n in enumerate(lengths.tolist()):
        s1, c1, f1 = integrate_and_fire(x[b: b + 1, :n], a[b: b + 1, :n], lengths[b: b + 1])
        k = int(c1[0])
        assert int(counts[b]) == k
        torch.testing.assert_close(seg[b, :k], s1[0, :k])
        assert fires[b, :k].tolist() == f1[0, :k].tolist()


@pytest.mark.parametrize("threshold", [1.0, 0.45])  # 0.45: frames that cross two firing points
def test_gradients_equal_naive(threshold):
    x, a, lengths = random_case(batch=3, frames=20, dim=4, seed=3)
    x.requires_grad_(True)
    a.requires_grad_(True)
    seg, counts, _ = integrate_and_fire(x, a, lengths, threshold=threshold)
    probe = torch.randn_like(seg)
    (seg * probe).sum().backward()
    gx, ga = x.grad.clone(), a.grad.clone()

    x2, a2 = x.detach().clone().requires_grad_(True), a.detach().clone().requires_grad_(True)
    loss = 0.0
    for b in range(3):
        ref, _ = naive_cif(x2[b], a2[b], int(lengths[b]), threshold=threshold)
        if ref:
            loss = loss + (torch.stack(ref) * probe[b, : len(ref)]).sum()
    loss.backward()
    torch.testing.assert_close(gx, x2.grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ga, a2.grad, rtol=1e-9, atol=1e-9)


def test_too_short_for_any_fire_gives_empty_output_not_nan():
    x = torch.randn(2, 3, 4)
    a = torch.full((2, 3), 0.1)
    seg, counts, fires = integrate_and_fire(x, a, torch.tensor([3, 2]))
    assert seg.shape == (2, 0, 4) and counts.tolist() == [0, 0] and fires.shape == (2, 0)
    seg, counts, _ = integrate_and_fire(x, torch.zeros(2, 3), torch.tensor([0, 0]))
    assert counts.tolist() == [0, 0] and torch.isfinite(seg).all()


def test_scaling_makes_sum_equal_target_and_fire_exactly_target():
    x, a, lengths = random_case(batch=4, frames=60, seed=7)
    valid = torch.arange(60)[None] < lengths[:, None]
    a = a.masked_fill(~valid, 0.0).float()
    target = target_lengths_from_frames(lengths, ratio=0.1, max_segments=75)
    scaled = scale_to_target(a, target)
    torch.testing.assert_close(scaled.sum(1), target.float())
    _, counts, _ = integrate_and_fire(x.float(), scaled, lengths)
    assert counts.tolist() == target.tolist()


def test_target_lengths_rounding_and_clip():
    got = target_lengths_from_frames(torch.tensor([10, 30, 50, 5000]), ratio=0.05, max_segments=75)
    assert got.tolist() == [1, 2, 2, 75]  # round(0.5)=0 -> clipped to 1; round(1.5)=2; round(2.5)=2


def test_quantity_loss_hand_case_and_gradient():
    a = torch.tensor([[0.5, 0.5, 0.0], [1.0, 1.0, 1.0]], requires_grad=True)
    target = torch.tensor([2, 2])
    loss = quantity_loss(a, target)
    assert loss.item() == pytest.approx((1.0 + 1.0) / 2)
    loss.backward()
    # d/dα |Σα − S| = sign(Σα − S), averaged over the batch of 2
    torch.testing.assert_close(a.grad, torch.tensor([[-0.5] * 3, [0.5] * 3]))


def test_weight_predictor_zero_on_padding_and_in_range():
    torch.manual_seed(0)
    predictor = CIFWeightPredictor(8)
    alpha = predictor(torch.randn(2, 10, 8), torch.tensor([10, 6]))
    assert alpha.shape == (2, 10)
    assert (alpha[1, 6:] == 0).all() and (alpha[:, :6] > 0).all() and (alpha < 1).all()


def naive_uniform_segments(frames, alpha, length, threshold=1.0, tail_threshold=0.5):
    """Left-to-right: find where the running sum reaches each nβ, then average the frame parts between."""
    marks, total = [0.0], 0.0
    for t in range(length):
        a = float(alpha[t])
        while total + a >= threshold * len(marks) - 1e-12 and a > 0:
            marks.append(t + (threshold * len(marks) - total) / a)
        total += a
    segments = []
    for start, stop in zip(marks[:-1], marks[1:]):
        segments.append(_mean_of_span(frames, start, stop))
    tail = total - threshold * (len(marks) - 1)
    if tail >= tail_threshold and marks[-1] < length:
        segments.append(_mean_of_span(frames, marks[-1], float(length)))
    return torch.stack(segments) if segments else frames.new_zeros(0, frames.size(1))


def _mean_of_span(frames, start, stop):
    acc = frames.new_zeros(frames.size(1), dtype=torch.float64)
    for t in range(int(start), min(int(stop) + 1, frames.size(0))):
        part = min(stop, t + 1) - max(start, t)
        if part > 0:
            acc += part * frames[t].double()
    return (acc / (stop - start)).to(frames.dtype)


def test_uniform_within_segments_fires_alike_and_averages_the_span():
    """α̃ keeps every fire frame, count and tail of α, and CIF over it gives each segment the
    plain mean of the frames between consecutive fire positions (fractional frames included),
    as a left-to-right reference computes; padding gets no weight."""
    torch.manual_seed(0)
    frames = torch.randn(3, 40, 5)
    alpha = torch.rand(3, 40) * torch.tensor([0.3, 0.9, 0.05])[:, None]  # some spiky, one never fires
    alpha[0, ::7] = 0.95  # spikes: most of a segment's mass on one frame
    lengths = torch.tensor([40, 33, 40])
    alpha = alpha.masked_fill(torch.arange(40)[None] >= lengths[:, None], 0.0)
    smooth = uniform_within_segments(alpha, lengths)
    torch.testing.assert_close(smooth.sum(1), alpha.sum(1), rtol=1e-6, atol=1e-6)
    assert (smooth[1, 33:] == 0).all() and (smooth >= 0).all()
    seg, counts, fires = integrate_and_fire(frames, smooth, lengths)
    ref_seg, ref_counts, ref_fires = integrate_and_fire(frames, alpha, lengths)
    assert torch.equal(counts, ref_counts) and torch.equal(fires, ref_fires)
    for b in range(3):
        expected = naive_uniform_segments(frames[b], alpha[b], int(lengths[b]))
        assert expected.size(0) == int(counts[b])
        torch.testing.assert_close(seg[b, : counts[b]], expected, atol=1e-5, rtol=1e-5)
    # Gradient reaches α through the fire positions.
    alpha.requires_grad_(True)
    integrate_and_fire(frames, uniform_within_segments(alpha, lengths), lengths)[0].sum().backward()
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0
