"""ESPnet Trainer with whole-dev-set retrieval validation and a guard against non-finite batches.

SpeechCLIP selects models on the dev set's mean R@10 (speech→image and image→speech). In-batch
recall depends on the batch size, so after ESPnet's own validation loop this trainer ranks every
dev utterance against every distinct dev image and reports ``mean_r10`` (and per-branch R@k),
which ``best_model_criterion: [[valid, mean_r10, max]]`` can select on.

A training batch whose loss is not finite is skipped: the running statistics its forward pass
changed are put back, ESPnet's own non-finite gradient check skips the optimiser step, a warning
names the batch's utterances, and ``train.nonfinite_batches`` in the epoch summary counts them.
An epoch in which no step was valid stops the run with an error instead of ESPnet's warning.
"""
from __future__ import annotations

import logging
import pickle
import zipfile
from typing import Dict, List, Tuple

import torch
from espnet2.train.trainer import Trainer

from espnet_speechclip.metrics import retrieval_recall

logger = logging.getLogger(__name__)


def _gather(tensors: List[torch.Tensor], distributed: bool) -> torch.Tensor:
    local = torch.cat(tensors) if tensors else torch.zeros(0)
    if not distributed:
        return local
    parts = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, local)
    return torch.cat([p for p in parts if p.numel() > 0])


class NonFiniteGuard(torch.nn.Module):
    """Wraps the (possibly DDP-wrapped) model for one training epoch; counts skipped batches.

    ESPnet already skips the optimiser step when the gradient norm is not finite, but a NaN loss
    does not reliably give a NaN gradient (a ``+inf`` loss, or NaN in a branch that is masked
    later), and BatchNorm running statistics are updated inside forward, before any check. So:
    the running statistics are saved before forward and restored when the loss is not finite,
    and the returned loss is multiplied by NaN so that every gradient it reaches is NaN and
    ESPnet's check skips the step (on every DDP rank alike, since gradients are all-reduced).
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.skipped = 0
        # Only modules with running statistics change state in forward (BatchNorm in the VQ
        # bridge, Conformer convolutions); copying all buffers would copy CLIP's token table.
        self._stat_modules = [m for m in model.modules()
                              if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.track_running_stats]

    def _running_stats(self) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        return [(buf, buf.detach().clone()) for m in self._stat_modules for buf in m.buffers()]

    def forward(self, **batch):
        saved = self._running_stats() if self.training else []
        retval = self.model(**batch)
        loss = retval["loss"] if isinstance(retval, dict) else retval[0]
        if bool(torch.isfinite(loss).all()) and all(bool(torch.isfinite(now).all()) for now, _ in saved):
            return retval
        for now, before in saved:
            # Through .data: the graph may hold these buffers for backward (a bumped version counter
            # would make backward fail); that backward yields NaN gradients and is thrown away anyway.
            now.data.copy_(before)
        self.skipped += 1
        utts = list(batch.get("utt_id", []))
        logger.warning("non-finite loss (%s) in a batch of %d utterances, skipped: %s%s", loss.detach().tolist(),
                       len(utts), " ".join(utts[:20]), " ..." if len(utts) > 20 else "")
        poisoned = loss * torch.tensor(float("nan"), dtype=loss.dtype, device=loss.device)
        if isinstance(retval, dict):
            return dict(retval, loss=poisoned)
        return (poisoned,) + tuple(retval[1:])


class SpeechCLIPTrainer(Trainer):
    @staticmethod
    def resume(checkpoint, *args, **kwargs) -> None:
        # torch.save writes a zip archive in place: a run killed while saving leaves one without
        # its central directory, which torch reports as an unsafe-load problem.
        if not zipfile.is_zipfile(checkpoint):
            raise RuntimeError(
                f"cannot resume from {checkpoint}: truncated or corrupt (was the run killed while saving "
                f"it?). Move it away to train from scratch; the <N>epoch.pth weights beside it are intact.")
        try:
            Trainer.resume(checkpoint, *args, **kwargs)
        except (RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as err:
            raise RuntimeError(f"cannot resume from {checkpoint} (if the config changed since it was "
                               f"written, use a new --output_dir): {err}") from err

    @classmethod
    def train_one_epoch(cls, model, iterator, optimizers, schedulers, scaler, reporter, summary_writer, options,
                        distributed_option) -> bool:
        guard = NonFiniteGuard(model)
        all_steps_are_invalid = super().train_one_epoch(
            model=guard, iterator=iterator, optimizers=optimizers, schedulers=schedulers, scaler=scaler,
            reporter=reporter, summary_writer=summary_writer, options=options,
            distributed_option=distributed_option)
        skipped = torch.tensor(float(guard.skipped))
        if distributed_option.distributed:
            skipped = skipped.to("cuda" if options.ngpu > 0 else "cpu")
            torch.distributed.all_reduce(skipped)
        # One extra reporter step after the loop: ESPnet drops its NaN placeholders for the other keys.
        reporter.register({"nonfinite_batches": int(skipped.item())})
        reporter.next()
        if skipped.item() > 0:
            logger.warning("epoch %d: %d training batches skipped for a non-finite loss", reporter.get_epoch(),
                           int(skipped.item()))
        if all_steps_are_invalid and not options.no_forward_run:
            raise RuntimeError(f"epoch {reporter.get_epoch()}: no training step had a finite loss and gradient "
                               f"({int(skipped.item())} batches with a non-finite loss); see the warnings above")
        return all_steps_are_invalid

    @classmethod
    def validate_one_epoch(cls, model, iterator, reporter, options, distributed_option) -> None:
        wrapped = isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel))
        core = model.module if wrapped else model
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
        speech = {name: _gather(chunks, distributed) for name, chunks in embeddings.items()}
        if "fused" in core.embedding_names():
            speech["fused"] = core.fuse(speech["parallel"], speech["cascaded"])
        for name, emb in speech.items():
            result = retrieval_recall(emb, distinct, utt2img)
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
