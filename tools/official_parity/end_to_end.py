"""Hand-run check of the checkpoint converter against the reference code, end to end.

For each variant (base shapes) a reference model is assembled from the reference modules with
random weights: HuBERT through the reference's own forward (``upstream.py``'s stubbed import), the
reference branch, a small CLIP with the published token width. It is saved in the Lightning
layout (``hyper_parameters`` = AttributeDict(config=OrderedNamespace(<the reference YAML>)), pickled
with the reference's own OrderedNamespace class), converted by ``espnet_speechclip.official_convert``,
loaded with ``SpeechCLIP.from_pretrained``, and both pipelines embed the same waveforms.
"""
from __future__ import annotations

import sys
import tempfile
import types
from pathlib import Path
from typing import List, Tuple

import torch
import torch.nn.functional as F
import yaml

from espnet_speechclip.upstream import write_random_hubert_checkpoint

BASE_HUBERT = {"encoder_layers": 2, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072,
               "encoder_attention_heads": 12, "final_dim": 256}
LENGTHS = [48000, 36111, 27043]


def _lightning_stand_in() -> type:
    """Lightning's AttributeDict under its real module path, for pickling the hyperparameters."""
    module = types.ModuleType("pytorch_lightning.utilities.parsing")

    class AttributeDict(dict):
        pass

    AttributeDict.__module__, AttributeDict.__qualname__ = module.__name__, "AttributeDict"
    module.AttributeDict = AttributeDict
    for name in ("pytorch_lightning", "pytorch_lightning.utilities"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules[module.__name__] = module
    return AttributeDict


def check_conversion(reference, upstream_module, variant: str, config_path: Path, clip_factory, tmp: Path
                     ) -> List[Tuple[str, float]]:
    from s3prl.upstream.hubert.convert import load_converted_model

    from espnet_speechclip.inference import SpeechCLIP
    from espnet_speechclip.official_convert import convert
    from official_parity.reference_modules import ReferenceClip, reduced_vocab
    from official_parity.upstream import reference_encoder

    config = yaml.safe_load(config_path.read_text())
    clip, clip_files = clip_factory(512, tmp)
    ids = reduced_vocab()
    ref_clip = ReferenceClip(clip, ids, reference.ClipModel)
    torch.manual_seed(0)
    branch = reference.build_branch(config, variant, 768, 512, ref_clip).eval()
    hubert_path = str(tmp / f"hubert_{variant}.pt")
    write_random_hubert_checkpoint(hubert_path, BASE_HUBERT, seed=3)
    hubert, _ = load_converted_model(hubert_path)
    encoder = reference_encoder(upstream_module, hubert, normalize=False, state_norm=False)

    prefix = "parallel_branch." if variant == "Parallel" else "cascaded_branch."
    state = {f"audio_encoder.encoder.{k}": v for k, v in hubert.state_dict().items()}
    state["audio_encoder.weightedsum_layer.weights"] = encoder.weightedsum_layer.weights.detach()
    state.update({prefix + k: v for k, v in branch.state_dict().items() if not k.startswith("clip.")})
    state["clip.model.token_embedding.weight"] = ref_clip.model.token_embedding.weight.detach()
    loss = reference.loss(config)
    if config["cl_loss"]["args"].get("temperature_trainable"):
        state["criterion.temperature"] = loss.temperature.detach()
    attribute_dict = _lightning_stand_in()
    # the reference's own class, as registered now (both repositories load one under this name)
    namespace = sys.modules["avssl.base.ordered_namespace"].OrderedNamespace
    ckpt = tmp / f"{variant}.ckpt"
    torch.save({"epoch": 1, "global_step": 10, "pytorch-lightning_version": "1.5.10", "state_dict": state,
                "hyper_parameters": attribute_dict(config=namespace(config))}, ckpt)
    out = convert(str(ckpt), str(tmp / f"exp_{variant}"), clip_pt=clip_files[0], clip_model_name=clip_files[2],
                  clip_model_config=clip_files[1])
    ours = SpeechCLIP.from_pretrained(str(out)).model.eval()

    gen = torch.Generator().manual_seed(5)
    waves = [0.1 * torch.randn(n, generator=gen) for n in LENGTHS]
    if config["data"]["dataset"].get("normalize_waveform", False):  # the reference dataset does it
        ref_waves = [F.layer_norm(w, w.shape) for w in waves]
    else:
        ref_waves = waves
    speech = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    lengths = torch.tensor(LENGTHS)
    with torch.no_grad():
        feats, feat_len = encoder(torch.nn.utils.rnn.pad_sequence(ref_waves, batch_first=True), lengths)
        ref_out = reference.run_branch(branch, variant, feats, feat_len)
        our_out = ours.encode_speech(speech, lengths)
    rows = []
    for name in ("parallel", "cascaded"):
        if f"{name}_audio_feat" in ref_out:
            diff = (ref_out[f"{name}_audio_feat"] - our_out[name]["embedding"]).abs().max()
            rows.append((f"converted {name} embedding from waveforms", float(diff)))
    if "token_rows" in ref_out:
        ours_ids = our_out["cascaded"]["keyword_indices"]
        n = our_out["cascaded"]["keyword_lengths"]
        valid = torch.arange(ours_ids.size(1))[None, :] < n[:, None]
        rows.append(("converted keyword count", float((n - ref_out["keyword_lengths"]).abs().max())))
        rows.append(("converted VQ token ids", float((ours_ids[valid] != ref_out["token_rows"][valid]).sum())))
    return rows
