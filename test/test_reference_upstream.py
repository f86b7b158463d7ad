"""ReferenceHuBERTUpstream: the SpeechCLIP/SpeechCLIP+ reference's HuBERT forward on s3prl's HuBERT."""
import pytest
import torch
import torch.nn.functional as F

from espnet_speechclip.reference_upstream import ReferenceHuBERTUpstream, reference_frame_lengths

# Tiny HuBERT with the real conv strides (320 samples per frame, 400-sample receptive field).
TINY = {"encoder_layers": 2, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 2,
        "conv_feature_layers": "[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2", "final_dim": 16,
        "conv_pos": 8, "conv_pos_groups": 4}
# hubert_large_ll60k's layout: pre-LN transformer, LayerNorm (not GroupNorm) conv extractor.
TINY_LARGE = {**TINY, "layer_norm_first": True, "extractor_mode": "layer_norm"}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHCLIP_CACHE", str(tmp_path))


def naive_states(model, wav):
    """One utterance (L,), no batch padding, straight from the model's submodules -> N + 1 states (T, D)."""
    enc = model.encoder
    z = model.layer_norm(model.feature_extractor(wav[None]).transpose(1, 2))
    z = model.post_extract_proj(z)
    x = z + enc.pos_conv(z.transpose(1, 2)).transpose(1, 2)
    if not enc.layer_norm_first:
        x = enc.layer_norm(x)
    states = [x[0]]
    for layer in enc.layers:
        h, _ = layer(states[-1][:, None], self_attn_padding_mask=None)
        states.append(h[:, 0])
    return states


def batch(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    speech = torch.randn(len(lengths), max(lengths) + 77, generator=gen)  # junk past every length
    return speech, torch.tensor(lengths)


@pytest.mark.parametrize("conf", [TINY, TINY_LARGE], ids=["base", "large"])
def test_single_utterance_matches_naive_forward(conf):
    up = ReferenceHuBERTUpstream(random_hubert=conf)
    assert (up.num_layers, up.output_size(), up.downsample_rate) == (3, 32, 320)
    speech, lengths = batch([8150])
    states, state_lengths = up.hidden_states(speech, lengths)
    with torch.no_grad():
        expected = naive_states(up.model, speech[0, :8150])
    assert len(states) == len(state_lengths) == 3
    for state, ref in zip(states, expected):
        torch.testing.assert_close(state[0], ref, atol=1e-5, rtol=1e-5)
    assert state_lengths[0].tolist() == [min(round(8150 / 320), expected[0].size(0))] == [25]


def test_batched_equals_per_utterance_on_valid_frames():
    """Lengths chosen so fairseq's frame padding mask keeps exactly each utterance's own conv frames.

    With 16000 samples (49 frames) forward_padding_mask cuts the batch into 326-sample chunks: a frame is
    padding when its chunk is; for 6480 and 9760 samples that leaves 20 and 30 frames, their own conv frame
    counts. Otherwise the batch decides how many frames attend (a property of the reference, kept here).
    """
    up = ReferenceHuBERTUpstream(random_hubert=TINY_LARGE)
    lens = [16000, 6480, 9760]
    speech, lengths = batch(lens, seed=1)
    states, state_lengths = up.hidden_states(speech, lengths)
    assert state_lengths[0].tolist() == [49, 20, 30]  # round(30.5) = 30
    for b, length in enumerate(lens):
        alone, alone_lengths = up.hidden_states(speech[b:b + 1, :length], lengths[b:b + 1])
        frames = int(alone_lengths[0][0])
        assert frames == int(state_lengths[0][b]) and alone[0].size(1) == frames
        for state, ref in zip(states, alone):
            torch.testing.assert_close(state[b, :frames], ref[0, :frames], atol=1e-5, rtol=1e-5)


def test_base_extractor_groupnorm_sees_the_batch_padding():
    """HuBERT base's first conv GroupNorm normalises over time, padding included: the reference's batch
    output for a short utterance is not its output alone, and this frontend keeps that."""
    up = ReferenceHuBERTUpstream(random_hubert=TINY)
    speech, lengths = batch([16000, 6480], seed=1)
    states, _ = up.hidden_states(speech, lengths)
    alone, _ = up.hidden_states(speech[1:, :6480], lengths[1:])
    torch.testing.assert_close(states[0][0], up.hidden_states(speech[:1], lengths[:1])[0][0][0])
    assert (states[0][1, :20] - alone[0][0, :20]).abs().max() > 1e-3


def test_frame_length_rule():
    # 160 / 320 = 0.5 -> 0 and 480 / 320 = 1.5 -> 2 (half to even); 16000 -> 50 clamped to T = 49.
    lengths = torch.tensor([160, 161, 480, 800, 16000, 15999])
    assert reference_frame_lengths(lengths, 49).tolist() == [0, 1, 2, 2, 49, 49]
    assert reference_frame_lengths(lengths, 100).tolist() == [0, 1, 2, 2, 50, 50]
    up = ReferenceHuBERTUpstream(random_hubert=TINY)
    speech, lens = batch([16000, 480, 160], seed=2)
    feats, feat_lengths = up(speech, lens)
    assert feats.shape == (3, 49, 32) and feat_lengths.tolist() == [49, 2, 0]


def test_normalize_waveform():
    plain = ReferenceHuBERTUpstream(random_hubert=TINY)
    norm = ReferenceHuBERTUpstream(random_hubert=TINY, normalize_waveform=True)
    speech, lengths = batch([12000, 7000], seed=3)
    speech = 0.1 * speech + 0.05
    normalised = torch.zeros_like(speech)
    for b, length in enumerate(lengths.tolist()):
        normalised[b, :length] = F.layer_norm(speech[b, :length], (length,))
    for got, ref in zip(norm.hidden_states(speech, lengths)[0], plain.hidden_states(normalised, lengths)[0]):
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    # An already normalised waveform: LayerNorm again changes it by ~eps only.
    for got, ref in zip(norm.hidden_states(normalised, lengths)[0], plain.hidden_states(normalised, lengths)[0]):
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    assert (plain(speech, lengths)[0] - norm(speech, lengths)[0]).abs().max() > 1e-3


def test_gradient_reaches_weights_only():
    up = ReferenceHuBERTUpstream(random_hubert=TINY, layer_norm=True).train()
    assert not up.model.training and up.training  # frozen HuBERT stays in eval mode
    speech, lengths = batch([8000, 5000], seed=4)
    feats, _ = up(speech, lengths)
    feats.pow(2).mean().backward()
    assert up.weights.grad is not None and up.weights.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in up.model.parameters())
    assert [n for n, p in up.named_parameters() if p.requires_grad] == ["weights"]


