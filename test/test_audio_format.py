"""Stage 2: every bad utterance is reported by id with its reason; repairable ones are repaired."""
import numpy as np
import pytest
import soundfile
from PIL import Image

from espnet_speechclip.data.audio_format import format_data_dir
from espnet_speechclip.data.kaldi_dir import read_kaldi_map


def tone(seconds, rate=16000, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    wav = 0.3 * np.sin(2 * np.pi * 300 * t)
    return np.stack([wav] * channels, axis=1) if channels > 1 else wav


def make_dir(tmp_path):
    wavs = tmp_path / "wavs dir"  # a path with a space
    wavs.mkdir()
    soundfile.write(wavs / "good.wav", tone(1.0), 16000)
    soundfile.write(wavs / "rate8k.wav", tone(1.0, 8000), 8000)
    soundfile.write(wavs / "stereo.wav", tone(1.0, channels=2), 16000)
    soundfile.write(wavs / "silent.wav", np.zeros(16000), 16000)
    soundfile.write(wavs / "short.wav", tone(0.05), 16000)
    (wavs / "empty.wav").write_bytes(b"")
    (wavs / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    utts = {"u_good": "good", "u_rate": "rate8k", "u_stereo": "stereo", "u_silent": "silent", "u_short": "short",
            "u_empty": "empty", "u_corrupt": "corrupt", "u_missing": "missing"}
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text("".join(f"{u} {wavs / (n + '.wav')}\n" for u, n in sorted(utts.items())))
    (data / "text").write_text("".join(f"{u} a red star\n" for u in sorted(utts)))
    (data / "utt2spk").write_text("".join(f"{u} spk\n" for u in sorted(utts)))
    (data / "utt2img").write_text("".join(f"{u} img0\n" for u in sorted(utts)))
    Image.new("RGB", (8, 8), (200, 10, 10)).save(wavs / "img0.png")
    (data / "img.scp").write_text(f"img0 {wavs / 'img0.png'}\n")
    return data


def test_problems_reported_repaired_or_dropped(tmp_path):
    data = make_dir(tmp_path)
    counts = format_data_dir(str(data), str(tmp_path / "dump"), max_drop_share=0.9)
    assert counts == {"kept": 3, "dropped": 5, "repaired": 2}
    problems = {}
    for line in (tmp_path / "dump" / "problems.txt").read_text().splitlines():
        utt, action, reason = line.split("\t")
        problems.setdefault(utt, []).append((action, reason))
    assert problems["u_rate"] == [("repaired", "resampled 8000 Hz -> 16000 Hz")]
    assert problems["u_stereo"] == [("repaired", "down-mixed 2 channels")]
    assert problems["u_silent"][0][1].startswith("silent")
    assert problems["u_short"][0][1].startswith("too short")
    assert problems["u_empty"][0][1].startswith("zero-byte wav")
    assert problems["u_corrupt"][0][1].startswith("unreadable wav")
    assert problems["u_missing"][0][1].startswith("missing wav")
    scp = read_kaldi_map(tmp_path / "dump" / "wav.scp")
    assert sorted(scp) == ["u_good", "u_rate", "u_stereo"]
    assert "wavs dir" in scp["u_good"]  # kept in place, spaces and all
    wav, rate = soundfile.read(scp["u_rate"])
    assert rate == 16000 and wav.ndim == 1 and abs(len(wav) - 16000) <= 1
    assert read_kaldi_map(tmp_path / "dump" / "speech_shape")["u_stereo"] == "16000"
    assert sorted(read_kaldi_map(tmp_path / "dump" / "text")) == sorted(scp)
    assert read_kaldi_map(tmp_path / "dump" / "spk2utt")["spk"] == "u_good u_rate u_stereo"


def test_too_many_dropped_fails_after_writing_the_report(tmp_path):
    data = make_dir(tmp_path)
    with pytest.raises(RuntimeError, match="5 of 8 utterances dropped"):
        format_data_dir(str(data), str(tmp_path / "dump"), max_drop_share=0.5)
    assert len((tmp_path / "dump" / "problems.txt").read_text().splitlines()) == 7
