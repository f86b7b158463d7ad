"""The branch parts against naive or hand-worked references written here: the attention-and-norm
block, the MLP projection, the keyword BatchNorms, CIF's min-one-segment firing, the target rules,
the scaling schedule, the reference CIF weight predictor, the shared block of Hybrid / Hybrid+ and
the encoder's input-layer view."""
import math

import pytest
import torch
from torch import nn

from espnet_speechclip.branches.abs_branch import padding_mask
from espnet_speechclip.branches.blocks import AttentionNormBlock, MLPProjection, build_projection
from espnet_speechclip.branches.cascaded import CascadedBranch
from espnet_speechclip.branches.cif_parts import (
    FramesPerSegmentTarget,
    RatioTarget,
    ReferenceCIFWeights,
    ScaleToTarget,
)
from espnet_speechclip.branches.parallel import SharedTokenParallel
from espnet_speechclip.branches.segmenters import SharedTokenKeywords
from espnet_speechclip.branches.shared import SharedCLSBlock
from espnet_speechclip.cif import CIFWeightPredictor, integrate_and_fire
from espnet_speechclip.frame_views import FrameViews, encode_with_input_layer
from espnet_speechclip.vq_bridge import (
    MaskedKeywordNorm,
    PaddedKeywordNorm,
    PerKeywordNorm,
    VQBridge,
    build_keyword_norm,
)


def randomise_(module: nn.Module, seed: int) -> None:
    """Every parameter drawn anew (zero-initialised biases and unit norms would hide mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


# (a) attention block ------------------------------------------------------------------------------

def naive_attention_norm(block: AttentionNormBlock, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """LN(x + MHA(x)) from the block's own weights, one utterance and one head at a time."""
    mha, heads = block.attention, block.attention.num_heads
    dim = x.size(-1)
    d_head = dim // heads
    w_q, w_k, w_v = mha.in_proj_weight.split(dim)
    b_q, b_k, b_v = mha.in_proj_bias.split(dim)
    out = torch.zeros_like(x)
    for b in range(x.size(0)):
        h = x[b]  # (T, D)
        q, k, v = h @ w_q.T + b_q, h @ w_k.T + b_k, h @ w_v.T + b_v
        keys_valid = torch.arange(x.size(1)) < lengths[b]
        context = []
        for i in range(heads):
            cols = slice(i * d_head, (i + 1) * d_head)
            scores = q[:, cols] @ k[:, cols].T / math.sqrt(d_head)  # (T, T)
            scores = scores.masked_fill(~keys_valid[None, :], float("-inf"))
            context.append(torch.softmax(scores, dim=-1) @ v[:, cols])
        y = h + torch.cat(context, dim=-1) @ mha.out_proj.weight.T + mha.out_proj.bias
        mean = y.mean(-1, keepdim=True)
        var = ((y - mean) ** 2).mean(-1, keepdim=True)
        out[b] = (y - mean) / torch.sqrt(var + block.norm.eps) * block.norm.weight + block.norm.bias
    return out


def test_attention_norm_block_is_layer_norm_of_x_plus_hand_computed_attention():
    torch.manual_seed(0)
    block = AttentionNormBlock(8, attention_heads=2, dropout_rate=0.1)
    randomise_(block, seed=1)
    block.eval()
    x, lengths = torch.randn(3, 7, 8), torch.tensor([7, 4, 1])
    with torch.no_grad():
        out = block(x, padding_mask(lengths, 7))
        expected = naive_attention_norm(block, x, lengths)
        for b, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(out[b, :n], expected[b, :n], atol=1e-5, rtol=1e-5)
            # batched == per utterance on its valid frames
            alone = block(x[b: b + 1, :n], padding_mask(lengths[b: b + 1], n))
            torch.testing.assert_close(out[b, :n], alone[0], atol=1e-5, rtol=1e-5)
    assert block.states(x, padding_mask(lengths, 7))[0] is x


# (b) keyword projections ---------------------------------------------------------------------------

def test_mlp_projection_is_linear_relu_linear_in_eval():
    torch.manual_seed(0)
    mlp = MLPProjection([6, 5, 4], dropout_rate=0.5).eval()
    first, last = mlp.sequential[0], mlp.sequential[-1]
    assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
    x = torch.randn(3, 2, 6)
    expected = torch.relu(x @ first.weight.T + first.bias) @ last.weight.T + last.bias
    torch.testing.assert_close(mlp(x), expected)
    assert (expected < 0).any()  # no ReLU after the last layer
    assert len(mlp.sequential) == 4  # Linear, ReLU, Dropout, Linear