def test_weighted_sum_is_softmax_over_states():
    up = ReferenceHuBERTUpstream(random_hubert=TINY, layer_norm=True)
    with torch.no_grad():
        up.weights.copy_(torch.tensor([0.3, -1.0, 2.0]))
    speech, lengths = batch([9000, 4000], seed=5)
    states, _ = up.hidden_states(speech, lengths)
    w = torch.softmax(up.weights.detach(), 0)
    expected = sum(wi * F.layer_norm(s, (32,)) for wi, s in zip(w, states))
    torch.testing.assert_close(up(speech, lengths)[0].detach(), expected, atol=1e-5, rtol=1e-5)


def test_layer_norm_first_last_state_has_no_final_encoder_layer_norm():
    up = ReferenceHuBERTUpstream(random_hubert=TINY_LARGE)
    speech, lengths = batch([8150], seed=6)
    captured = []
    hook = up.model.encoder.layers[-1].register_forward_hook(lambda m, i, out: captured.append(out[0]))
    with torch.no_grad():
        encoder_out, _ = up.model.extract_features(speech[:, :8150], mask=False)  # s3prl/fairseq forward
    hook.remove()
    states, _ = up.hidden_states(speech, lengths)
    frames = states[-1].size(1)
    layer_out = captured[0].transpose(0, 1)[:, :frames]  # s3prl pads frames to a multiple of 2
    torch.testing.assert_close(states[-1], layer_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(up.model.encoder.layer_norm(states[-1]), encoder_out, atol=1e-5, rtol=1e-5)
    assert (states[-1] - encoder_out).abs().max() > 1e-2


def test_bad_input_and_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="hubert_base_ls960.pt"):
        ReferenceHuBERTUpstream(path_or_url=str(tmp_path / "missing.pt"))
    up = ReferenceHuBERTUpstream(random_hubert=TINY)
    with pytest.raises(ValueError, match=r"\(2, 8000\)"):
        up(torch.zeros(2, 8000), torch.tensor([8000]))
    with pytest.raises(ValueError, match="at least 400"):
        up(torch.zeros(1, 300), torch.tensor([300]))
    with pytest.raises(ValueError, match="must lie in"):
        up(torch.zeros(2, 800), torch.tensor([800, 0]))
