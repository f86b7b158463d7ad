"""Pretrained weights in their real formats (random values), loaded through the recipes' code paths.

- HuBERT BASE architecture (12 x 768) in s3prl's converted format, as ``hubert_local`` reads it.
- open_clip ``ViT-B-32`` state dict, through stage 3's ``dump_image_feats`` entry point.
- OpenAI's TorchScript ``.pt`` format (tiny config: the format, not the size, is under test).
- A missing file: one error naming the file and the option, from the preflight the recipes run.
"""
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from espnet_speechclip.bin import check_pretrained, dump_image_feats
from espnet_speechclip.clip_adapter import FrozenCLIP, MissingCheckpointError, check_clip_weights
from espnet_speechclip.upstream import HUBERT_BASE, S3PRLWeightedSumUpstream, write_random_hubert_checkpoint


def save_openai_torchscript(state: dict, path: Path, extra: dict) -> None:
    """Write ``state`` the way OpenAI publishes CLIP: a TorchScript archive whose state dict has
    open_clip's parameter names plus ``input_resolution`` / ``context_length`` / ``vocab_size``."""
    root = torch.nn.Module()
    for key, value in {**state, **{k: torch.tensor(v) for k, v in extra.items()}}.items():
        *parents, leaf = key.split(".")
        module = root
        for name in parents:
            if not hasattr(module, name):
                module.add_module(name, torch.nn.Module())
            module = getattr(module, name)
        module.register_buffer(leaf, value.detach().half() if value.is_floating_point() else value)
    torch.jit.save(torch.jit.script(root), str(path))


def test_hubert_base_architecture_loads_through_hubert_local(tmp_path):
    path = write_random_hubert_checkpoint(str(tmp_path / "hubert_base_ls960.pt"), HUBERT_BASE, seed=3)
    upstream = S3PRLWeightedSumUpstream(name="hubert_local", path_or_url=path)
    assert (upstream.num_layers, upstream.output_size(), upstream.downsample_rate) == (13, 768, 320)
    saved = torch.load(path, map_location="cpu", weights_only=False)
    assert saved["model_cfg"]["encoder_layers"] == 12
    loaded = dict(upstream.upstream.named_parameters())
    name = next(k for k in loaded if k.endswith("encoder.layers.11.fc2.weight"))
    torch.testing.assert_close(loaded[name], saved["model_weight"]["encoder.layers.11.fc2.weight"])
    feats, lengths = upstream(torch.randn(1, 16000), torch.tensor([16000]))
    assert feats.shape == (1, 50, 768) and lengths.tolist() == [50]


def test_vit_b_32_state_dict_through_the_stage3_entry_point(tmp_path):
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32").eval()
    checkpoint = tmp_path / "ViT-B-32.pt"
    torch.save(model.state_dict(), checkpoint)
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    images = {}
    for i, size in enumerate([(40, 30), (24, 24), (30, 50)]):
        images[f"img{i}"] = tmp_path / f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(images[f"img{i}"])
    (data / "img.scp").write_text("".join(f"{k} {v}\n" for k, v in images.items()))
    (data / "utt2img").write_text("u0 img0\nu1 img1\nu2 img2\nu3 img0\n")
    dump_image_feats.main(["--data_dir", str(data), "--out_dir", str(tmp_path / "dump"), "--batch_size", "2",
                           "--clip_model_name", "ViT-B-32", "--clip_pretrained", str(checkpoint)])
    preprocess = open_clip.image_transform(model.visual.image_size, is_train=False)
    with torch.no_grad():
        expected = model.encode_image(torch.stack([preprocess(Image.open(p).convert("RGB"))
                                                   for p in images.values()])).numpy()
    scp = dict(line.split() for line in (tmp_path / "dump" / "image_feats.scp").read_text().splitlines())
    assert sorted(scp) == ["u0", "u1", "u2", "u3"] and scp["u0"] == scp["u3"]
    for i, utt in enumerate(["u0", "u1", "u2"]):
        np.testing.assert_allclose(np.load(scp[utt]), expected[i], rtol=1e-4, atol=1e-5)


