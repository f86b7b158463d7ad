"""Stage 3 on the CLIP side: image embeddings dumped as ``npy`` and the reduced token vocabulary.

ESPnet has no image data type, so the frozen CLIP image embedding of every image is written once
(``<out>/image_feats/<image>.npy``) with ``img_feats.scp`` (image -> npy) and ``image_feats.scp``
(utterance -> its image's npy) for ESPnet's ``npy`` reader. The reduced vocabulary holds the CLIP
token ids of the **training** captions only: SpeechCLIP's code built it from every caption, test
included, which lets test words into the VQ codebook.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from espnet_speechclip.clip_adapter import FrozenCLIP
from espnet_speechclip.data.kaldi_dir import read_kaldi_map, write_kaldi_map

logger = logging.getLogger(__name__)


def load_rgb(image_id: str, path: str) -> Image.Image:
    """Open an image as RGB; a missing or corrupt file raises ``ValueError`` naming the image."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode != "RGB":
                logger.info("image %s: converted %s to RGB", image_id, img.mode)
                # Alpha is composited on white so transparent regions do not turn black.
                if img.mode in ("RGBA", "LA", "P"):
                    img = img.convert("RGBA")
                    background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                    img = Image.alpha_composite(background, img)
                return img.convert("RGB")
            return img.copy()
    except (OSError, SyntaxError) as err:
        raise ValueError(f"image {image_id}: cannot read {path}: {err}") from err


def load_image_batch(clip: FrozenCLIP, items: Sequence[tuple]) -> torch.Tensor:
    """(image_id, path) pairs -> (B, 3, H, W) preprocessed for this CLIP."""
    return torch.stack([clip.preprocess(load_rgb(i, p)) for i, p in items])


@torch.no_grad()
def dump_image_feats(clip: FrozenCLIP, data_dir: str, out_dir: str, batch_size: int = 64) -> Dict[str, str]:
    """Embed every image of ``data_dir/img.scp`` used by ``utt2img``; returns image -> npy path."""
    data, out = Path(data_dir), Path(out_dir)
    img_scp = read_kaldi_map(data / "img.scp")
    utt2img = read_kaldi_map(data / "utt2img")
    unknown = sorted({img for img in utt2img.values() if img not in img_scp})
    if unknown:
        raise ValueError(f"{data / 'utt2img'}: images not in img.scp: {unknown[:10]}")
    needed = sorted(set(utt2img.values()))
    feat_dir = out / "image_feats"
    feat_dir.mkdir(parents=True, exist_ok=True)
    paths: Dict[str, str] = {}
    for start in tqdm(range(0, len(needed), batch_size), desc=f"stage 3: image embeddings {data.name}"):
        chunk = needed[start:start + batch_size]
        feats = clip.encode_image(load_image_batch(clip, [(i, img_scp[i]) for i in chunk])).float().numpy()
        for image_id, feat in zip(chunk, feats):
            path = feat_dir / f"{image_id}.npy"
            np.save(path, feat)
            paths[image_id] = str(path.resolve())
    write_kaldi_map(out / "img_feats.scp", paths)
    write_kaldi_map(out / "image_feats.scp", {utt: paths[img] for utt, img in utt2img.items()})
    logger.info("%s: %d image embeddings (%d-d) for %d utterances", data.name, len(paths), feats.shape[1],
                len(utt2img))
    return paths


def build_vocab(clip: FrozenCLIP, train_text: str, output: str) -> List[int]:
    """CLIP token ids of the training captions (pad/SOT/EOT excluded) -> ``id piece`` lines."""
    captions = list(read_kaldi_map(train_text).values())
    ids = set()
    for start in range(0, len(captions), 1024):
        ids.update(clip.tokenize(captions[start:start + 1024]).flatten().tolist())
    ids -= {clip.pad_id, clip.sot_id, clip.eot_id}
    vocab = sorted(ids)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    pieces = clip.decode(vocab)
    Path(output).write_text("".join(f"{i} {p}\n" for i, p in zip(vocab, pieces)))
    logger.info("reduced CLIP vocabulary: %d tokens from %d training captions -> %s", len(vocab), len(captions), output)
    return vocab
