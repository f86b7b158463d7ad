"""The acoustic pseudo-boundary prior on the CIF weights (boundary_prior.py)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from espnet_speechclip.boundary_prior import AcousticBoundaryPrior
from espnet_speechclip.cif import CIFWeightPredictor, integrate_and_fire

SR = 16000


def tone_words(freqs, word_s=0.24, gap_s=0.04, seed=0):
    """Tones at the given frequencies with a short silence after each: (wav, word end times)."""
    rng = np.random.default_rng(seed)
    parts, ends, t = [], [], 0.0
    for f in freqs:
        n = int(word_s * SR)
        parts.append(0.5 * np.sin(2 * np.pi * f * np.arange(n) / SR))
        t += word_s
        ends.append(t)
        parts.append(np.zeros(int(gap_s * SR)))
        t += gap_s
    wav = np.concatenate(parts) + 1e-3 * rng.standard_normal(sum(map(len, parts)))
    return torch.tensor(wav, dtype=torch.float32), ends


def naive_boundaries(score: np.ndarray, count: int, radius: int):
    """Local maxima within ±radius (ties included), the `count` highest, by a plain loop."""
    candidates = [t for t in range(len(score)) if np.isfinite(score[t])
                  and score[t] >= max(score[max(0, t - radius): t + radius + 1])]
    return sorted(sorted(candidates, key=lambda t: -score[t])[:count])


def test_pseudo_boundaries_land_on_the_word_ends():
    prior = AcousticBoundaryPrior()
    wav, ends = tone_words([300, 500, 800, 400, 650])
    mask, _ = prior.boundary_frames(wav[None], torch.tensor([len(wav)]), torch.tensor([len(ends)]))
    found = [t * prior.hop / SR for t in mask[0].nonzero()[:, 0].tolist()]
    assert len(found) == len(ends)
    # Each word is followed by 40 ms of silence: a boundary lies between its end and the next onset.
    for time, end in zip(found, ends):
        assert end - 0.03 <= time <= end + 0.07, (found, ends)


def test_boundary_frames_match_a_naive_peak_picker():
    prior = AcousticBoundaryPrior(energy_weight=0.5, min_distance=3)
    torch.manual_seed(0)
    speech = 0.1 * torch.randn(3, 12000)
    lengths = torch.tensor([12000, 9000, 5000])
    counts = torch.tensor([7, 4, 3])
    mask, mel_lengths = prior.boundary_frames(speech, lengths, counts)
    score = prior.scores(*prior.log_mel(speech, lengths))
    for b in range(3):
        expected = naive_boundaries(score[b].numpy(), int(counts[b]), radius=2)
        assert mask[b].nonzero()[:, 0].tolist() == expected
        assert not mask[b, int(mel_lengths[b]):].any()


def test_padding_does_not_change_an_utterances_targets():
    prior = AcousticBoundaryPrior()
    wav, ends = tone_words([300, 700, 450, 900])
    short, _ = tone_words([500, 350])
    batch = torch.zeros(2, len(wav))
    batch[0], batch[1, : len(short)] = wav, short
    lengths = torch.tensor([len(wav), len(short)])
    frame_lengths, counts = torch.tensor([30, 14]), torch.tensor([4, 2])
    together = prior.targets(batch, lengths, frame_lengths, 30, counts)
    alone = prior.targets(short[None], lengths[1:], frame_lengths[1:], 14, counts[1:])
    assert torch.equal(together[1, :14], alone[0])
    assert together[1, 14:].sum() == 0
    assert together.sum(1).tolist() == [4.0, 2.0]


def test_loss_is_the_mean_bce_over_valid_frames_and_reaches_alpha():
    prior = AcousticBoundaryPrior(weight=0.5)
    wav, _ = tone_words([300, 700, 450])
    speech = torch.stack([wav, wav])
    lengths = torch.tensor([len(wav), len(wav) // 2])
    frame_lengths, counts = torch.tensor([20, 10]), torch.tensor([3, 1])
    alpha = torch.rand(2, 20).clamp(0.05, 0.95).requires_grad_()
    loss = prior(speech, lengths, alpha, frame_lengths, counts)
    y = prior.targets(speech, lengths, frame_lengths, 20, counts)
    terms = [F.binary_cross_entropy(alpha[b, :n], y[b, :n], reduction="sum") for b, n in enumerate([20, 10])]
    assert torch.allclose(loss, 0.5 * sum(terms) / 30)
    loss.backward()
    assert alpha.grad[0].abs().sum() > 0 and alpha.grad[1, :10].abs().sum() > 0
    assert torch.all(alpha.grad[1, 10:] == 0)  # padding gets no gradient


def test_cif_trained_on_the_prior_alone_fires_at_the_word_ends():
    """A CIF weight predictor on log-mel frames learns α ≈ 1 on the pseudo-boundaries and ≈ 0
    elsewhere, and CIF on that α fires at the word ends."""
    torch.manual_seed(0)
    prior = AcousticBoundaryPrior()
    utterances = [tone_words(np.random.default_rng(s).integers(250, 1000, 5), seed=s) for s in range(6)]
    speech = torch.stack([w for w, _ in utterances])
    lengths = torch.full((6,), speech.size(1))
    feats, mel_lengths = prior.log_mel(speech, lengths)
    counts = torch.full((6,), 5)
    predictor = CIFWeightPredictor(feats.size(-1))
    optimizer = torch.optim.Adam(predictor.parameters(), lr=1e-2)
    for _ in range(100):
        loss = prior(speech, lengths, predictor(feats, mel_lengths), mel_lengths, counts)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        alpha = predictor(feats, mel_lengths)
    targets = prior.targets(speech, lengths, mel_lengths, feats.size(1), counts)
    assert torch.equal((alpha > 0.5).float(), targets)
    # Rounded, so that float sums of 1 − ε cannot delay a fire past its spike.
    _, num, fires = integrate_and_fire(feats, alpha.round(), mel_lengths)
    hop = prior.hop / SR
    for b, (_, ends) in enumerate(utterances):
        times = [(int(f) + 1) * hop for f in fires[b, : int(num[b])]]
        assert len(times) == 5
        assert max(abs(t - e) for t, e in zip(times, ends)) < 0.05, (times, ends)


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="min_distance"):
        AcousticBoundaryPrior(min_distance=0)
    with pytest.raises(ValueError, match="weight"):
        AcousticBoundaryPrior(weight=-1.0)
    with pytest.raises(ValueError, match="alpha must be"):
        AcousticBoundaryPrior()(torch.zeros(2, 8000), torch.tensor([8000, 8000]), torch.zeros(3, 10),
                                torch.tensor([10, 10]), torch.tensor([1, 1]))
