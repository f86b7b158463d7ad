"""VQ bridge, CLIP adapter, InfoNCE, upstream loading and freezing, bad input."""
import numpy as np
import pytest
import torch

from espnet_speechclip.clip_adapter import FrozenCLIP, MissingCheckpointError
from espnet_speechclip.losses import InfoNCELoss, image_groups_from_embeddings
from espnet_speechclip.preprocessor import SpeechCLIPPreprocessor
from espnet_speechclip.vq_bridge import VQBridge, build_keyword_norm, token_perplexity


@pytest.fixture(scope="module")
def clip(tiny_clip):
    return FrozenCLIP(**tiny_clip)


def make_bridge(seed=0, vocab=6, width=4):
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(vocab, width, generator=gen)
    ids = torch.tensor([0, 11, 12, 13, 49406, 49407])[:vocab]
    return VQBridge(table, ids, build_keyword_norm("masked", table, None), masked_ids=(0, 49406, 49407))


def test_vq_forward_is_the_chosen_table_row_and_never_a_masked_one():
    bridge = make_bridge().eval()
    keywords = torch.randn(3, 5, 4)
    out = bridge(keywords, torch.tensor([5, 3, 0]))
    for b, n in ((0, 5), (1, 3)):
        for k in range(n):
            torch.testing.assert_close(out["quantized"][b, k], bridge.table[out["indices"][b, k]])
    assert set(bridge.token_ids[out["indices"][:2]].flatten().tolist()) <= {11, 12, 13}
    assert (out["quantized"][1, 3:] == 0).all() and (out["quantized"][2] == 0).all()


def test_vq_straight_through_gradient_reaches_input_not_table():
    bridge = make_bridge().train()
    keywords = torch.randn(2, 3, 4, requires_grad=True)
    out = bridge(keywords, torch.tensor([3, 2]))
    (out["quantized"] * torch.randn_like(out["quantized"])).sum().backward()
    assert keywords.grad is not None and keywords.grad[:, :2].abs().sum() > 0
    assert not bridge.table.requires_grad
    # The backward pass is softmax(cos / τ) · E: check it against autograd of that soft path alone.
    k2 = keywords.detach().clone().requires_grad_(True)
    probe = torch.randn(2, 3, 4)
    out = bridge(k2, torch.tensor([3, 2]))
    (out["quantized"] * probe).sum().backward()
    k3 = keywords.detach().clone().requires_grad_(True)
    soft_out = torch.softmax(bridge(k3, torch.tensor([3, 2]))["similarity"] / bridge.temperature, -1) @ bridge.table
    valid = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])[..., None]
    (soft_out * valid * probe).sum().backward()
    torch.testing.assert_close(k2.grad, k3.grad)


def test_token_perplexity_counts_only_real_keywords_against_a_hand_value():
    # Real keywords: rows 2, 2, 5 | 3 (the padded 7s must not count): p = (1/2, 1/4, 1/4).
    indices = torch.tensor([[2, 2, 5, 7], [3, 7, 7, 7]])
    expected = np.exp(-(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25)))
    assert float(token_perplexity(indices, torch.tensor([3, 1]))) == pytest.approx(expected)
    assert float(token_perplexity(indices, torch.tensor([1, 0]))) == pytest.approx(1.0)  # one token used
    assert float(token_perplexity(indices, torch.tensor([0, 0]))) == 0.0


def test_vq_batchnorm_initialised_from_table_statistics():
    bridge = make_bridge()
    torch.testing.assert_close(bridge.batchnorm.weight.data, bridge.table.std(0))
    torch.testing.assert_close(bridge.batchnorm.bias.data, bridge.table.mean(0))


def test_clip_token_embeddings_path_equals_encode_text(clip):
    ids = clip.tokenize(["a big red circle left of a small blue star", "a star"])
    lengths = (ids != 0).sum(1) - 2
    keywords = clip.token_table()[ids[:, 1:1 + int(lengths.max())]]
    torch.testing.assert_close(clip.encode_token_embeddings(keywords, lengths), clip.model.encode_text(ids))


def test_clip_missing_local_checkpoint_is_one_clear_error(tiny_clip):
    with pytest.raises(MissingCheckpointError, match="clip_conf.pretrained"):
        FrozenCLIP(**{**tiny_clip, "pretrained": "/nonexistent/ViT-B-32.pt"})


