"""The stand-ins for the published SpeechCLIP / SpeechCLIP+ checkpoints (test/official_fixtures.py).

Checked against what CI has (this plugin's key mapping, open_clip, s3prl); the tests that compare
with the reference repositories' own files (download scripts, YAML configs) are skipped where their
mirrors are absent (``SPEECHCLIP_MIRRORS``, default /work/.mirror).
"""
import io
import os
import pickle
import pickletools
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import official_fixtures as F  # noqa: E402

from espnet_speechclip import official  # noqa: E402

MIRRORS = Path(os.environ.get("SPEECHCLIP_MIRRORS", "/work/.mirror"))
REPOS = {"SpeechCLIP": MIRRORS / "atosystem+SpeechCLIP/repo",
         "SpeechCLIP+": MIRRORS / "ShampooWang+SpeechCLIP_plus/repo"}
IDS = [f"{r.paper}-{r.size}-{r.corpus}-{r.variant}" for r in F.PUBLISHED]
ORDERED_NAMESPACE = "avssl.base.ordered_namespace OrderedNamespace"
WANDB_LOGGER = "pytorch_lightning.loggers.wandb WandbLogger"


def _reference_file(paper: str, path: str) -> str:
    if not (REPOS[paper] / "HEAD").exists():
        pytest.skip(f"no mirror of the {paper} repository at {REPOS[paper]}")
    return subprocess.run(["git", "-C", str(REPOS[paper]), "show", f"HEAD:{path}"], check=True,
                          capture_output=True, text=True).stdout


def _globals(path: str) -> set:
    """module-and-name pairs of every GLOBAL the checkpoint's pickle names (protocol 2 as torch.save writes)."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    return {arg for op, arg, _ in pickletools.genops(io.BytesIO(data)) if op.name == "GLOBAL"}


def test_published_records_are_the_fifteen_models():
    assert len(F.PUBLISHED) == 15
    assert len({(r.paper, r.variant, r.size, r.corpus) for r in F.PUBLISHED}) == 15
    assert len({r.url for r in F.PUBLISHED}) == 15
    assert sum(r.paper == "SpeechCLIP" for r in F.PUBLISHED) == 6
    patterns = {"SpeechCLIP": r"(base|large)/(flickr|coco)/(parallel|cascaded)/"
                              r"epoch_\d+-step_\d+-val_recall_mean_(1|10)_\d+\.\d{4}\.ckpt",
                "SpeechCLIP+": r"(base|large)/(flickr|coco)/(cascaded\+|hybrid\+?)/"
                               r"epoch=\d+-step=\d+-val_recall_mean_10=\d+\.\d{4}\.ckpt"}
    for r in F.PUBLISHED:
        assert re.fullmatch(patterns[r.paper], r.hub_file), r.hub_file
        assert r.hub_file.split("/")[2] == r.variant.lower()
        assert 0 < r.dev_figure < 100 and r.epoch >= 0 and r.step > 0
        assert r.url.startswith(f"https://huggingface.co/{r.hub_repo}/resolve/main/")
    plus = next(r for r in F.PUBLISHED if r.variant == "Cascaded+")
    assert "cascaded%2B/epoch%3D" in plus.url  # as ShampooWang/SpeechCLIP_plus's download script writes it


@pytest.mark.parametrize("paper", ["SpeechCLIP", "SpeechCLIP+"])
def test_published_records_match_the_download_scripts(paper):
    script = _reference_file(paper, "download_ckpts.sh")
    urls = {u.split("?")[0] for u in re.findall(r"https://huggingface\.co/\S+\.ckpt\S*", script)}
    assert urls == {r.url for r in F.PUBLISHED if r.paper == paper}


def _typed(value):
    """The tree with each leaf's type beside it, so 4 != 4.0 and True != 1."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


@pytest.mark.parametrize("record", F.PUBLISHED, ids=IDS)
def test_reference_config_equals_the_reference_yaml(record):
    real = yaml.load(_reference_file(record.paper, record.config), Loader=yaml.FullLoader)  # as base_task.py
    assert _typed(F.reference_config(record)) == _typed(real)


@pytest.mark.parametrize("record", F.PUBLISHED, ids=IDS)
def test_task_config_names_the_variant(record):
    assert official.task_config(F.reference_config(record))["variant"] == record.variant


def test_reference_config_is_a_fresh_copy():
    tree = F.reference_config(F.PUBLISHED[0])
    tree["model_settings"]["cascaded_branch"]["keyword"]["batchnorms"]["type"] = "same"
    assert F.reference_config(F.PUBLISHED[0]) != tree
    plus = F.reference_config(F.PUBLISHED[6])["model_settings"]["cascaded_branch"]
    assert plus["keyword"]["batchnorms"]["type"] == "eachKw"


