"""Run s3prl's own ``run_downstream.py`` with the SpeechCLIP upstreams registered.

s3prl 0.4.18 (its last release) needs three things today's pinned stack no longer has; they are
supplied here, before ``s3prl.run_downstream`` is imported, and nothing else of s3prl is touched:
- ``huggingface_hub.HfFolder`` / ``Repository`` (removed in huggingface_hub 1.0): imported at module
  level by run_downstream.py and downstream/runner.py, used only for ``--hub huggingface`` and
  ``--push_to_hf_hub``; stand-ins that raise if those options are used.
- ``catalyst.data.sampler.DistributedSamplerWrapper``: imported by the speech_commands expert, used
  only in distributed training; catalyst 22.x cannot be installed by pip >= 24.1 (bad metadata), so
  a stand-in raises if a distributed run needs it.
- ``torch.load`` defaults to ``weights_only=True`` since torch 2.6; s3prl's checkpoints hold the
  run's ``argparse.Namespace``, which is added to torch's safe globals.
"""
from __future__ import annotations

import argparse
import sys
import types
from typing import List


class _Unavailable:
    what = ""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{self.what} is not available with this plugin's pinned packages")


def apply_runner_shims() -> None:
    import huggingface_hub
    import torch

    for name in ("HfFolder", "Repository"):
        if not hasattr(huggingface_hub, name):
            setattr(huggingface_hub, name, type(name, (_Unavailable,), {"what": f"huggingface_hub.{name} "
                                                                          "(--hub huggingface / --push_to_hf_hub)"}))
    try:
        import catalyst.data.sampler  # noqa: F401
    except ImportError:
        modules = {name: types.ModuleType(name) for name in ("catalyst", "catalyst.data", "catalyst.data.sampler")}
        modules["catalyst.data.sampler"].DistributedSamplerWrapper = type(
            "DistributedSamplerWrapper", (_Unavailable,), {"what": "distributed s3prl downstream training (catalyst)"})
        for name, module in modules.items():
            sys.modules.setdefault(name, module)
    torch.serialization.add_safe_globals([argparse.Namespace])


def run_downstream(argv: List[str]) -> None:
    """``python s3prl/run_downstream.py <argv>`` in this process, with the SpeechCLIP upstreams registered."""
    from espnet_speechclip.s3prl_upstream import register

    register()
    apply_runner_shims()
    from s3prl import run_downstream as s3prl_run_downstream

    saved = sys.argv
    sys.argv = ["run_downstream.py"] + list(argv)
    try:
        s3prl_run_downstream.main()
    finally:
        sys.argv = saved


def main() -> None:
    """Console command ``speechclip-s3prl-downstream``: s3prl's run_downstream.py options, unchanged.

    Example:
        speechclip-s3prl-downstream -m train -u speechclip_local -k exp/x/packed_model.zip \\
            -d speech_commands -c conf.yaml -p exp/x/probe --device cpu
    """
    run_downstream(sys.argv[1:])


if __name__ == "__main__":
    main()
