"""Upstream loading (a real-format local HuBERT checkpoint), freezing, and the assembled model."""
from pathlib import Path

import pytest
import numpy as np
import soundfile
import torch

from espnet_speechclip.branches.cascaded import CascadedBranch
from espnet_speechclip.branches.parallel import ParallelBranch
from espnet_speechclip.branches.segmenters import CIFSegmenter
from espnet_speechclip.clip_adapter import FrozenCLIP
from espnet_speechclip.espnet_model import ESPnetSpeechCLIPModel
from espnet_speechclip.frame_views import FrameViews
from espnet_speechclip.tasks.speechclip import read_vocab
from espnet_speechclip.upstream import S3PRLWeightedSumUpstream, write_random_hubert_checkpoint
from espnet_speechclip.vq_bridge import VQBridge, build_keyword_norm

SMALL_HUBERT = {"encoder_layers": 2, "encoder_embed_dim": 48, "encoder_ffn_embed_dim": 96,
                "encoder_attention_heads": 2, "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
                "final_dim": 16, "conv_pos": 16, "conv_pos_groups": 4}


@pytest.fixture(scope="module")
def hubert_ckpt(tmp_path_factory):
    return write_random_hubert_checkpoint(str(tmp_path_factory.mktemp("hubert") / "small_hubert.pt"), SMALL_HUBERT)


def test_local_hubert_checkpoint_loads_through_s3prl(hubert_ckpt):
    upstream = S3PRLWeightedSumUpstream(name="hubert_local", path_or_url=hubert_ckpt)
    assert upstream.num_layers == 3 and upstream.output_size() == 48 and upstream.downsample_rate == 320
    assert torch.equal(upstream.featurizer.weights.data, torch.zeros(3))  # zero-initialised softmax weights
    feats, lengths = upstream(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    assert feats.shape == (2, 50, 48) and lengths.tolist() == [50, 25]
    assert all(not p.requires_grad for p in upstream.upstream.parameters())


def test_missing_upstream_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="hubert_local.*path_or_url"):
        S3PRLWeightedSumUpstream(name="hubert_local", path_or_url=str(tmp_path / "hubert_base_ls960.pt"))


def test_unknown_random_hubert_field_is_an_error(tmp_path):
    with pytest.raises(TypeError, match="encoder_layer"):
        write_random_hubert_checkpoint(str(tmp_path / "x.pt"), {"encoder_layer": 2})


def build_hybrid_plus(hubert_ckpt, tiny_clip):
    upstream = S3PRLWeightedSumUpstream(name="hubert_local", path_or_url=hubert_ckpt)
    clip = FrozenCLIP(**tiny_clip)
    vocab = read_vocab(str(Path(tiny_clip["model_config"]).parent / "vocab.txt"))
    parallel = ParallelBranch.from_config(48, clip.embed_dim, attention_heads=2, linear_units=64)
    segmenter = CIFSegmenter.from_config(input_size=48, token_width=clip.token_width, upstream_size=48,
                                         attention_heads=2, linear_units=64, target_ratio=0.1)
    table = clip.token_table(vocab)
    bridge = VQBridge(table, vocab, build_keyword_norm("masked", table, segmenter.num_keywords),
                      masked_ids=(0, clip.sot_id, clip.eot_id))
    return ESPnetSpeechCLIPModel(upstream, None, None, parallel, CascadedBranch(segmenter, bridge, clip))


def test_one_step_updates_branches_and_leaves_frozen_parts_bit_identical(hubert_ckpt, tiny_clip):
    torch.manual_seed(0)
    model = build_hybrid_plus(hubert_ckpt, tiny_clip).train()
    frozen = {**{f"up.{k}": v.clone() for k, v in model.upstream.upstream.state_dict().items()},
              **{f"clip.{k}": v.clone() for k, v in model.cascaded.clip.state_dict().items()}}
    trainable = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    images = torch.randn(4, model.cascaded.clip.embed_dim)
    loss, stats, weight = model(torch.randn(4, 24000), torch.tensor([24000, 20000, 16000, 12000]), images)
    loss.backward()
    assert {"loss_parallel", "loss_cascaded", "loss_quantity", "r1_parallel", "r1_cascaded"} <= set(stats)
    optim.step()
    for name, before in frozen.items():
        now = (model.upstream.upstream if name.startswith("up.") else model.cascaded.clip).state_dict()[name.split(".", 1)[1]]
        assert torch.equal(before, now), name
    assert model.cascaded.clip.model.token_embedding.weight.grad is None
    moved = {k for k, v in model.named_parameters() if v.requires_grad and not torch.equal(trainable[k], v)}
    for must_move in ("upstream.featurizer.weights", "parallel.proj.weight",
                      "cascaded.segmenter.weight_predictor.proj.weight", "cascaded.segmenter.proj.weight",
                      "cascaded.bridge.batchnorm.weight"):
        assert must_move in moved, must_move