def test_build_projection_checks_the_mlp_units_run_from_input_to_output_size():
    assert build_projection("mlp", 6, 4, {"units": [6, 5, 4]}).units == [6, 5, 4]
    for units in ([5, 5, 4], [6, 5, 3], [4, 6]):
        with pytest.raises(ValueError, match=r"must run from 6 to 4"):
            build_projection("mlp", 6, 4, {"units": units})
    with pytest.raises(ValueError, match="at least two sizes"):
        build_projection("mlp", 6, 6, {"units": [6]})
    with pytest.raises(TypeError, match="linear projection takes no options"):
        build_projection("linear", 6, 4, {"units": [6, 4]})
    with pytest.raises(ValueError, match="unknown projection"):
        build_projection("conv", 6, 4, {})


# (c) keyword BatchNorms ----------------------------------------------------------------------------

def test_per_keyword_norm_is_one_batchnorm_per_keyword_over_columns_w_k_plus_k():
    width, num = 3, 4
    norm = PerKeywordNorm(width, num).train()
    randomise_(norm, seed=2)
    keywords = torch.randn(5, num, width)
    out = norm(keywords, torch.full((5,), num))
    for k in range(num):
        # Keyword k, dimension w is feature w·K + k: columns k, K + k, 2K + k, ...
        reference = nn.BatchNorm1d(width).train()
        with torch.no_grad():
            reference.weight.copy_(norm.weight[k::num])
            reference.bias.copy_(norm.bias[k::num])
        torch.testing.assert_close(out[:, k], reference(keywords[:, k]))
        torch.testing.assert_close(norm.running_mean[k::num], reference.running_mean)
        torch.testing.assert_close(norm.running_var[k::num], reference.running_var)
    with pytest.raises(ValueError, match=r"\(B, 4, 3\)"):
        norm(torch.randn(5, 3, width), torch.full((5,), 3))


def test_per_keyword_norm_reference_init_repeats_the_table_statistics():
    table = torch.randn(10, 3)
    norm = build_keyword_norm("per_keyword", table, num_keywords=2)
    std, mean = table.std(0), table.mean(0)
    assert torch.equal(norm.weight.data, std.repeat(2)) and torch.equal(norm.bias.data, mean.repeat(2))
    # Against the w·K + k layout: feature j gets dimension j mod W (the reference's quirk), e.g.
    # dimension 0 of keyword 1 (feature 1) gets the statistics of dimension 1.
    assert norm.weight[1] == std[1] and norm.weight[2] == std[2] and norm.weight[3] == std[0]
    with pytest.raises(ValueError, match="per_keyword needs a fixed number"):
        build_keyword_norm("per_keyword", table, num_keywords=None)
    with pytest.raises(ValueError, match="unknown keyword_norm"):
        build_keyword_norm("per_slot", table, num_keywords=2)


def test_padded_keyword_norm_is_a_batchnorm_over_every_slot():
    norm = PaddedKeywordNorm(3).train()
    randomise_(norm, seed=3)
    reference = nn.BatchNorm1d(3).train()
    reference.load_state_dict(norm.state_dict())
    keywords, lengths = torch.randn(2, 4, 3), torch.tensor([4, 1])
    out = norm(keywords, lengths)
    torch.testing.assert_close(out, reference(keywords.reshape(8, 3)).reshape(2, 4, 3))
    torch.testing.assert_close(norm.running_mean, reference.running_mean)
    # The padding slots are in the statistics: changing one changes a real keyword's output.
    changed = keywords.clone()
    changed[1, 3] += 5.0
    assert not torch.allclose(norm(changed, lengths)[0, 0], out[0, 0])


def test_masked_keyword_norm_is_a_batchnorm_over_the_real_slots_only():
    norm = MaskedKeywordNorm(3).train()
    randomise_(norm, seed=4)
    reference = nn.BatchNorm1d(3).train()
    reference.load_state_dict(norm.state_dict())
    keywords, lengths = torch.randn(2, 4, 3), torch.tensor([4, 2])
    out = norm(keywords, lengths)
    real = torch.cat([keywords[0], keywords[1, :2]])  # the 6 real keywords, in order
    expected = reference(real)
    torch.testing.assert_close(out[0], expected[:4])
    torch.testing.assert_close(out[1, :2], expected[4:])
    assert (out[1, 2:] == 0).all()
    torch.testing.assert_close(norm.running_mean, reference.running_mean)
    changed = keywords.clone()
    changed[1, 3] += 5.0
    torch.testing.assert_close(norm(changed, lengths), out)


