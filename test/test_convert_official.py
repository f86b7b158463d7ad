"""The published-checkpoint converter on stand-ins of all 15 checkpoints (test/official_fixtures.py):
conversion, the converted weights, embedding through from_pretrained, every consumer of an exp dir,
and each kind of bad input (one clear message, nothing left in --out_dir)."""
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from PIL import Image

from espnet_speechclip.inference import SpeechCLIP
from espnet_speechclip.official import map_state_dict
from espnet_speechclip.official_checkpoint import load_lightning_checkpoint
from espnet_speechclip.official_convert import convert
from official_fixtures import PUBLISHED, reference_classes, write_reference_checkpoint

ROOT = Path(__file__).resolve().parents[1]
VARIANT_OF_CONFIG = {("parallel", None): "Parallel", ("cls", None): "Cascaded", ("cif", None): "Cascaded+",
                     ("shared_cls", "shared_cls"): "Hybrid", ("shared_cls", "cif"): "Hybrid+"}


def variant_of(config: dict) -> str:
    """The variant a converted config builds, read from its slots (not from the converter's note)."""
    if config.get("parallel") == "shared_cls":
        return VARIANT_OF_CONFIG[("shared_cls", config["segmenter"])]
    return VARIANT_OF_CONFIG[(config.get("parallel") or config.get("segmenter"), None)]


@pytest.mark.parametrize("record", PUBLISHED, ids=lambda r: f"{r.paper}-{r.variant}-{r.size}-{r.corpus}")
def test_each_published_model_converts_loads_and_embeds(record, tmp_path):
    ckpt = tmp_path / "model.ckpt"
    written = write_reference_checkpoint(ckpt, record)
    out = convert(str(ckpt), str(tmp_path / "exp"))
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert variant_of(config) == record.variant
    assert config["upstream"] == "reference_hubert"
    hubert = torch.load(out / "hubert.pt", map_location="cpu")
    assert hubert["model_cfg"]["encoder_embed_dim"] == {"base": 768, "large": 1024}[record.size]
    # every weight the reference checkpoint carries arrives unchanged under its new name
    with reference_classes():
        state, _ = load_lightning_checkpoint(str(ckpt))
    converted = torch.load(out / "valid.mean_r10.best.pth", map_location="cpu")
    for key, value in map_state_dict(state, record.variant).items():
        assert torch.equal(converted[key], value), key
    if record.variant != "Parallel":
        ids = [int(line) for line in (out / "clip_vocab.txt").read_text().split()]
        assert ids == list(written["vocab_ids"])
    model = SpeechCLIP.from_pretrained(str(out)).model.eval()
    with torch.no_grad():
        embedded = model.encode_speech(0.1 * torch.randn(2, 16000), torch.tensor([16000, 9000]))
    width = {"base": 512, "large": 768}[record.size]
    assert embedded["embedding"].shape == (2, width) and torch.isfinite(embedded["embedding"]).all()


def write_data_dir(root: Path, width: int) -> Path:
    """Two images, two captions each, with image embeddings of the CLIP's width."""
    rng = np.random.default_rng(0)
    rows = {"wav.scp": [], "text": [], "utt2img": [], "image_feats.scp": [], "utt2spk": [], "img.scp": []}
    for img in range(2):
        np.save(root / f"img{img}.npy", rng.standard_normal(width).astype(np.float32))
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / f"img{img}.jpg")
        rows["img.scp"].append(f"img{img} {root / f'img{img}.jpg'}")
        for cap in range(2):
            utt = f"spk{cap}-img{img}_{cap}"
            soundfile.write(root / f"{utt}.wav", 0.1 * rng.standard_normal(16000).astype(np.float32), 16000)
            rows["wav.scp"].append(f"{utt} {root / (utt + '.wav')}")
            rows["text"].append(f"{utt} a dog runs on the grass")
            rows["utt2img"].append(f"{utt} img{img}")
            rows["image_feats.scp"].append(f"{utt} {root / f'img{img}.npy'}")
            rows["utt2spk"].append(f"{utt} spk{cap}")
    for name, lines in rows.items():
        (root / name).write_text("\n".join(sorted(lines)) + "\n")
    return root