def test_clip_too_short_for_any_fire_gives_finite_output(hubert_ckpt, tiny_clip):
    model = build_hybrid_plus(hubert_ckpt, tiny_clip).eval()
    with torch.no_grad():
        out = model.encode_speech(torch.randn(2, 800), torch.tensor([800, 640]))
    assert all(0 <= n <= 2 for n in out["cascaded"]["keyword_lengths"].tolist())  # 2 frames at most
    assert torch.isfinite(out["cascaded"]["embedding"]).all() and torch.isfinite(out["embedding"]).all()


def test_cif_local_integration_takes_segments_from_the_encoder_input_layer(hubert_ckpt, tiny_clip):
    """integrate_from local: α still from the contextual frames, segment contents from the
    encoder's input layer (before self-attention), which encode_frames captures."""
    from espnet2.asr.encoder.transformer_encoder import TransformerEncoder

    torch.manual_seed(0)
    model = build_hybrid_plus(hubert_ckpt, tiny_clip)
    model.encoder = TransformerEncoder(48, output_size=32, attention_heads=2, linear_units=64, num_blocks=1,
                                       input_layer="conv1d2")
    clip = model.cascaded.clip
    model.parallel = ParallelBranch.from_config(32, clip.embed_dim, attention_heads=2, linear_units=64)
    segmenter = CIFSegmenter.from_config(input_size=32, token_width=clip.token_width, upstream_size=48,
                                         attention_heads=2, linear_units=64, target_ratio=0.2, integrate_from="local")
    model.cascaded.segmenter = segmenter
    model.eval()
    speech, lengths = torch.randn(2, 24000), torch.tensor([24000, 16000])
    with torch.no_grad():
        views = model.encode_frames(speech, lengths)
        assert isinstance(views, FrameViews) and views.tokens == {}
        frames, frame_lengths, local = views.frames, views.lengths, views.local
        up, up_lengths = model.upstream(speech, lengths)
        torch.testing.assert_close(views.upstream, up)
        assert torch.equal(views.upstream_lengths, up_lengths)
        expected_local = model.encoder.embed(up, None)[0]
        assert local.shape == frames.shape and not torch.allclose(local, frames)
        torch.testing.assert_close(local, expected_local[:, : frames.size(1)])
        out = segmenter(views)
        # Same α and firings whatever is integrated; the contents follow the local frames only.
        shifted = segmenter(FrameViews(frames, frame_lengths, local + 1.0, up, up_lengths))
        torch.testing.assert_close(out["alpha"], shifted["alpha"])
        assert torch.equal(out["fire_frames"], shifted["fire_frames"])
        assert not torch.allclose(out["keywords"], shifted["keywords"])
        context = CIFSegmenter.from_config(input_size=32, token_width=clip.token_width, upstream_size=48,
                                           attention_heads=2, linear_units=64, target_ratio=0.2).eval()
        context.load_state_dict(segmenter.state_dict())
        ignored = context(FrameViews(frames, frame_lengths, local + 1.0, up, up_lengths))
        torch.testing.assert_close(ignored["keywords"], context(views)["keywords"])
    # No views without the local frames (the old forward raised when local_frames was missing).
    with pytest.raises(TypeError, match="local"):
        FrameViews(frames, frame_lengths)
    with pytest.raises(ValueError, match="integrate_from"):
        CIFSegmenter.from_config(input_size=32, token_width=clip.token_width, upstream_size=48,
                                 integrate_from="nearby")
    model.train()
    loss, _, _ = model(speech, lengths, torch.randn(2, clip.embed_dim))
    loss.backward()
    assert torch.isfinite(loss) and model.encoder.embed.out.weight.grad is not None
    assert not model.encoder.embed._forward_hooks  # the capture hook never outlives a forward


def test_cif_local_weights_come_from_the_local_frames_only():
    """weights_from local: α is the weight predictor on the local frames; the contextual frames
    (and the segmenter's self-attention) no longer move it, but still fill the segments."""
    torch.manual_seed(0)
    segmenter = CIFSegmenter.from_config(input_size=16, token_width=8, upstream_size=16, attention_heads=2,
                                         linear_units=32, dropout_rate=0.0, target_ratio=0.2,
                                         weights_from="local").eval()
    frames, local, lengths = torch.randn(2, 30, 16), torch.randn(2, 30, 16), torch.tensor([30, 21])

    def views(frames, local):  # no encoder: the upstream view is the frames themselves
        return FrameViews(frames, lengths, local, frames, lengths)

    with torch.no_grad():
        out = segmenter(views(frames, local))
        torch.testing.assert_close(out["alpha"], segmenter.weight_predictor(local, lengths))
        moved = segmenter(views(frames + 1.0, local))
        torch.testing.assert_close(moved["alpha"], out["alpha"])
        assert torch.equal(moved["fire_frames"], out["fire_frames"])
        assert not torch.allclose(moved["keywords"], out["keywords"])
    with pytest.raises(TypeError, match="local"):
        FrameViews(frames, lengths)
    with pytest.raises(ValueError, match="weights_from"):
        CIFSegmenter.from_config(input_size=16, token_width=8, upstream_size=16, weights_from="nearby")
    # Gradients reach the local frames through α only.
    local.requires_grad_(True)
    segmenter.train()(views(frames, local))["quantity_loss"].backward()
    assert local.grad is not None and local.grad.abs().sum() > 0


