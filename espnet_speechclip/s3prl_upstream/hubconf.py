"""s3prl hub entries (s3prl's hubconf convention: every public callable is an upstream name)."""
from espnet_speechclip.s3prl_upstream.expert import UpstreamExpert as _UpstreamExpert


def speechclip_local(ckpt: str, *args, **kwargs):
    """A trained SpeechCLIP model: upstream layers + speech encoder output.
    ckpt: packed zip (stage 6), exp dir, checkpoint with config.yaml beside it, or model-zoo tag."""
    kwargs.pop("bare", None)
    return _UpstreamExpert(ckpt, *args, **kwargs)


def speechclip_upstream_local(ckpt: str, *args, **kwargs):
    """The same model's speech upstream alone (frozen during training): the probing baseline."""
    kwargs.pop("bare", None)
    return _UpstreamExpert(ckpt, *args, bare=True, **kwargs)