def test_a_converted_model_goes_through_eval_pack_and_s3prl(tmp_path):
    record = next(r for r in PUBLISHED if r.variant == "Hybrid+" and r.size == "base")
    ckpt = tmp_path / "model.ckpt"
    write_reference_checkpoint(ckpt, record)
    out = tmp_path / "exp" / "speechclip_hybrid_plus_base"
    cli = [sys.executable, "-m", "espnet_speechclip.bin.convert_official", "--ckpt", str(ckpt), "--out_dir", str(out)]
    subprocess.run(cli, check=True, capture_output=True)
    (tmp_path / "data").mkdir()
    data = write_data_dir(tmp_path / "data", 512)
    subprocess.run([sys.executable, "-m", "espnet_speechclip.bin.speechclip_eval", "--data_dir", str(data),
                    "--model_dir", str(out), "--output_dir", str(tmp_path / "eval")], check=True, capture_output=True)
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["num_utterances"] == 4 and results["num_images"] == 2
    packed = subprocess.run([sys.executable, "-m", "espnet_speechclip.bin.pack_model", "--exp_dir", str(out),
                             "--outpath", str(tmp_path / "packed.zip")], capture_output=True, text=True)
    assert packed.returncode == 0, packed.stderr[-2000:]
    with zipfile.ZipFile(tmp_path / "packed.zip") as archive:
        names = archive.namelist()
    assert any(n.endswith("hubert.pt") for n in names) and any(n.endswith("clip.pt") for n in names)
    from espnet_speechclip.s3prl_upstream import register

    register()  # before s3prl is imported: it applies the torchaudio shims s3prl needs
    from s3prl.nn import S3PRLUpstream

    upstream = S3PRLUpstream("speechclip_local", path_or_url=str(tmp_path / "packed.zip")).eval()
    with torch.no_grad():
        states, _ = upstream(0.1 * torch.randn(1, 16000), torch.tensor([16000]))
    # 3 HuBERT states (2 layers), the weighted sum the branches read, the shared block's output
    assert len(states) == 3 + 1 + 1


def test_bad_inputs_give_one_message_and_leave_nothing(tmp_path):
    record = next(r for r in PUBLISHED if r.variant == "Cascaded+" and r.size == "base")
    good = tmp_path / "good.ckpt"
    write_reference_checkpoint(good, record)
    not_ckpt = tmp_path / "notes.ckpt"
    not_ckpt.write_text("not a checkpoint")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"lr": 0.1}}, other)
    wavlm = tmp_path / "wavlm.ckpt"
    write_reference_checkpoint(wavlm, record, config_patch={"audio_encoder": {"type": "WavLMEncoder"}})
    cases = {not_ckpt: "not a PyTorch checkpoint", truncated: "truncated", other: "not of a SpeechCLIP model",
             wavlm: "WavLMEncoder", tmp_path / "missing.ckpt": "no such checkpoint"}
    for path, message in cases.items():
        out = tmp_path / f"exp_{path.stem}"
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            convert(str(path), str(out))
        assert not out.exists() and not out.with_name(out.name + ".partial").exists()


class RunsCode:
    def __reduce__(self):
        return (subprocess.call, (["touch", "/tmp/speechclip_pwned"],))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"config": RunsCode()}}, path)
    with pytest.raises(ValueError, match="subprocess.call"):
        load_lightning_checkpoint(str(path))
    assert not Path("/tmp/speechclip_pwned").exists()


def test_an_unknown_setting_is_named(tmp_path):
    record = next(r for r in PUBLISHED if r.variant == "Hybrid" and r.size == "base")
    path = tmp_path / "model.ckpt"
    write_reference_checkpoint(path, record, config_patch={"model_settings": {"cascaded_branch": {
        "keyword": {"batchnorms": {"std_scale": 2.0}}}, "new_branch_weight": 0.5}})
    with pytest.raises(ValueError, match=r"new_branch_weight.*unknown|std_scale = 2\.0"):
        convert(str(path), str(tmp_path / "exp"))
    assert not (tmp_path / "exp").exists()


@pytest.mark.slow
def test_a_full_size_base_checkpoint_converts_and_embeds(tmp_path, monkeypatch):
    """HuBERT base (12 layers) + ViT-B/32 at full size (~0.9 GB); the full-size large one is
    bench/bench_convert.py."""
    import official_fixtures

    monkeypatch.setattr(official_fixtures, "VISION_WIDTH", 768)  # ViT-B/32's image tower at its real width
    record = next(r for r in PUBLISHED if r.variant == "Hybrid+" and r.size == "base")
    ckpt = tmp_path / "model.ckpt"
    write_reference_checkpoint(ckpt, record, hubert_layers=12, clip_layers=12, compact=False,
                               vocab_ids=official_fixtures.default_vocab_ids(rows=8112))
    out = convert(str(ckpt), str(tmp_path / "exp"))
    assert torch.load(out / "hubert.pt", map_location="cpu")["model_cfg"]["encoder_layers"] == 12
    assert json.loads((out / "clip_model.json").read_text())["vision_cfg"] == {
        "image_size": 224, "layers": 12, "width": 768, "patch_size": 32}
    model = SpeechCLIP.from_pretrained(str(out)).model.eval()
    with torch.no_grad():
        embedded = model.encode_speech(0.1 * torch.randn(1, 32000), torch.tensor([32000]))
    assert embedded["embedding"].shape == (1, 512) and len((out / "clip_vocab.txt").read_text().split()) == 8112
