"""Every variant trains through ESPnet's own trainer on a tiny generated data dir."""
from pathlib import Path

import pytest
import torch
import yaml

from espnet_speechclip.tasks.speechclip import SpeechCLIPTask

CONF = Path(__file__).parent / "conf"
VARIANTS = ["parallel", "cascaded", "cascaded_plus", "hybrid", "hybrid_plus"]


def write_config(variant: str, directory: Path, clip_conf: dict, vocab: str, **overrides) -> Path:
    config = yaml.safe_load((CONF / "tiny_common.yaml").read_text())
    config.update(yaml.safe_load((CONF / f"tiny_{variant}.yaml").read_text()))
    config.update(clip_conf=clip_conf, clip_vocab=vocab, **overrides)
    path = directory / f"{variant}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def train_cmd(config: Path, corpus: Path, output_dir: Path, *extra: str):
    cmd = ["--config", str(config), "--output_dir", str(output_dir), "--ngpu", "0", "--use_tensorboard", "false"]
    for split, prefix in (("train", "train"), ("valid", "valid")):
        cmd += [f"--{prefix}_data_path_and_name_and_type", f"{corpus / split / 'wav.scp'},speech,sound",
                f"--{prefix}_data_path_and_name_and_type", f"{corpus / split / 'image_feats.scp'},image_feats,npy",
                f"--{prefix}_shape_file", str(corpus / split / "speech_shape")]
    return cmd + list(extra)


def reporter_stats(output_dir: Path) -> dict:
    return torch.load(output_dir / "checkpoint.pth", map_location="cpu", weights_only=True)["reporter"]["stats"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_trains_and_loss_goes_down(variant, tiny_corpus, tiny_clip, tmp_path):
    config = write_config(variant, tmp_path, tiny_clip, str(Path(tiny_clip["model_config"]).parent / "vocab.txt"))
    SpeechCLIPTask.main(cmd=train_cmd(config, tiny_corpus, tmp_path / "exp"))
    stats = reporter_stats(tmp_path / "exp")
    assert sorted(stats) == [1, 2]
    assert stats[2]["train"]["loss"] < stats[1]["train"]["loss"]
    keys = set(stats[1]["train"])
    if variant in ("parallel", "hybrid", "hybrid_plus"):
        assert {"loss_parallel", "r1_parallel"} <= keys
    if variant != "parallel":
        assert {"loss_cascaded", "r1_cascaded", "keywords_per_utt"} <= keys
    if variant.endswith("plus"):
        assert "loss_quantity" in keys
    assert (tmp_path / "exp" / "valid.mean_r10.best.pth").exists()
    assert 0.0 <= stats[2]["valid"]["mean_r10"] <= 1.0
    # Models are selected on the configured retrieval embedding; a hybrid also reports the fused one.
    retrieval = {"hybrid_plus": "fused", "cascaded": "cascaded", "cascaded_plus": "cascaded"}.get(variant, "parallel")
    assert stats[2]["valid"]["mean_r10"] == stats[2]["valid"][f"mean_r10_{retrieval}"]
    assert ("mean_r1_fused" in stats[2]["valid"]) == variant.startswith("hybrid")


def test_killed_after_epoch_one_resumes_at_epoch_two(tiny_corpus, tiny_clip, tmp_path):
    vocab = str(Path(tiny_clip["model_config"]).parent / "vocab.txt")
    exp = tmp_path / "exp"
    SpeechCLIPTask.main(cmd=train_cmd(write_config("parallel", tmp_path, tiny_clip, vocab, max_epoch=1),
                                      tiny_corpus, exp))
    first = (exp / "1epoch.pth").stat().st_mtime_ns
    epoch1 = torch.load(exp / "1epoch.pth", weights_only=True)
    SpeechCLIPTask.main(cmd=train_cmd(write_config("parallel", tmp_path, tiny_clip, vocab, max_epoch=2),
                                      tiny_corpus, exp, "--resume", "true"))
    assert (exp / "1epoch.pth").stat().st_mtime_ns == first  # epoch 1 was not trained again
    assert sorted(reporter_stats(exp)) == [1, 2]
    epoch2 = torch.load(exp / "2epoch.pth", weights_only=True)
    changed = [k for k in epoch1 if not torch.equal(epoch1[k], epoch2[k])]
    assert changed, "epoch 2 must continue training from epoch 1's weights"


def test_unknown_yaml_key_fails_and_names_it(tiny_corpus, tiny_clip, tmp_path, capsys):
    vocab = str(Path(tiny_clip["model_config"]).parent / "vocab.txt")
    config = write_config("parallel", tmp_path, tiny_clip, vocab, parallel_conf={"attention_head": 2})
    with pytest.raises(TypeError, match="attention_head"):
        SpeechCLIPTask.main(cmd=train_cmd(config, tiny_corpus, tmp_path / "exp"))
    config = write_config("parallel", tmp_path, tiny_clip, vocab, segmentr="cif")
    with pytest.raises(SystemExit):
        SpeechCLIPTask.main(cmd=train_cmd(config, tiny_corpus, tmp_path / "exp2"))
    assert "segmentr" in capsys.readouterr().err


@pytest.mark.parametrize("weights_from,segment_weights", [("local", "alpha"), ("upstream", "uniform")])
def test_boundary_prior_trains_the_cif_weights_through_espnet(weights_from, segment_weights, tiny_corpus,
                                                              tiny_clip, tmp_path):
    """Hybrid+ with the acoustic pseudo-boundary prior, CIF weights from the encoder's input layer
    or (SpokenShapes default) from the upstream frames at their own rate with uniform segments:
    the prior's loss is reported and falls; a CLS segmenter with a prior is refused."""
    vocab = str(Path(tiny_clip["model_config"]).parent / "vocab.txt")
    segmenter_conf = yaml.safe_load((CONF / "tiny_hybrid_plus.yaml").read_text())["segmenter_conf"]
    config = write_config("hybrid_plus", tmp_path, tiny_clip, vocab, boundary_prior="acoustic",
                          boundary_prior_conf={"weight": 1.0},
                          segmenter_conf=dict(segmenter_conf, integrate_from="local", weights_from=weights_from,
                                              weight_kernel_size=5, local_frame_centre=3.0,
                                              segment_weights=segment_weights))
    SpeechCLIPTask.main(cmd=train_cmd(config, tiny_corpus, tmp_path / "exp"))
    stats = reporter_stats(tmp_path / "exp")
    assert stats[2]["train"]["loss_boundary"] < stats[1]["train"]["loss_boundary"]
    assert "loss_boundary" in stats[2]["valid"]
    config = write_config("cascaded", tmp_path, tiny_clip, vocab, boundary_prior="acoustic")
    with pytest.raises(ValueError, match="segmenter: cif"):
        SpeechCLIPTask.main(cmd=train_cmd(config, tiny_corpus, tmp_path / "exp2"))
