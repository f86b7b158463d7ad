"""The torchaudio shims that let s3prl 0.4.18 import and load audio with torchaudio >= 2.9."""
import subprocess
import sys

import numpy as np
import soundfile
import torch


def test_s3prl_hub_imports_only_with_the_shims():
    code = "import s3prl.hub"
    bare = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    shimmed = subprocess.run([sys.executable, "-c", "from espnet_speechclip import s3prl_compat; "
                              "s3prl_compat.apply(); " + code + "; print(len(s3prl.hub.options()) > 100)"],
                             capture_output=True, text=True)
    assert shimmed.returncode == 0, shimmed.stderr[-2000:]
    assert shimmed.stdout.strip().endswith("True")
    import torchaudio
    if not hasattr(torchaudio, "set_audio_backend"):  # the breakage this module exists for
        assert bare.returncode != 0 and "set_audio_backend" in bare.stderr


def test_shimmed_load_and_sox_effects(tmp_path):
    from espnet_speechclip import s3prl_compat

    s3prl_compat.apply()
    import torchaudio
    import torchaudio.sox_effects as sox_effects

    t = np.arange(8000) / 8000
    wav = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    soundfile.write(tmp_path / "a.wav", wav, 8000)
    loaded, rate = torchaudio.load(str(tmp_path / "a.wav"))
    assert rate == 8000 and loaded.shape == (1, 8000)
    np.testing.assert_allclose(loaded[0].numpy(), wav, atol=1e-4)
    out, rate = sox_effects.apply_effects_tensor(loaded, 8000, [["rate", "16000"], ["gain", "-6"]])
    assert rate == 16000 and abs(out.shape[1] - 16000) <= 2
    ratio = out.abs().max().item() / loaded.abs().max().item()
    assert 0.45 < ratio < 0.55  # -6 dB halves the amplitude
    out, rate = sox_effects.apply_effects_file(str(tmp_path / "a.wav"), [["channels", "1"]])
    assert rate == 8000 and torch.allclose(out, loaded, atol=1e-4)
