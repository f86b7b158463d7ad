"""SpeechCLIPTask: the ESPnet task that builds every SpeechCLIP / SpeechCLIP+ variant from its slots.

Slots (each a ``ClassChoices``, so ``--<slot> <choice> --<slot>_conf {...}`` on the command line or
in YAML): ``upstream`` (``s3prl``, or ``reference_hubert``: the SpeechCLIP reference's own HuBERT forward), ``encoder`` (optional ESPnet encoder), ``shared_block`` (optional:
``cls_attention``, the block the SpeechCLIP+ Hybrid / Hybrid+ branches share), ``parallel``
(optional: ``parallel`` = own CLS + Transformer, ``shared_cls`` = head on the shared block),
``segmenter`` (optional: ``cls`` = cascaded SpeechCLIP, ``shared_cls`` = Hybrid's keyword tokens,
``cif`` = cascaded SpeechCLIP+), ``boundary_prior`` (optional: ``acoustic`` pseudo-boundaries for
the CIF weights), ``model``. Branch and segmenter classes are built with their ``from_config``,
which turns the YAML options into parts (blocks, projections, CIF parts). Training data: ``speech`` (sound) and ``image_feats`` (npy, frozen CLIP
image embeddings written by stage 3).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Callable, Collection, Dict, List, Optional, Tuple

import numpy as np
import yaml
import torch
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
from espnet2.asr.encoder.transformer_encoder import TransformerEncoder
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from espnet2.asr.specaug.abs_specaug import AbsSpecAug
from espnet2.asr.specaug.specaug import SpecAug
from espnet2.tasks.abs_task import AbsTask
from espnet2.train.abs_espnet_model import AbsESPnetModel
from espnet2.train.class_choices import ClassChoices
from espnet2.train.collate_fn import CommonCollateFn
from espnet2.utils.nested_dict_action import NestedDictAction
from espnet2.utils.types import int_or_none, str_or_none
from typeguard import typechecked

from espnet_speechclip.boundary_prior import AcousticBoundaryPrior
from espnet_speechclip.branches.abs_branch import AbsBranch, AbsSegmenter
from espnet_speechclip.branches.cascaded import CascadedBranch
from espnet_speechclip.branches.parallel import ParallelBranch, SharedTokenParallel
from espnet_speechclip.branches.segmenters import CIFSegmenter, CLSKeywordSegmenter, SharedTokenKeywords
from espnet_speechclip.branches.shared import SharedCLSBlock
from espnet_speechclip.clip_adapter import FrozenCLIP
from espnet_speechclip.espnet_model import ESPnetSpeechCLIPModel
from espnet_speechclip.preprocessor import SpeechCLIPPreprocessor
from espnet_speechclip.trainer import SpeechCLIPTrainer
from espnet_speechclip.reference_upstream import ReferenceHuBERTUpstream
from espnet_speechclip.upstream import S3PRLWeightedSumUpstream
from espnet_speechclip.vq_bridge import VQBridge, build_keyword_norm

logger = logging.getLogger(__name__)

upstream_choices = ClassChoices("upstream", classes=dict(s3prl=S3PRLWeightedSumUpstream,
                                                        reference_hubert=ReferenceHuBERTUpstream),
                                type_check=AbsFrontend, default="s3prl")
specaug_choices = ClassChoices("specaug", classes=dict(specaug=SpecAug), type_check=AbsSpecAug, default=None,
                               optional=True)
encoder_choices = ClassChoices("encoder", classes=dict(transformer=TransformerEncoder, conformer=ConformerEncoder),
                               type_check=AbsEncoder, default=None, optional=True)
shared_block_choices = ClassChoices("shared_block", classes=dict(cls_attention=SharedCLSBlock),
                                    type_check=SharedCLSBlock, default=None, optional=True)
parallel_choices = ClassChoices("parallel", classes=dict(parallel=ParallelBranch, shared_cls=SharedTokenParallel),
                                type_check=AbsBranch, default=None, optional=True)
segmenter_choices = ClassChoices("segmenter", classes=dict(cls=CLSKeywordSegmenter, shared_cls=SharedTokenKeywords,
                                                           cif=CIFSegmenter),
                                 type_check=AbsSegmenter, default=None, optional=True)
boundary_prior_choices = ClassChoices("boundary_prior", classes=dict(acoustic=AcousticBoundaryPrior),
                                      type_check=AcousticBoundaryPrior, default=None, optional=True)
model_choices = ClassChoices("model", classes=dict(speechclip=ESPnetSpeechCLIPModel),
                             type_check=AbsESPnetModel, default="speechclip")


def read_vocab(path: str) -> torch.Tensor:
    """The reduced CLIP vocabulary: one CLIP token id per line (stage 3 writes it from train captions)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"reduced CLIP vocabulary not found: {path} (stage 3 writes it)")
    ids = [int(line.split()[0]) for line in Path(path).read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"{path}: empty vocabulary")
    return torch.tensor(ids, dtype=torch.long)