# (d) min-one-segment firing ------------------------------------------------------------------------

def test_min_one_segment_gives_the_unscaled_weighted_sum_and_no_tail():
    h = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [10.0, 0.0]],
                      [[2.0, 0.0], [0.0, 4.0], [7.0, 7.0]]])
    alpha = torch.tensor([[0.2, 0.3, 0.1],   # Σα = 0.6: a tail (≥ 0.5) without min_segments
                          [0.1, 0.2, 0.9]])  # 2 valid frames, Σα = 0.3: nothing fires without it
    lengths = torch.tensor([3, 2])
    segments, counts, fires = integrate_and_fire(h, alpha, lengths, min_segments=1)
    # 0.2·[1, 2] + 0.3·[3, −1] + 0.1·[10, 0] = [2.1, 0.1];  0.1·[2, 0] + 0.2·[0, 4] = [0.2, 0.8]
    torch.testing.assert_close(segments, torch.tensor([[[2.1, 0.1]], [[0.2, 0.8]]]))
    assert counts.tolist() == [1, 1] and fires.tolist() == [[2], [1]]
    segments0, counts0, _ = integrate_and_fire(h, alpha, lengths, min_segments=0)
    assert counts0.tolist() == [1, 0]
    torch.testing.assert_close(segments0[0, 0], torch.tensor([2.1, 0.1]) / 0.6)  # the tail, scaled to β
    with pytest.raises(ValueError, match="min_segments"):
        integrate_and_fire(h, alpha, lengths, min_segments=2)


def test_min_one_segment_leaves_utterances_with_a_full_segment_unchanged():
    gen = torch.Generator().manual_seed(5)
    frames = torch.randn(3, 20, 4, generator=gen)
    alpha = 0.2 + 0.7 * torch.rand(3, 20, generator=gen)
    alpha[2] *= 0.04  # Σα < 1 in the last utterance only
    lengths = torch.tensor([20, 13, 20])
    assert (alpha[:2].sum(1) >= 1).all() and alpha[2].sum() < 1
    one = integrate_and_fire(frames, alpha, lengths, min_segments=1)
    zero = integrate_and_fire(frames, alpha, lengths, min_segments=0)
    assert torch.equal(one[1][:2], zero[1][:2])
    n = int(zero[1][:2].max())
    assert torch.equal(one[0][:2, :n], zero[0][:2, :n]) and torch.equal(one[2][:2, :n], zero[2][:2, :n])
    # ... also with every utterance at Σα ≥ 1 (a tail included): identical outputs.
    full = [integrate_and_fire(frames[:2], alpha[:2], lengths[:2], 1.0, 0.5, m) for m in (0, 1)]
    for a, b in zip(*full):
        assert torch.equal(a, b)


# (e) target rules ----------------------------------------------------------------------------------

def test_frames_per_segment_target_rounds_half_to_even_and_never_clips():
    lengths = torch.tensor([10, 30, 50, 2000])
    # 10/20 = 0.5 -> 0, 30/20 = 1.5 -> 2, 50/20 = 2.5 -> 2 (banker's rounding), 2000/20 = 100
    assert FramesPerSegmentTarget(20)(lengths).tolist() == [0, 2, 2, 100]
    # this plugin's rule clips to [1, max_segments]
    assert RatioTarget(0.05, 75)(lengths).tolist() == [1, 2, 2, 75]


# (f) scaling schedule ------------------------------------------------------------------------------

def test_scale_to_target_scales_only_the_first_steps_training_calls():
    alpha, target = torch.tensor([[0.2, 0.3, 0.1, 0.4]]), torch.tensor([3])
    scaled = alpha * (3 + 1e-5) / 1.0  # Σα = 1
    scaling = ScaleToTarget(sum_eps=1e-5, steps=2)
    assert torch.equal(scaling.eval()(alpha, target), alpha)  # never in eval ...
    assert int(scaling.num_batches) == 0  # ... and eval calls do not count
    scaling.train()
    torch.testing.assert_close(scaling(alpha, target), scaled)
    torch.testing.assert_close(scaling(alpha, target), scaled)
    assert torch.equal(scaling(alpha, target), alpha)  # third training call: unscaled
    assert torch.equal(scaling.eval()(alpha, target), alpha)
    state = scaling.state_dict()
    assert int(state["num_batches"]) == 3
    resumed = ScaleToTarget(sum_eps=1e-5, steps=2)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.train()(alpha, target), alpha)  # the count survives a resume
    always = ScaleToTarget().train()
    for _ in range(3):
        torch.testing.assert_close(always(alpha, target), alpha * 3.0)
    assert "num_batches" not in always.state_dict()