def test_clip_local_checkpoint_round_trip(tiny_clip, clip, tmp_path):
    path = tmp_path / "clip.pt"
    torch.save(clip.model.state_dict(), path)
    loaded = FrozenCLIP(**{**tiny_clip, "pretrained": str(path)})
    ids = clip.tokenize(["a red star"])
    torch.testing.assert_close(loaded.model.encode_text(ids), clip.model.encode_text(ids))


def test_infonce_masks_same_image_captions_and_matches_hand_value():
    speech = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # utts 0 and 1 share an image
    groups = image_groups_from_embeddings(image)
    assert groups[0] == groups[1] != groups[2]
    loss_fn = InfoNCELoss(temperature=1.0)
    loss, logits = loss_fn(speech, image, groups)
    assert torch.isinf(logits[0, 1]) and torch.isinf(logits[1, 0]) and torch.isfinite(logits.diagonal()).all()
    s = torch.nn.functional.normalize(speech, dim=-1)
    i = torch.nn.functional.normalize(image, dim=-1)
    sim = s @ i.T
    rows = [torch.log_softmax(torch.stack([sim[0, 0], sim[0, 2]]), 0)[0],
            torch.log_softmax(torch.stack([sim[1, 1], sim[1, 2]]), 0)[0],
            torch.log_softmax(sim[2], 0)[2]]
    cols = [torch.log_softmax(torch.stack([sim[0, 0], sim[2, 0]]), 0)[0],
            torch.log_softmax(torch.stack([sim[1, 1], sim[2, 1]]), 0)[0],
            torch.log_softmax(sim[:, 2], 0)[2]]
    expected = -0.5 * (torch.stack(rows).mean() + torch.stack(cols).mean())
    torch.testing.assert_close(loss, expected)


def test_preprocessor_rejects_empty_and_too_short_audio_naming_the_utterance():
    pre = SpeechCLIPPreprocessor(train=True, max_train_samples=1000, min_samples=400)
    with pytest.raises(ValueError, match="utt_empty.*empty"):
        pre("utt_empty", {"speech": np.zeros(0)})
    with pytest.raises(ValueError, match="utt_short.*399 samples"):
        pre("utt_short", {"speech": np.zeros(399)})
    out = pre("utt_long", {"speech": np.arange(5000, dtype=np.float64)})
    assert out["speech"].shape == (1000,) and out["speech"].dtype == np.float32
    again = SpeechCLIPPreprocessor(train=True, max_train_samples=1000, min_samples=400)("utt_long", {"speech": np.arange(5000.0)})
    np.testing.assert_array_equal(out["speech"], again["speech"])  # reproducible crop
    assert SpeechCLIPPreprocessor(train=False)("u", {"speech": np.zeros(200000)})["speech"].shape == (200000,)


def test_training_crop_and_speed_perturbation_follow_the_epoch_seed():
    effects = [[1.0, "speed_perturb", {"factor": 0.9}], [1.0, "speed_perturb", {"factor": 1.1}]]
    pre = SpeechCLIPPreprocessor(train=True, max_train_samples=None, data_aug_effects=effects, data_aug_prob=1.0)
    wave = np.sin(np.arange(16000) / 10.0).astype(np.float32)

    def lengths(epoch_seed):
        torch.manual_seed(epoch_seed)  # what ESPnet's trainer does at the start of every epoch
        return [pre(f"utt{i}", {"speech": wave})["speech"].size for i in range(16)]

    first = lengths(1)
    # factor 0.9 plays 10/9 as long, 1.1 plays 10/11 as long; both occur, nothing else
    assert set(first) == {17778, 14546}
    assert lengths(1) == first  # same epoch seed, same effects
    assert any(lengths(seed) != first for seed in (2, 3, 4))  # another epoch, other draws
    # the crop position changes with the epoch too, and is reproducible within it
    crop = SpeechCLIPPreprocessor(train=True, max_train_samples=1000)
    starts = {}
    for seed in (1, 1, 2, 3):
        torch.manual_seed(seed)
        starts.setdefault(seed, set()).add(float(crop("u", {"speech": np.arange(5000.0)})["speech"][0]))
    assert len(starts[1]) == 1 and len(set.union(*starts.values())) > 1
    assert SpeechCLIPPreprocessor(train=False, data_aug_effects=effects, data_aug_prob=1.0)(
        "u", {"speech": wave})["speech"].size == 16000  # never at evaluation
    with pytest.raises(ValueError, match="data_aug_prob"):
        SpeechCLIPPreprocessor(train=True, data_aug_prob=1.5)