def test_fused_retrieval_embedding_weighs_the_unit_branch_embeddings(hubert_ckpt, tiny_clip):
    """retrieval_branch fused: norm((1 - λ) norm(e_p) + λ norm(e_c)), checked against a hand computation."""
    torch.manual_seed(0)
    model = build_hybrid_plus(hubert_ckpt, tiny_clip).eval()
    model.retrieval_branch, model.fusion_weight = "fused", 0.3
    assert model.embedding_names() == ["parallel", "cascaded", "fused"]
    with torch.no_grad():
        out = model.encode_speech(torch.randn(2, 24000), torch.tensor([24000, 16000]))
    p, c = out["parallel"]["embedding"], out["cascaded"]["embedding"]
    expected = 0.7 * p / p.norm(dim=-1, keepdim=True) + 0.3 * c / c.norm(dim=-1, keepdim=True)
    expected = expected / expected.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(out["fused"]["embedding"], expected)
    assert out["embedding"] is out["fused"]["embedding"]
    parts = (model.upstream, None, None)
    with pytest.raises(ValueError, match="fusion_weight"):
        ESPnetSpeechCLIPModel(*parts, model.parallel, model.cascaded, fusion_weight=1.5)
    with pytest.raises(ValueError, match="retrieval_branch"):
        ESPnetSpeechCLIPModel(*parts, model.parallel, model.cascaded, retrieval_branch="both")
    # A branch dropped from a shared config: retrieval falls back to the branch the model has.
    single = ESPnetSpeechCLIPModel(*parts, model.parallel, None, retrieval_branch="fused")
    assert single.embedding_names() == ["parallel"] and single.retrieval_branch == "parallel"



def test_detached_weight_input_keeps_alpha_losses_out_of_the_frames():
    """detach_weight_input: the quantity loss trains the weight predictor but sends nothing into
    the local frames; without it, it does (the default, as SpeechCLIP+)."""
    torch.manual_seed(0)
    frames, lengths = torch.randn(2, 30, 16), torch.tensor([30, 21])
    for detach in (False, True):
        segmenter = CIFSegmenter.from_config(input_size=16, token_width=8, upstream_size=16, attention_heads=2,
                                             linear_units=32, dropout_rate=0.0, target_ratio=0.2,
                                             integrate_from="local", weights_from="local", detach_weight_input=detach)
        local = torch.randn(2, 30, 16, requires_grad=True)
        segmenter(FrameViews(frames, lengths, local, frames, lengths))["quantity_loss"].backward()
        assert (local.grad is None) == detach
        assert segmenter.weight_predictor.proj.weight.grad.abs().sum() > 0


def test_fire_times_follow_the_segmenters_own_threshold(hubert_ckpt, tiny_clip, tmp_path):
    """Stage 5's fire times come from the CIF segmenter's threshold: with β = 2 each fire lies in the
    frame where the segmenter itself fired (a fixed β = 1 would put twice as many, elsewhere)."""
    from espnet_speechclip.evaluation import embed_speech

    torch.manual_seed(0)
    model = build_hybrid_plus(hubert_ckpt, tiny_clip).eval()
    model.cascaded.segmenter.firing.threshold = 2.0
    wav = tmp_path / "a.wav"
    soundfile.write(wav, 0.3 * np.random.default_rng(0).standard_normal(24000).astype(np.float32), 16000)
    speech = embed_speech(model, {"a": str(wav)})
    with torch.no_grad():
        cascaded = model.encode_speech(torch.from_numpy(soundfile.read(wav, dtype="float32")[0])[None],
                                       torch.tensor([24000]))["cascaded"]
    count = int(cascaded["keyword_lengths"][0])
    fires = cascaded["fire_frames"][0, :count].tolist()
    hop = 24000 / 16000 / int(cascaded["alpha_lengths"][0])
    times = speech.fire_times[0]
    assert count >= 1 and len(times) == count
    full = int(cascaded["alpha"][0].sum() // 2.0)  # fires inside the utterance; a tail fires at its end
    assert [int(t / hop) for t in times[:full]] == fires[:full]
