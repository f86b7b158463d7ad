"""Hand-run parity check: ReferenceHuBERTUpstream against the SpeechCLIP+ reference's own HuBERT forward.

Usage (a checkout, or a bare git mirror whose HEAD is read):

    tools/venv/bin/python tools/official_parity/upstream.py /path/to/SpeechCLIP_plus

Imports ``customFunc_hubert_forward``, ``custom_FairseqTransformerEncoder_extract_features`` and
``FairseqSpeechEncoder_Hubert`` from the reference's ``avssl/module/speech_encoder_plus.py`` (loaded by
file, not through ``avssl/__init__``, which needs pytorch-lightning). fairseq is not installable here, so
before that import its HuBERT modules are stubbed with s3prl's port (``HubertModel``,
``TransformerEncoder``, ``index_put``), the code the reference runs on. The reference functions are bound
by the reference's own ``apply_customHubertForward`` and its ``forward`` runs on a padded batch of three
utterances; ``ReferenceHuBERTUpstream`` runs on the same weights. Never imported by the package or tests.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import torch

from espnet_speechclip.reference_upstream import ReferenceHuBERTUpstream
from espnet_speechclip.s3prl_compat import import_s3prl_hub
from espnet_speechclip.upstream import write_random_hubert_checkpoint

logger = logging.getLogger(__name__)

_TINY = {"encoder_layers": 3, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 2,
         "conv_feature_layers": "[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2", "final_dim": 16,
         "conv_pos": 8, "conv_pos_groups": 4}
# (name, HubertConfig overrides, normalize waveform, per-state LayerNorm)
CASES = [("base-shaped", {**_TINY, "layer_norm_first": False}, False, False),
         ("large-shaped", {**_TINY, "layer_norm_first": True, "extractor_mode": "layer_norm"}, True, True)]
LENGTHS = [16000, 11111, 7043]  # a padded batch of 3, none a multiple of 320
_FILES = ["avssl/module/speech_encoder_plus.py", "avssl/module/weighted_sum.py"]


def _reference_sources(official_repo: str, tmp: str) -> Dict[str, Path]:
    """The reference files from a checkout, or from HEAD of a bare git mirror (copied under tmp)."""
    root = Path(official_repo)
    if all((root / name).is_file() for name in _FILES):
        return {name: root / name for name in _FILES}
    out = {}
    for name in _FILES:
        text = subprocess.run(["git", "--git-dir", str(root), "show", f"HEAD:{name}"], check=True,
                              capture_output=True, text=True).stdout
        out[name] = Path(tmp) / name
        out[name].parent.mkdir(parents=True, exist_ok=True)
        out[name].write_text(text)
    return out


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    module.__path__ = []  # importable as a package, so `from .x import y` and `import a.b` resolve
    return module


def _not_used(*_args, **_kwargs):
    raise NotImplementedError("not on the reference's eval forward path; stubbed by the parity tool")


def _copy_func(f: types.FunctionType) -> types.FunctionType:
    """transformers' ``copy_func``: a new function object with f's code, globals and defaults."""
    return types.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__, f.__closure__)


@contextlib.contextmanager
def _stubbed_imports(sources: Dict[str, Path]) -> Iterator[types.ModuleType]:
    """sys.modules stubs for the reference module's imports; yields the loaded reference module."""
    import_s3prl_hub()
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel
    from s3prl.upstream.wav2vec2.wav2vec2_model import TransformerEncoder, index_put

    stubs = {"fairseq": _module("fairseq"), "fairseq.models": _module("fairseq.models"),
             "fairseq.models.hubert": _module("fairseq.models.hubert"),
             "fairseq.models.hubert.hubert": _module("fairseq.models.hubert.hubert", HubertConfig=HubertConfig,
                                                     HubertModel=HubertModel),
             "fairseq.models.wav2vec": _module("fairseq.models.wav2vec"),
             "fairseq.models.wav2vec.wav2vec2": _module("fairseq.models.wav2vec.wav2vec2",
                                                        TransformerEncoder=TransformerEncoder),
             "fairseq.utils": _module("fairseq.utils", index_put=index_put),
             "avssl": _module("avssl"), "avssl.module": _module("avssl.module"),
             "avssl.data": _module("avssl.data", random_crop_max_length=_not_used),
             "avssl.util": _module("avssl.util", freeze_model=_not_used, init_weights=_not_used)}
    for name, module in stubs.items():  # parents expose their children, as real packages do
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(stubs[parent], child, module)
    try:
        from s3prl.utility.download import _urls_to_filepaths  # noqa: F401
    except ImportError:
        stubs["s3prl.utility.download"] = _module("s3prl.utility.download", _urls_to_filepaths=_not_used)
    try:
        from transformers.file_utils import copy_func  # noqa: F401
    except ImportError:
        stubs["transformers.file_utils"] = _module("transformers.file_utils", copy_func=_copy_func)
    loaded = [name[:-3].replace("/", ".") for name in _FILES]
    saved = {name: sys.modules.get(name) for name in [*stubs, *loaded]}  # e.g. other parity tools' avssl
    sys.modules.update(stubs)
    try:
        for mod_name, name in reversed(list(zip(loaded, _FILES))):  # speech_encoder_plus imports weighted_sum
            spec = importlib.util.spec_from_file_location(mod_name, sources[name])
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
        yield sys.modules["avssl.module.speech_encoder_plus"]
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _perturbed_checkpoint(path: str, conf: Dict, seed: int) -> None:
    """A random tiny HuBERT whose LayerNorm/bias parameters are not at their 1/0 init either."""
    write_random_hubert_checkpoint(path, conf, seed=seed)
    ckpt = torch.load(path, map_location="cpu")
    gen = torch.Generator().manual_seed(seed)
    for key, value in ckpt["model_weight"].items():
        if value.is_floating_point():
            value.add_(0.1 * torch.randn(value.shape, generator=gen))
    torch.save(ckpt, path)