@pytest.mark.parametrize("record", F.PUBLISHED, ids=IDS)
def test_reference_checkpoint(tmp_path, monkeypatch, record):
    before = {k: v for k, v in sys.modules.items() if k.startswith(("avssl", "pytorch_lightning"))}
    info = F.write_reference_checkpoint(tmp_path / "model.ckpt", record)
    assert {k: v for k, v in sys.modules.items() if k.startswith(("avssl", "pytorch_lightning"))} == before
    tree = F.reference_config(record)
    uses_wandb = tree["trainer"]["logger"] == "wandb"
    names = _globals(info["path"])
    assert ORDERED_NAMESPACE in names and (WANDB_LOGGER in names) == uses_wandb
    assert not any(n.startswith("official_fixtures") for n in names)
    for name in before:  # whatever another test imported: the stand-ins alone must make the file load
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ModuleNotFoundError, match="avssl"):  # the reference's class paths, really pickled
        torch.load(info["path"], map_location="cpu", weights_only=False)
    with F.reference_classes():
        ckpt = torch.load(info["path"], map_location="cpu", weights_only=False)
    assert set(ckpt) == {"epoch", "global_step", "pytorch-lightning_version", "state_dict", "callbacks",
                         "optimizer_states", "lr_schedulers", "native_amp_scaling_state", "hparams_name",
                         "hyper_parameters"}
    assert ckpt["pytorch-lightning_version"] == "1.5.10" and ckpt["hparams_name"] == "kwargs"
    assert (ckpt["epoch"], ckpt["global_step"]) == (record.epoch + 1, record.step + 1)
    # hyper_parameters: a plain dict (Lightning 1.5.10 stores dict(model.hparams)) around the namespace
    assert type(ckpt["hyper_parameters"]) is dict and list(ckpt["hyper_parameters"]) == ["config"]
    config = ckpt["hyper_parameters"]["config"]
    assert type(config) is F.OrderedNamespace and config._odict["model_settings"].to_dict() == tree["model_settings"]
    plain = config.to_dict()
    assert list(plain)[:3] == ["config", "save_path", "train"] and plain["config"] == record.config
    assert {k: v for k, v in plain.items() if k not in ("trainer", "data")}.items() >= {
        k: v for k, v in tree.items() if k not in ("trainer", "data")}.items()
    assert isinstance(plain["trainer"]["logger"], F.WandbLogger) == uses_wandb
    assert plain["data"]["dataset"]["modalities"] == ["audio", "image", "text"]

    state = ckpt["state_dict"]
    assert {k: tuple(v.shape) for k, v in state.items()} == info["shapes"]
    mapped = official.map_state_dict(state, record.variant)  # every key has a rule or is ignored
    assert not any(k.startswith(("clip.", "criterion.eye", "cascaded_branch.clip.")) for k in mapped)
    hubert = F.HUBERT[info["hubert"]["size"]]
    assert state["audio_encoder.encoder.encoder.layers.0.fc1.weight"].shape == (hubert["ffn"], hubert["dim"])
    assert state["audio_encoder.encoder.encoder.layers.1.fc1.weight"].shape == (hubert["ffn"], hubert["dim"])
    assert "audio_encoder.encoder.encoder.layers.2.fc1.weight" not in state
    assert state["audio_encoder.weightedsum_layer.weights"].shape == (3,)
    assert ("audio_encoder.encoder.feature_extractor.conv_layers.1.2.1.weight" in state) == (record.size == "large")
    width = F.CLIP[tree["clip"]["name"]]["width"]
    reduced, full = state["clip.model.token_embedding.weight"], state["clip.original_text_emb_weight"]
    assert reduced.shape == (len(info["vocab_ids"]), width) and full.shape == (F.CLIP_VOCAB, width)
    assert torch.equal(full[info["vocab_ids"]], reduced)
    assert len({full[i].numpy().tobytes() for i in range(0, F.CLIP_VOCAB, 97)}) == len(range(0, F.CLIP_VOCAB, 97))
    assert state["criterion.eye_mat"].shape == (F.eye_size(record),) * 2
    assert ("criterion.temperature" in state) == tree["cl_loss"]["args"]["temperature_trainable"]
    if record.variant != "Parallel":  # the branch holds the same ClipModel: the same tensors
        for key, value in state.items():
            if key.startswith("clip."):
                assert state[f"cascaded_branch.{key}"].data_ptr() == value.data_ptr()
        assert torch.equal(state["cascaded_branch.vector_quantizer.curr_temp"], torch.tensor([0.1]))
        assert (state["cascaded_branch.bn_layer.bn_layer.running_var"] > 0).all()
    else:
        assert not any(k.startswith("cascaded_branch.") for k in state)


