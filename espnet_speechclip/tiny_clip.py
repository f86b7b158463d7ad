"""Stage 3 for the synthetic corpus: train a tiny CLIP on the train image–caption pairs.

open_clip's own model classes, tokenizer and ``ClipLoss`` (symmetric InfoNCE with a learnable
temperature, Radford et al., 2021); the recipe freezes the result and uses it exactly like a
pretrained CLIP. Only the training split is seen.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from tqdm import tqdm

from espnet_speechclip.clip_features import load_rgb
from espnet_speechclip.data.kaldi_dir import read_kaldi_map
from espnet_speechclip.metrics import recall_at_k

logger = logging.getLogger(__name__)


def image_caption_pairs(data_dir: str) -> List[Tuple[str, str, str]]:
    """Distinct (image id, image path, caption) triples of a data dir."""
    data = Path(data_dir)
    img_scp, utt2img, text = (read_kaldi_map(data / n) for n in ("img.scp", "utt2img", "text"))
    pairs = sorted({(img, img_scp[img], text[utt]) for utt, img in utt2img.items() if utt in text})
    if not pairs:
        raise ValueError(f"{data}: no image-caption pairs (img.scp, utt2img, text)")
    return pairs


def _encode_pairs(model, preprocess, tokenizer, pairs) -> Tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([preprocess(load_rgb(i, p)) for i, p, _ in tqdm(pairs, desc="stage 3: loading images")])
    tokens = tokenizer([c for _, _, c in pairs])
    return images, tokens


@torch.no_grad()
def text_to_image_recall(model, images: torch.Tensor, tokens: torch.Tensor, image_ids: List[str]) -> Dict[str, float]:
    """Each caption ranks the distinct images (the SpokenShapes topline, DESIGN §6)."""
    model.eval()
    distinct = sorted(set(image_ids))
    index = {img: n for n, img in enumerate(distinct)}
    first_of = {}
    for n, img in enumerate(image_ids):
        first_of.setdefault(img, n)
    first = [first_of[img] for img in distinct]
    image_emb = torch.cat([model.encode_image(images[first][s:s + 256]) for s in range(0, len(first), 256)])
    text_emb = torch.cat([model.encode_text(tokens[s:s + 256]) for s in range(0, len(tokens), 256)])
    labels = torch.tensor([index[i] for i in image_ids])
    return recall_at_k(text_emb, image_emb, labels)


def train_tiny_clip(train_dir: str, model_config: str, output: str, model_name: str = "spoken_shapes_tiny_clip",
                    valid_dir: Optional[str] = None, epochs: int = 30, batch_size: int = 128, lr: float = 1e-3,
                    weight_decay: float = 0.1, warmup_share: float = 0.05, seed: int = 0) -> Dict[str, float]:
    """Train, save the state dict to ``output`` (open_clip ``.pt`` format); returns valid text→image R@k."""
    import open_clip
    from open_clip.loss import ClipLoss

    torch.manual_seed(seed)
    open_clip.factory._MODEL_CONFIGS[model_name] = json.loads(Path(model_config).read_text())
    model = open_clip.create_model(model_name)
    preprocess = open_clip.image_transform(model.visual.image_size, is_train=False)
    tokenizer = open_clip.get_tokenizer(model_name)
    pairs = image_caption_pairs(train_dir)
    images, tokens = _encode_pairs(model, preprocess, tokenizer, pairs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(pairs) / batch_size)
    total = epochs * steps_per_epoch
    warmup = max(1, int(warmup_share * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    loss_fn = ClipLoss()
    generator = torch.Generator().manual_seed(seed)
    progress = tqdm(total=total, desc="stage 3: training tiny CLIP")
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(pairs), generator=generator)
        for start in range(0, len(pairs), batch_size):
            idx = order[start:start + batch_size]
            if len(idx) < 2:
                continue
            img = F.normalize(model.encode_image(images[idx]), dim=-1)
            txt = F.normalize(model.encode_text(tokens[idx]), dim=-1)
            loss = loss_fn(img, txt, model.logit_scale.exp())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            progress.update(1)
            progress.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    progress.close()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), output)
    result: Dict[str, float] = {}
    if valid_dir is not None:
        valid_pairs = image_caption_pairs(valid_dir)
        v_images, v_tokens = _encode_pairs(model, preprocess, tokenizer, valid_pairs)
        result = text_to_image_recall(model, v_images, v_tokens, [i for i, _, _ in valid_pairs])
        logger.info("tiny CLIP text->image on %s: %s", valid_dir, result)
    return result