def reference_encoder(ref_module: types.ModuleType, hubert: torch.nn.Module, normalize: bool,
                      state_norm: bool) -> torch.nn.Module:
    """The reference's ``FairseqSpeechEncoder_Hubert`` around ``hubert`` (s3prl's port), in eval
    mode, its layer weights drawn at random. Its __init__ downloads a checkpoint, so the attributes
    its forward reads are set by hand."""
    cls = ref_module.FairseqSpeechEncoder_Hubert
    reference = cls.__new__(cls)
    torch.nn.Module.__init__(reference)
    reference.apply_customHubertForward()
    reference.encoder = hubert.eval().requires_grad_(False)
    reference.encoder_task = types.SimpleNamespace(cfg=types.SimpleNamespace(normalize=normalize))
    reference.downsample_rate = cls.MODEL_DOWNSAMPLE_RATE["hubert"]
    for name, value in dict(trainable=False, max_audio_len=-1, feat_select_idx="weighted_sum",
                            normalize_hiddenstates=state_norm, normalize_type="s3prl").items():
        setattr(reference, name, value)
    reference.weightedsum_layer = ref_module.WeightedSumLayer(len(hubert.encoder.layers) + 1, state_norm)
    torch.nn.init.normal_(reference.weightedsum_layer.weights)
    return reference.eval()


def _compare(ref_module: types.ModuleType, path: str, normalize: bool, state_norm: bool) -> List[float]:
    """maxabs differences [states, frame lengths, weighted sum] on one padded batch."""
    from s3prl.upstream.hubert.convert import load_converted_model

    hubert, _ = load_converted_model(path)
    reference = reference_encoder(ref_module, hubert, normalize, state_norm)

    ours = ReferenceHuBERTUpstream(path_or_url=path, normalize_waveform=normalize, layer_norm=state_norm).eval()
    with torch.no_grad():
        ours.weights.copy_(reference.weightedsum_layer.weights)
    gen = torch.Generator().manual_seed(1)
    speech = 0.2 * torch.randn(len(LENGTHS), max(LENGTHS), generator=gen) + 0.03
    lengths = torch.tensor(LENGTHS)
    with torch.no_grad():
        ref_sum, ref_len, ref_states = reference(speech, lengths, return_hidden_states=True)
        states, _ = ours.hidden_states(speech, lengths)
        feats, feat_len = ours(speech, lengths)
    if len(states) != len(ref_states):
        raise AssertionError(f"{len(states)} states vs the reference's {len(ref_states)}")
    return [max(float((a - b).abs().max()) for a, b in zip(states, ref_states)),
            float((feat_len - ref_len).abs().max()), float((feats - ref_sum).abs().max())]


def check_upstream(official_repo: str) -> List[Tuple[str, float]]:
    """[(name, maxabs difference)] for a base-shaped and a large-shaped tiny random HuBERT."""
    import_s3prl_hub()
    from s3prl.upstream.hubert.hubert_model import HubertModel
    from s3prl.upstream.wav2vec2.wav2vec2_model import TransformerEncoder

    results = []
    original = TransformerEncoder.extract_features
    with tempfile.TemporaryDirectory() as tmp, _stubbed_imports(_reference_sources(official_repo, tmp)) as ref:
        try:
            for seed, (case, conf, normalize, state_norm) in enumerate(CASES):
                path = os.path.join(tmp, f"{case}.pt")
                _perturbed_checkpoint(path, conf, seed)
                diffs = _compare(ref, path, normalize, state_norm)
                names = ["upstream states", "upstream frame lengths", "weighted sum"]
                results += [(f"{name} ({case})", diff) for name, diff in zip(names, diffs)]
        finally:  # the reference patches s3prl's classes globally
            TransformerEncoder.extract_features = original
            if hasattr(HubertModel, "customHubertForward"):
                del HubertModel.customHubertForward
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("official_repo", help="SpeechCLIP_plus checkout or bare git mirror")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = check_upstream(args.official_repo)
    for name, diff in results:
        logger.info("%-40s max |diff| = %.3g", name, diff)
    failed = [name for name, diff in results if not diff <= args.tolerance]
    if failed:
        logger.error("above tolerance %g: %s", args.tolerance, ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
