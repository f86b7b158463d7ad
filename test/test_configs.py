"""Shipped YAML configs: every key is one the task or the chosen class accepts."""
import inspect
from pathlib import Path

import pytest
import yaml

from espnet_speechclip.clip_adapter import FrozenCLIP
from espnet_speechclip.tasks.speechclip import SpeechCLIPTask
from espnet_speechclip.branches.blocks import BLOCKS
from espnet_speechclip.vq_bridge import VQBridge

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in ROOT.glob("egs2/*/speechclip1/conf/**/*.yaml") if p.name.startswith("train"))


def accepted(cls):
    """Options a class takes from YAML: its ``from_config`` (parts-based classes) or constructor;
    a ``**block_conf`` catch-all takes the options of the registered blocks."""
    signature = inspect.signature(getattr(cls, "from_config", cls.__init__))
    names = set(signature.parameters)
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        names |= set().union(*(inspect.signature(b.__init__).parameters for b in BLOCKS.values()))
    return names - {"self", "cls", "input_size", "token_width", "embed_dim", "table", "token_ids", "masked_ids",
                    "upstream_size", "norm"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_keys_are_known(path):
    config = yaml.safe_load(path.read_text())
    parser = SpeechCLIPTask.get_parser()
    known = {a.dest for a in parser._actions}
    assert not set(config) - known, f"{path}: unknown keys {set(config) - known}"
    choices = {c.name: c for c in SpeechCLIPTask.class_choices_list}
    for slot, chooser in choices.items():
        choice = config.get(slot, parser.get_default(slot))
        conf = config.get(f"{slot}_conf", {})
        if choice is None:
            assert not conf, f"{path}: {slot}_conf given but no {slot}"
            continue
        cls = chooser.get_class(choice)
        unknown = set(conf) - accepted(cls)
        assert not unknown, f"{path}: {slot}_conf has unknown keys {unknown}"
    assert not set(config.get("clip_conf", {})) - accepted(FrozenCLIP)
    # keyword_norm and init_batchnorm_from_table choose the bridge's BatchNorm (build_keyword_norm).
    assert not set(config.get("vq_conf", {})) - accepted(VQBridge) - {"keyword_norm", "init_batchnorm_from_table"}


def test_there_are_ten_paper_configs():
    names = {p.stem for p in CONFIGS}
    for variant in ("parallel", "cascaded", "cascaded_plus", "hybrid", "hybrid_plus"):
        for size in ("base", "large"):
            assert f"train_{variant}_{size}" in names
