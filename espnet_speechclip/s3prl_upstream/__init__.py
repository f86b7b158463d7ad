"""SpeechCLIP as an s3prl upstream: ``register()`` adds ``speechclip_local`` and
``speechclip_upstream_local`` to ``s3prl.hub``, where ``S3PRLUpstream(name, path_or_url=...)``,
``s3prl.hub.<name>(ckpt=...)`` and s3prl's ``run_downstream.py -u <name> -k <ckpt>`` look names up.

    >>> from espnet_speechclip.s3prl_upstream import register
    >>> register()
    >>> from s3prl.nn import S3PRLUpstream
    >>> upstream = S3PRLUpstream("speechclip_local", path_or_url="exp/speechclip_x/packed_model.zip")
"""
from __future__ import annotations

HUB_ENTRIES = ("speechclip_local", "speechclip_upstream_local")


def register():
    """Add the hub entries to ``s3prl.hub`` (idempotent); returns the hub module."""
    from espnet_speechclip.s3prl_compat import import_s3prl_hub
    from espnet_speechclip.s3prl_upstream import hubconf

    hub = import_s3prl_hub()
    for name in HUB_ENTRIES:
        setattr(hub, name, getattr(hubconf, name))
    return hub
