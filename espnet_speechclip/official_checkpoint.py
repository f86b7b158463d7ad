"""Reading a published SpeechCLIP / SpeechCLIP+ Lightning checkpoint without the reference code.

A PyTorch-Lightning 1.5 ``.ckpt`` is a torch zip archive holding ``state_dict`` (the reference
LightningModule's weights) and ``hyper_parameters`` = AttributeDict({"config": OrderedNamespace(...)})
pickled with the reference package's own classes. It is read with torch's weights-only unpickler:
tensors and plain containers, plus exactly two stand-in classes for those names. Any other class
in the file is refused (no arbitrary code runs), with the class named in the error.

(torch's own ``weights_only`` unpickler cannot be used as is: it allows no dict subclass, and
Lightning's AttributeDict is one. The restricted unpickler below allows what it allows, plus the
two stand-ins.)
"""
from __future__ import annotations

import pickle
import types
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

ORDERED_NAMESPACE = "avssl.base.ordered_namespace.OrderedNamespace"
ATTRIBUTE_DICT = "pytorch_lightning.utilities.parsing.AttributeDict"


class OrderedNamespaceState:
    """Stand-in for the reference ``OrderedNamespace``: only its pickled state (an OrderedDict of
    entries, nested namespaces included), restored as the reference's ``__setstate__`` does."""

    def __setstate__(self, state) -> None:
        self._odict = OrderedDict(state)


class AttributeDictState(dict):
    """Stand-in for Lightning's ``AttributeDict`` (a dict)."""


class InertTrainingObject:
    """Any object of the Lightning / wandb / numpy classes a reference run pickles alongside its
    config (base_task.py puts the WandbLogger object into ``config.trainer.logger``): kept as its
    pickled state, never constructed or run. Such names resolve to this class, so a REDUCE of them
    only builds an InertTrainingObject."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state) -> None:
        self.state = state


# Modules whose pickled objects in a reference checkpoint only describe training.
_INERT_PREFIXES = ("pytorch_lightning.", "wandb.", "numpy.")


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals torch's weights-only loader trusts, the two stand-ins, and inert
    placeholders for the training-only objects (``InertTrainingObject``)."""

    def find_class(self, module: str, name: str):
        import _compat_pickle

        from torch._weights_only_unpickler import _get_allowed_globals

        # torch pickles with protocol 2, which writes Python 2 module names: map them back as pickle does
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f"{module}.{name}"
        stand_ins = {ORDERED_NAMESPACE: OrderedNamespaceState, ATTRIBUTE_DICT: AttributeDictState}
        if full in stand_ins:
            return stand_ins[full]
        allowed = _get_allowed_globals()
        if full in allowed:
            return allowed[full]
        if module.startswith("torch") and name.endswith("Storage"):  # storage types named in the archive
            return super().find_class(module, name)
        if full.startswith(_INERT_PREFIXES):
            return InertTrainingObject
        raise pickle.UnpicklingError(f"GLOBAL {full} is not allowed")


_RESTRICTED_PICKLE = types.SimpleNamespace(Unpickler=RestrictedUnpickler, load=pickle.load, __name__="restricted")


def to_plain(value: Any) -> Any:
    """Namespaces and AttributeDicts -> plain dicts, recursively."""
    if isinstance(value, OrderedNamespaceState):
        return {k: to_plain(v) for k, v in value._odict.items()}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v) for v in value)
    return value


def load_lightning_checkpoint(path: str) -> Tuple[Dict[str, torch.Tensor], Dict]:
    """``.ckpt`` -> (state_dict, reference config tree as plain dicts). Tensors are memory-mapped
    (a large checkpoint is not read into memory at once). Errors name the file and the problem."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint (the published ones are listed in README, "
                                f"'Published models')")
    if not zipfile.is_zipfile(file):
        raise ValueError(f"{path}: not a PyTorch checkpoint (a torch zip archive); truncated download or another "
                         f"file type")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=False, mmap=True,
                                pickle_module=_RESTRICTED_PICKLE)
    except RuntimeError as err:  # torch reports a truncated or corrupt archive as RuntimeError
        raise ValueError(f"{path}: cannot be read as a checkpoint ({str(err).splitlines()[0]}); truncated "
                         f"download?") from err
    except pickle.UnpicklingError as err:  # a class outside the allowlist
        message = str(err)
        refused = message.split("GLOBAL ")[1].split()[0] if "GLOBAL " in message else type(err).__name__
        raise ValueError(f"{path}: holds {refused}, which is neither a tensor nor the reference's hyperparameter "
                         f"classes; refusing to run code from it (is it a SpeechCLIP Lightning checkpoint?)") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path}: not a Lightning checkpoint (no 'state_dict'; top-level keys "
                         f"{sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__})")
    hyper = to_plain(checkpoint.get("hyper_parameters") or {})
    config = hyper.get("config")
    if not isinstance(config, dict) or "model_settings" not in config:
        raise ValueError(f"{path}: a Lightning checkpoint, but not of a SpeechCLIP model (hyper_parameters has no "
                         f"config.model_settings; keys {sorted(hyper)})")
    return dict(checkpoint["state_dict"]), config
