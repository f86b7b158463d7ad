"""CIF segmenter options beyond SpeechCLIP+: weights at the upstream's rate (weights_from: upstream),
where α, fire frames and the boundary prior live on the upstream frames while the segments still
hold the encoder frames."""
import pytest
import torch

from espnet_speechclip.boundary_prior import AcousticBoundaryPrior
from espnet_speechclip.branches.segmenters import CIFSegmenter
from espnet_speechclip.branches.weight_sources import gather_to_rate
from espnet_speechclip.cif import integrate_and_fire
from espnet_speechclip.frame_views import FrameViews


def make_segmenter(**kwargs):
    torch.manual_seed(0)
    conf = dict(attention_heads=2, linear_units=32, dropout_rate=0.0, target_ratio=0.2, integrate_from="local",
                weights_from="upstream", upstream_size=6, weight_kernel_size=5, local_frame_centre=3.0)
    return CIFSegmenter.from_config(input_size=16, token_width=8, **{**conf, **kwargs})


def test_gather_to_rate_takes_the_encoder_frame_centred_nearest():
    """r = 2, c = 3: fine frame t takes encoder frame round((t - 3) / 2), clamped to the valid frames."""
    frames = torch.arange(4.0)[None, :, None].repeat(2, 1, 1)  # frame i holds the value i
    out = gather_to_rate(frames, torch.tensor([4, 2]), torch.tensor([8, 4]), 8, centre=3.0)[..., 0]
    # utterance 0: (t - 3) / 2 = -1.5 -1 -0.5 0 0.5 1 1.5 2 -> round half to even, clamp at 0 and 3
    assert out[0].tolist() == [0, 0, 0, 0, 0, 1, 2, 2]
    assert out[1].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]  # only 2 valid encoder frames
    assert gather_to_rate(frames, torch.tensor([4, 4]), torch.tensor([8, 8]), 8, 0.0)[0, :, 0].tolist() == \
        [0, 0, 1, 2, 2, 2, 3, 4 - 1]


def test_upstream_weights_come_from_the_upstream_frames_only():
    segmenter = make_segmenter().eval()
    frames, local = torch.randn(2, 12, 16), torch.randn(2, 12, 16)
    upstream, up_lengths, lengths = torch.randn(2, 27, 6), torch.tensor([27, 19]), torch.tensor([12, 8])
    with torch.no_grad():
        out = segmenter(FrameViews(frames, lengths, local, upstream, up_lengths))
        torch.testing.assert_close(out["alpha"], segmenter.weight_predictor(upstream, up_lengths))
        assert out["alpha"].shape == (2, 27) and torch.equal(out["alpha_lengths"], up_lengths)
        assert (out["alpha"][1, 19:] == 0).all()
        # S counts encoder frames: round(0.2 * 12), round(0.2 * 8)
        assert out["target_lengths"].tolist() == [2, 2]
        moved = segmenter(FrameViews(frames, lengths, local + 1.0, upstream, up_lengths))
        torch.testing.assert_close(moved["alpha"], out["alpha"])
        assert torch.equal(moved["fire_frames"], out["fire_frames"])
        assert not torch.allclose(moved["keywords"], out["keywords"])
        fires = out["fire_frames"]
        assert (fires < up_lengths[:, None]).all() and fires.max() >= 12  # indices on the upstream frames
    # No views without the upstream frames (the old forward raised when they were missing), and no
    # CIF segmenter without the upstream's frame width.
    with pytest.raises(TypeError, match="upstream"):
        FrameViews(frames, lengths, local)
    with pytest.raises(TypeError, match="upstream_size"):
        CIFSegmenter.from_config(input_size=16, token_width=8, weights_from="upstream")
    with pytest.raises(ValueError, match="weight_kernel_size"):
        make_segmenter(weight_kernel_size=4)


def test_segments_equal_a_cif_over_encoder_frames_with_alpha_summed_per_frame():
    """Integrating at the upstream rate the encoder frames each upstream frame maps to gives the
    same segments as integrating the encoder frames themselves, with α summed over the upstream
    frames of each encoder frame (the weights of a split frame add up either way)."""
    segmenter = make_segmenter(local_frame_centre=0.0).eval()
    torch.manual_seed(1)
    local, lengths = torch.randn(2, 10, 16), torch.tensor([10, 7])
    upstream, up_lengths = torch.randn(2, 20, 6), torch.tensor([20, 14])
    with torch.no_grad():
        out = segmenter(FrameViews(local, lengths, local, upstream, up_lengths))
        alpha = out["alpha"]
        index = gather_to_rate(torch.arange(10.0)[None, :, None].repeat(2, 1, 1), lengths, up_lengths, 20, 0.0)
        coarse = torch.zeros(2, 10, dtype=alpha.dtype).scatter_add_(1, index[..., 0].long(), alpha)
        expected, counts, _ = integrate_and_fire(local, coarse, lengths)
    assert torch.equal(out["keyword_lengths"], counts)
    n = expected.size(1)
    torch.testing.assert_close(out["keywords"][:, :n], segmenter.proj(expected), atol=1e-5, rtol=1e-5)


def test_upstream_weights_train_through_the_boundary_prior_at_the_upstream_rate():
    """The prior's targets land on α's own frames (its log-mel frames are the upstream's 20 ms),
    and with detach_weight_input nothing reaches the upstream frames."""
    segmenter = make_segmenter(upstream_size=80, detach_weight_input=True, target_ratio=0.17).train()
    prior = AcousticBoundaryPrior()
    speech = torch.randn(1, 16000) * torch.repeat_interleave(torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0]), 3200)
    feats, mel_lengths = prior.log_mel(speech, torch.tensor([16000]))
    upstream = feats.clone().requires_grad_(True)
    frames = torch.randn(1, (feats.size(1) - 3) // 2, 16)
    lengths = torch.tensor([frames.size(1)])
    out = segmenter(FrameViews(frames, lengths, frames, upstream, mel_lengths))
    y = prior.targets(speech, torch.tensor([16000]), out["alpha_lengths"], out["alpha"].size(1),
                      out["target_lengths"])
    # S = round(0.17 * 23) = 4 labels, one per tone/silence edge (0.2, 0.4, 0.6, 0.8 s), each
    # within one 20 ms frame of it.
    label_times = (y[0].nonzero().squeeze(1).float() + 1) * 0.02
    assert len(label_times) == int(out["target_lengths"][0])
    assert ((label_times / 0.2 - torch.round(label_times / 0.2)).abs() * 0.2 <= 0.021).all()
    loss = prior(speech, torch.tensor([16000]), out["alpha"], out["alpha_lengths"], out["target_lengths"])
    loss.backward()
    assert upstream.grad is None and segmenter.weight_predictor.conv.weight.grad.abs().sum() > 0



def test_the_segmenter_block_is_not_run_when_nothing_reads_the_context():
    """integrate_from local + weights_from upstream read no contextual frame: the segmenter's own
    block is neither computed nor reported as learnt frame states."""
    segmenter = make_segmenter().eval()
    calls = []
    segmenter.block.register_forward_hook(lambda module, args, output: calls.append(1))
    frames = torch.randn(2, 12, 16)
    views = FrameViews(frames, torch.tensor([12, 8]), frames, torch.randn(2, 27, 6), torch.tensor([27, 19]))
    with torch.no_grad():
        segmenter(views)
    assert not segmenter.reads_context and calls == [] and segmenter.frame_states(views) == []