def test_reference_checkpoint_options(tmp_path):
    record = next(r for r in F.PUBLISHED if r.variant == "Hybrid+" and r.size == "base")
    info = F.write_reference_checkpoint(tmp_path / "a.ckpt", record, hubert_layers=1, vocab_ids=[49407, 5, 49406],
                                        seed=3, wandb_logger=False)
    assert WANDB_LOGGER not in _globals(info["path"]) and info["config"]["trainer"]["logger"] == "wandb"
    with F.reference_classes():
        state = torch.load(info["path"], weights_only=False)["state_dict"]
    assert "audio_encoder.encoder.encoder.layers.1.fc1.weight" not in state
    assert torch.equal(state["clip.model.token_embedding.weight"][1], state["clip.original_text_emb_weight"][5])
    other = F.write_reference_checkpoint(tmp_path / "b.ckpt", record, hubert_layers=1, vocab_ids=[49407, 5, 49406])
    with F.reference_classes():
        assert not torch.equal(torch.load(other["path"], weights_only=False)["state_dict"]["cascaded_branch.cls"],
                               state["cascaded_branch.cls"])  # another seed, other weights
    with pytest.raises(ValueError, match="49406"):
        F.write_reference_checkpoint(tmp_path / "c.ckpt", record, vocab_ids=[5, 6])


@pytest.mark.parametrize("name", sorted(F.CLIP))
def test_clip_keys_are_open_clips(name):
    import open_clip

    record = next(r for r in F.PUBLISHED if F.reference_config(r)["clip"]["name"] == name)
    with torch.device("meta"):
        model = open_clip.model.CLIP(**F.clip_model_config(record, clip_layers=2))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == dict(F.clip_keys(name, 2))


@pytest.mark.parametrize("size", ["base", "large"])
def test_clip_checkpoint_is_the_reference_checkpoints_clip(tmp_path, size):
    from espnet_speechclip.clip_adapter import FrozenCLIP

    record = next(r for r in F.PUBLISHED if r.size == size)
    info = F.write_reference_checkpoint(tmp_path / "model.ckpt", record, seed=1)
    clip = FrozenCLIP(**F.write_clip_checkpoint(tmp_path / "clip.pt", record, seed=1)).model.state_dict()
    with F.reference_classes():
        state = torch.load(info["path"], weights_only=False)["state_dict"]
    assert torch.equal(clip["token_embedding.weight"][info["vocab_ids"]], state["clip.model.token_embedding.weight"])
    assert torch.equal(clip["token_embedding.weight"], state["clip.original_text_emb_weight"])
    for key, value in state.items():
        if key.startswith("clip.model.") and "token_embedding" not in key:
            assert torch.equal(clip[key[len("clip.model."):]], value), key


@pytest.mark.slow
@pytest.mark.parametrize("size", ["base", "large"])
def test_hubert_keys_are_s3prls(size):
    from espnet_speechclip.s3prl_compat import import_s3prl_hub

    import_s3prl_hub()
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig
    from s3prl.upstream.utils import merge_with_parent

    h = F.HUBERT[size]
    conf = {"label_rate": 50.0, "encoder_layers": 2, "encoder_embed_dim": h["dim"], "encoder_ffn_embed_dim": h["ffn"],
            "encoder_attention_heads": h["heads"], "layer_norm_first": h["layer_norm_first"],
            "extractor_mode": h["extractor_mode"], "final_dim": h["final_dim"]}
    dictionary = [str(i) for i in range(F.HUBERT_CLASSES)]  # one dictionary: len() = its number of units
    with torch.device("meta"):
        model = HubertModel(merge_with_parent(HubertConfig, conf), merge_with_parent(HubertPretrainingConfig, {
            "label_rate": 50.0, "sample_rate": 16000, "normalize": False}), [dictionary])
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == F.hubert_keys(size, 2)


@pytest.mark.slow
def test_uncompact_checkpoint_has_the_same_values(tmp_path):
    record = F.PUBLISHED[0]
    small = F.write_reference_checkpoint(tmp_path / "a.ckpt", record, hubert_layers=1)
    big = F.write_reference_checkpoint(tmp_path / "b.ckpt", record, hubert_layers=1, compact=False)
    assert os.path.getsize(big["path"]) > 10 * os.path.getsize(small["path"])
    with F.reference_classes():
        a, b = (torch.load(x["path"], weights_only=False)["state_dict"] for x in (small, big))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pickle_stand_in_round_trip():
    tree = {"a": {"b": [1, {"c": 2}]}, "d": "x"}
    with F.reference_classes():
        clone = pickle.loads(pickle.dumps(F.OrderedNamespace(tree), protocol=2))
    assert clone.to_dict() == tree and isinstance(clone._odict["a"]._odict["b"][1], F.OrderedNamespace)