# (g) reference CIF weights -------------------------------------------------------------------------

def naive_reference_alpha(module: ReferenceCIFWeights, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """sigmoid(Linear(ReLU(Conv1d(x)))) with the conv over every frame, padded ones as they are."""
    weight, bias = module.conv[0].weight, module.conv[0].bias  # (D, D, k), (D,)
    k = weight.size(2)
    padded = torch.nn.functional.pad(x, (0, 0, k // 2, k // 2))  # zeros only outside the T frames
    alpha = torch.zeros(x.shape[:2])
    for b in range(x.size(0)):
        for t in range(int(lengths[b])):
            hidden = bias + sum(weight[:, :, j] @ padded[b, t + j] for j in range(k))
            alpha[b, t] = torch.sigmoid(module.proj(torch.relu(hidden)))[0]
    return alpha


def test_reference_cif_weights_read_the_padded_frames_unmasked():
    torch.manual_seed(0)
    reference = ReferenceCIFWeights(4, kernel_size=3, dropout_rate=0.5).eval()
    x, lengths = torch.randn(2, 6, 4), torch.tensor([6, 4])
    with torch.no_grad():
        alpha = reference(x, lengths)
        torch.testing.assert_close(alpha, naive_reference_alpha(reference, x, lengths))
        assert (alpha[1, 4:] == 0).all()
        changed = x.clone()
        changed[1, 4] += 3.0  # the padded frame right after the last valid one (frame 3)
        moved = reference(changed, lengths)
        assert moved[1, 3] != alpha[1, 3]
        torch.testing.assert_close(moved[:, :3], alpha[:, :3])
        # This plugin's predictor zeroes the padding first: the same weights do not see it.
        plugin = CIFWeightPredictor(4, 3).eval()
        plugin.load_state_dict({k.replace("conv.0.", "conv."): v for k, v in reference.state_dict().items()})
        torch.testing.assert_close(plugin(changed, lengths), plugin(x, lengths))
        torch.testing.assert_close(plugin(x, lengths)[0], alpha[0])  # no padding: the same α
        assert (plugin(x, lengths)[1, 4:] == 0).all()
    assert not torch.equal(reference.train()(x, lengths), alpha)  # dropout 0.5 in training


# (h) shared block of Hybrid / Hybrid+ --------------------------------------------------------------

def shared_parts(num_keywords=3, width=8):
    torch.manual_seed(0)
    block = SharedCLSBlock.from_config(input_size=width, num_parallel_tokens=1, num_keyword_tokens=num_keywords,
                                       block="attention_norm", block_conf={"attention_heads": 2, "dropout_rate": 0.0})
    return block, SharedTokenParallel.from_config(width, 5), SharedTokenKeywords.from_config(width, 6, num_keywords)


def test_shared_block_tokens_are_its_outputs_at_the_token_positions():
    shared, parallel, keywords = shared_parts()
    shared.eval()
    frames, lengths = torch.randn(2, 5, 8), torch.tensor([5, 3])
    views = FrameViews(frames, lengths, frames + 1.0, frames - 1.0, lengths)
    with torch.no_grad():
        tokens = torch.cat([shared.parallel_cls, shared.keyword_cls], dim=1).expand(2, -1, -1)
        out = shared.block(torch.cat([tokens, frames], dim=1), padding_mask(lengths + 4, 9))
        after = shared(views)
        assert torch.equal(after.tokens["parallel"], out[:, :1])
        assert torch.equal(after.tokens["keywords"], out[:, 1:4])
        assert torch.equal(after.frames, out[:, 4:])
        assert after.lengths is lengths and after.local is views.local and after.upstream is views.upstream
        assert views.tokens == {}  # the input views are left as they were
        torch.testing.assert_close(parallel(after)["embedding"], parallel.proj(out[:, 0]))
        kw = keywords(after)
        torch.testing.assert_close(kw["keywords"], keywords.proj(out[:, 1:4]))
        assert kw["keyword_lengths"].tolist() == [3, 3] and keywords.num_keywords == 3
    with pytest.raises(ValueError, match="parallel token"):
        parallel(views)
    with pytest.raises(ValueError, match="4 keyword tokens"):
        SharedTokenKeywords.from_config(8, 6, num_keywords=4)(after)
    with pytest.raises(ValueError, match="num_parallel_tokens"):
        SharedCLSBlock.from_config(input_size=8, num_parallel_tokens=2)


class FramingUpstream(nn.Module):
    """Stand-in upstream: 16-sample frames through a linear layer, (B, S) -> (B, S // 16, D)."""

    def __init__(self, size: int):
        super().__init__()
        self.linear = nn.Linear(16, size)

    def output_size(self) -> int:
        return self.linear.out_features

    def forward(self, speech, lengths):
        frames = speech[:, : speech.size(1) // 16 * 16].reshape(speech.size(0), -1, 16)
        return self.linear(frames), lengths // 16


def test_hybrid_gradient_reaches_the_shared_block_from_both_branch_losses(tiny_clip):
    from espnet_speechclip.clip_adapter import FrozenCLIP
    from espnet_speechclip.espnet_model import ESPnetSpeechCLIPModel
    from espnet_speechclip.losses import image_groups_from_embeddings

    clip = FrozenCLIP(**tiny_clip)
    torch.manual_seed(0)
    shared = SharedCLSBlock.from_config(input_size=16, num_parallel_tokens=1, num_keyword_tokens=2,
                                        block_conf={"attention_heads": 2})
    parallel = SharedTokenParallel.from_config(16, clip.embed_dim)
    segmenter = SharedTokenKeywords.from_config(16, clip.token_width, num_keywords=2)
    gen = torch.Generator().manual_seed(0)
    table, ids = torch.randn(6, clip.token_width, generator=gen), torch.arange(100, 106)
    bridge = VQBridge(table, ids, build_keyword_norm("per_keyword", table, segmenter.num_keywords))
    model = ESPnetSpeechCLIPModel(FramingUpstream(16), None, None, parallel, CascadedBranch(segmenter, bridge, clip),
                                  shared_block=shared).train()
    speech, lengths = torch.randn(4, 320), torch.tensor([320, 300, 200, 160])
    images = torch.randn(4, clip.embed_dim)
    out = model.run_branches(speech, lengths)
    groups = image_groups_from_embeddings(images)
    block_params = list(shared.block.parameters())
    for name in ("parallel", "cascaded"):
        loss, _ = model.loss_fn(out[name]["embedding"], images, groups)
        grads = torch.autograd.grad(loss, block_params + [shared.parallel_cls, shared.keyword_cls],
                                    retain_graph=True, allow_unused=True)
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name
    # The assembled loss trains the shared block once, through both heads.
    loss, stats, _ = model(speech, lengths, images)
    loss.backward()
    assert {"loss_parallel", "loss_cascaded"} <= set(stats)
    assert shared.block.attention.in_proj_weight.grad.abs().sum() > 0
    assert parallel.proj.weight.grad.abs().sum() > 0 and segmenter.proj.weight.grad.abs().sum() > 0


# (i) encoder input-layer view ----------------------------------------------------------------------

def test_encode_with_input_layer_equals_the_espnet_encoder_and_its_embed():
    from espnet2.asr.encoder.transformer_encoder import TransformerEncoder
    from espnet2.legacy.nets.pytorch_backend.nets_utils import make_pad_mask
    from espnet2.legacy.nets.pytorch_backend.transformer.subsampling import TooShortUttError

    torch.manual_seed(0)
    encoder = TransformerEncoder(6, output_size=8, attention_heads=2, linear_units=16, num_blocks=2,
                                 input_layer="conv1d2").eval()
    xs, lengths = torch.randn(2, 20, 6), torch.tensor([20, 13])
    with torch.no_grad():
        expected, expected_lengths, _ = encoder(xs, lengths)
        frames, frame_lengths, local = encode_with_input_layer(encoder, xs, lengths)
        assert torch.equal(frames, expected) and torch.equal(frame_lengths, expected_lengths)
        embedded, _ = encoder.embed(xs, ~make_pad_mask(lengths)[:, None, :])
        assert torch.equal(local, embedded) and local.shape == frames.shape
        assert not torch.allclose(local, frames)
    with pytest.raises(TooShortUttError, match="too short"):
        encode_with_input_layer(encoder, torch.randn(1, 2, 6), torch.tensor([2]))
    with pytest.raises(TypeError, match="transformer or conformer"):
        encode_with_input_layer(nn.Linear(6, 8), xs, lengths)