def test_openai_torchscript_archive_loads_with_quickgelu(tiny_clip, tmp_path):
    import open_clip

    torch.manual_seed(1)
    source = open_clip.create_model(tiny_clip["model_name"], force_quick_gelu=True).eval()
    path = tmp_path / "tiny_openai.pt"
    save_openai_torchscript(source.state_dict(), path,
                            {"input_resolution": 32, "context_length": 77, "vocab_size": 49408})
    clip = FrozenCLIP(**{**tiny_clip, "pretrained": str(path)})
    assert type(clip.model.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    reference = source.half().float()  # OpenAI's files hold fp16 weights
    ids = clip.tokenize(["a red circle", "two dogs"])
    image = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(clip.model.encode_text(ids), reference.encode_text(ids))
    torch.testing.assert_close(clip.encode_image(image), reference.encode_image(image))


def test_missing_clip_file_names_the_file_and_the_option(tiny_clip):
    with pytest.raises(MissingCheckpointError, match=r"/nowhere/ViT-B-32\.pt.*--clip_pretrained"):
        FrozenCLIP(**{**tiny_clip, "pretrained": "/nowhere/ViT-B-32.pt"})
    with pytest.raises(ValueError, match="no pretrained tag 'opneai'"):
        check_clip_weights("ViT-B-32", "opneai")


def write_config(path: Path, upstream_conf: dict, clip_conf: dict) -> Path:
    path.write_text(yaml.safe_dump({"upstream": "s3prl", "upstream_conf": upstream_conf, "clip_conf": clip_conf}))
    return path


def test_preflight_stops_on_a_missing_file_and_prints_the_config_clip(tiny_clip, tmp_path, caplog, capsys):
    missing_hubert = str(tmp_path / "hubert_base_ls960.pt")
    config = write_config(tmp_path / "a.yaml", {"name": "hubert_local", "path_or_url": missing_hubert}, tiny_clip)
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        check_pretrained.main(["--train_config", str(config), "--stage", "1", "--stop-stage", "5"])
    assert exit_info.value.code == 1
    assert missing_hubert in caplog.text and "path_or_url" in caplog.text and "converted_ckpts" in caplog.text
    # Stages 1-3 do not need the upstream: the CLIP options of the config come back for speechclip.sh.
    check_pretrained.main(["--train_config", str(config), "--stop_stage", "3", "--local_data_opts", "--nj 1"])
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.split() == ["--clip_model_name", tiny_clip["model_name"], "--clip_pretrained",
                               tiny_clip["pretrained"], "--clip_model_config", tiny_clip["model_config"]]
    missing_clip = {**tiny_clip, "pretrained": str(tmp_path / "ViT-B-32.pt")}
    config = write_config(tmp_path / "b.yaml", {"name": "fbank"}, missing_clip)
    caplog.clear()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit):
        check_pretrained.main(["--train_config", str(config), "--stop_stage", "3"])
    assert str(tmp_path / "ViT-B-32.pt") in caplog.text and "--clip_pretrained" in caplog.text
    # --clip_pretrained on the command line wins over the config, as in speechclip.sh.
    check_pretrained.main(["--train_config", str(config), "--clip_pretrained", tiny_clip["pretrained"]])
    assert tiny_clip["pretrained"] in capsys.readouterr().out


def test_raw_fairseq_checkpoint_without_fairseq_is_one_clear_error(tmp_path):
    pytest.importorskip("s3prl")
    try:
        import fairseq  # noqa: F401
        pytest.skip("fairseq is installed")
    except ImportError:
        pass
    path = tmp_path / "hubert_base_ls960.pt"
    path.write_bytes(b"not read")
    with pytest.raises(ImportError, match="fairseq package.*converted_ckpts"):
        S3PRLWeightedSumUpstream(name="hubert_local", path_or_url=str(path), extra_conf={"fairseq": True})
