"""ESPnet Trainer whose validation also scores retrieval over the whole dev set.

SpeechCLIP selects models on the dev set's mean R@10 (speech→image and image→speech). In-batch
recall depends on the batch size, so after ESPnet's own validation loop this trainer ranks every
dev utterance against every distinct dev image and reports ``mean_r10`` (and per-branch R@k),
which ``best_model_criterion: [[valid, mean_r10, max]]`` can select on.
"""
from __future__ import annotations

from typing import Dict, List

import torch
from espnet2.train.trainer import Trainer

from espnet_speechclip.metrics import retrieval_recall


def _gather(tensors: List[torch.Tensor], distributed: bool) -> torch.Tensor:
    local = torch.cat(tensors) if tensors else torch.zeros(0)
    if not distributed:
        return local
    parts = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, local)
    return torch.cat([p for p in parts if p.numel() > 0])


class SpeechCLIPTrainer(Trainer):
    @classmethod
    def validate_one_epoch(cls, model, iterator, reporter, options, distributed_option) -> None:
        core = model.module if hasattr(model, "module") else model
        embeddings: Dict[str, List[torch.Tensor]] = {name: [] for name in core.branches()}
        images: List[torch.Tensor] = []

        def keep_embedding(name):
            return lambda module, args, out: embeddings[name].append(out["embedding"].detach().float().cpu())

        handles = [branch.register_forward_hook(keep_embedding(name)) for name, branch in core.branches().items()]
        handles.append(core.register_forward_pre_hook(
            lambda module, args, kwargs: images.append(kwargs["image_feats"].detach().float().cpu()),
            with_kwargs=True))
        try:
            super().validate_one_epoch(model, iterator, reporter, options, distributed_option)
        finally:
            for handle in handles:
                handle.remove()
        distributed = distributed_option.distributed
        image_feats = _gather(images, distributed)
        if image_feats.numel() == 0:
            return
        # Captions of one image carry identical precomputed embeddings: that identifies the image.
        distinct, utt2img = torch.unique(image_feats, dim=0, return_inverse=True)
        stats: Dict[str, float] = {}
        for name, chunks in embeddings.items():
            result = retrieval_recall(_gather(chunks, distributed), distinct, utt2img)
            for direction, short in (("speech_to_image", "s2i"), ("image_to_speech", "i2s")):
                for k, value in result[direction].items():
                    stats[f"{short}_{k}_{name}"] = value
            for k in ("r1", "r10"):
                stats[f"mean_{k}_{name}"] = 0.5 * (result["speech_to_image"][k] + result["image_to_speech"][k])
        # mean_r10 is SpeechCLIP's selection criterion; mean_r1 suits small dev sets where R@10 saturates.
        for k in ("r1", "r10"):
            stats[f"mean_{k}"] = stats[f"mean_{k}_{core.retrieval_branch}"]
        reporter.register(stats)
        reporter.next()
