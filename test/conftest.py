"""Shared fixtures: a tiny learnable data dir, a tiny CLIP config and its reduced vocabulary."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
WORDS = ["red", "blue", "green", "circle", "square", "star", "big", "small"]


def write_tiny_clip(directory: Path) -> dict:
    """A random tiny open_clip config + its reduced vocabulary; returns the clip_conf dict."""
    import open_clip

    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "tiny_clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    ids = sorted({int(i) for i in tokenizer([" ".join(WORDS)])[0].tolist() if i not in (0, 49406, 49407)})
    (directory / "vocab.txt").write_text("".join(f"{i}\n" for i in ids))
    # Saved weights, so that every process (trainer, evaluator) sees the same random CLIP.
    open_clip.factory._MODEL_CONFIGS["tiny-test-clip"] = TINY_CLIP
    torch.manual_seed(0)
    torch.save(open_clip.create_model("tiny-test-clip").state_dict(), directory / "tiny_clip.pt")
    return {"model_name": "tiny-test-clip", "model_config": str(config), "pretrained": str(directory / "tiny_clip.pt")}


def write_tiny_corpus(root: Path, num_images: int = 8, captions: int = 3, seed: int = 0) -> Path:
    """Utterances whose pitch encodes their image: learnable in a few steps on CPU."""
    rng = np.random.default_rng(seed)
    wav_dir, npy_dir = root / "wav", root / "npy"
    wav_dir.mkdir(parents=True, exist_ok=True)
    npy_dir.mkdir(parents=True, exist_ok=True)
    image_emb = rng.standard_normal((num_images, TINY_CLIP["embed_dim"])).astype(np.float32)
    for split, offset in (("train", 0), ("valid", 1)):
        lines = {"wav.scp": [], "image_feats.scp": [], "speech_shape": [], "utt2img": []}
        for img in range(num_images):
            for cap in range(captions if split == "train" else 1):
                utt = f"{split}_img{img}_{cap}"
                n = int(rng.integers(8000, 16000))
                t = np.arange(n) / 16000
                freq = 200 + 150 * img
                wav = 0.3 * np.sin(2 * np.pi * freq * (1 + 0.01 * (cap + offset)) * t)
                wav += 0.01 * rng.standard_normal(n)
                soundfile.write(wav_dir / f"{utt}.wav", wav.astype(np.float32), 16000, subtype="PCM_16")
                np.save(npy_dir / f"{utt}.npy", image_emb[img])
                lines["wav.scp"].append(f"{utt} {wav_dir / (utt + '.wav')}")
                lines["image_feats.scp"].append(f"{utt} {npy_dir / (utt + '.npy')}")
                lines["speech_shape"].append(f"{utt} {n}")
                lines["utt2img"].append(f"{utt} img{img}")
        (root / split).mkdir(exist_ok=True)
        for name, rows in lines.items():
            (root / split / name).write_text("\n".join(sorted(rows)) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("tiny_corpus"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))