class SpeechCLIPTask(AbsTask):
    num_optimizers: int = 1
    class_choices_list = [upstream_choices, specaug_choices, encoder_choices, shared_block_choices, parallel_choices,
                          segmenter_choices, boundary_prior_choices, model_choices]
    trainer = SpeechCLIPTrainer

    @classmethod
    def add_task_arguments(cls, parser: argparse.ArgumentParser):
        group = parser.add_argument_group("Task related")
        group.add_argument("--clip_conf", action=NestedDictAction, default=dict(),
                           help="FrozenCLIP arguments: model_name, pretrained (tag or local .pt), model_config")
        group.add_argument("--clip_vocab", type=str_or_none, default=None,
                           help="Reduced CLIP vocabulary (one token id per line), needed by cascaded models")
        group.add_argument("--vq_conf", action=NestedDictAction, default=dict(),
                           help="VQBridge arguments: temperature, init_batchnorm_from_table, keyword_norm "
                                "(masked | padded | per_keyword)")
        group = parser.add_argument_group("Preprocess related")
        group.add_argument("--max_train_samples", type=int_or_none, default=102400,
                           help="Random crop of training audio (SpeechCLIP: 102400 samples)")
        group.add_argument("--min_samples", type=int, default=400,
                           help="Shorter audio is an error (one HuBERT frame needs 400 samples)")
        group.add_argument("--data_aug_effects", type=yaml.safe_load, default=None,
                           help="ESPnet DataAugmentation effects applied to training audio, e.g. "
                                "[[1.0, speed_perturb, {factor: 0.9}], [1.0, speed_perturb, {factor: 1.1}]]")
        group.add_argument("--data_aug_num", type=int, nargs=2, default=[1, 1],
                           help="Range of the number of effects applied to one utterance")
        group.add_argument("--data_aug_prob", type=float, default=0.0,
                           help="Probability that an effect is applied to a training utterance")
        for class_choices in cls.class_choices_list:
            class_choices.add_arguments(group)

    @classmethod
    @typechecked
    def build_collate_fn(cls, args: argparse.Namespace, train: bool) -> Callable[
        [Collection[Tuple[str, Dict[str, np.ndarray]]]], Tuple[List[str], Dict[str, torch.Tensor]]
    ]:
        return CommonCollateFn(float_pad_value=0.0, int_pad_value=-1, not_sequence=["image_feats"])

    @classmethod
    @typechecked
    def build_preprocess_fn(cls, args: argparse.Namespace, train: bool
                            ) -> Optional[Callable[[str, Dict[str, np.ndarray]], Dict[str, np.ndarray]]]:
        return SpeechCLIPPreprocessor(train=train, max_train_samples=args.max_train_samples,
                                      min_samples=args.min_samples, seed=args.seed,
                                      data_aug_effects=args.data_aug_effects, data_aug_num=args.data_aug_num,
                                      data_aug_prob=args.data_aug_prob)

    @classmethod
    def required_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        return ("speech",) if inference else ("speech", "image_feats")

    @classmethod
    def optional_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        return ()

    @classmethod
    @typechecked
    def build_model(cls, args: argparse.Namespace) -> ESPnetSpeechCLIPModel:
        # 1. Frozen speech upstream with its weighted layer sum.
        upstream = upstream_choices.get_class(args.upstream)(**args.upstream_conf)
        frame_size = upstream_size = upstream.output_size()

        # 2. Optional SpecAugment on the upstream frames (training only) and trainable encoder.
        specaug = None
        if args.specaug is not None:
            specaug = specaug_choices.get_class(args.specaug)(**args.specaug_conf)
        encoder = None
        if args.encoder is not None:
            encoder = encoder_choices.get_class(args.encoder)(input_size=frame_size, **args.encoder_conf)
            frame_size = encoder.output_size()

        # 3. Frozen CLIP: its joint width sizes the branches, its token table feeds the VQ bridge.
        clip = FrozenCLIP(**args.clip_conf)

        # 4. Optional attention block shared by both branches (SpeechCLIP+ Hybrid / Hybrid+).
        shared_block = None
        if getattr(args, "shared_block", None) is not None:  # absent from configs written before the slot
            shared_block = shared_block_choices.get_class(args.shared_block).from_config(
                input_size=frame_size, **args.shared_block_conf)

        # 5. Parallel branch.
        parallel = None
        if args.parallel is not None:
            parallel = parallel_choices.get_class(args.parallel).from_config(
                input_size=frame_size, embed_dim=clip.embed_dim, **args.parallel_conf)

        # 6. Cascaded branch: segmenter -> keyword BatchNorm + VQ onto the reduced vocabulary -> CLIP text.
        cascaded = None
        if args.segmenter is not None:
            if args.clip_vocab is None:
                raise ValueError("cascaded models need --clip_vocab (the reduced CLIP vocabulary of stage 3)")
            segmenter_class = segmenter_choices.get_class(args.segmenter)
            sizes = {"upstream_size": upstream_size} if segmenter_class is CIFSegmenter else {}
            segmenter = segmenter_class.from_config(input_size=frame_size, token_width=clip.token_width, **sizes,
                                                    **args.segmenter_conf)
            vocab = read_vocab(args.clip_vocab)
            table = clip.token_table(vocab)
            vq_conf = dict(args.vq_conf)
            norm = build_keyword_norm(vq_conf.pop("keyword_norm", "masked"), table, segmenter.num_keywords,
                                      vq_conf.pop("init_batchnorm_from_table", True))
            bridge = VQBridge(table, vocab, norm, masked_ids=(clip.pad_id, clip.sot_id, clip.eot_id), **vq_conf)
            cascaded = CascadedBranch(segmenter, bridge, clip)

        # 7. Optional pseudo-boundary loss on the CIF weights (not in the papers), then the model.
        boundary_prior = None
        if args.boundary_prior is not None:
            if cascaded is None or not cascaded.segmenter.has_cif_weights:
                raise ValueError(f"boundary_prior: {args.boundary_prior} trains CIF weights, but segmenter is "
                                 f"{args.segmenter!r}; use segmenter: cif")
            boundary_prior = boundary_prior_choices.get_class(args.boundary_prior)(**args.boundary_prior_conf)
        return model_choices.get_class(args.model)(upstream=upstream, specaug=specaug, encoder=encoder,
                                                   parallel=parallel, cascaded=cascaded,
                                                   boundary_prior=boundary_prior, shared_block=shared_block,
                                                   **args.model_conf)
