"""Stage 2 robustness beyond the audio cases of test_audio_format: images, ids, transcripts, paths.

Each bad item is reported by id with its reason in problems.txt, repaired (noted) or dropped, and
the rest of the split goes on; only an empty split or too large a dropped share fails.
"""
import logging

import numpy as np
import pytest
import soundfile
from espnet2.fileio.sound_scp import SoundScpReader
from PIL import Image

from espnet_speechclip.bin import format_audio
from espnet_speechclip.clip_features import load_rgb
from espnet_speechclip.data.audio_format import format_data_dir
from espnet_speechclip.data.kaldi_dir import read_kaldi_map, validate_data_dir


def tone(seconds=0.5, rate=16000):
    return (0.3 * np.sin(2 * np.pi * 300 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def problems_of(dump):
    out = {}
    for line in (dump / "problems.txt").read_text(encoding="utf-8").splitlines():
        key, action, reason = line.split("\t")
        out.setdefault(key, []).append((action, reason))
    return out


@pytest.fixture
def messy(tmp_path):
    """One split with one of each problem; ``good_*`` utterances are clean."""
    media = tmp_path / "my corpus"  # a path with a space: must survive as one wav.scp value
    media.mkdir()
    for name in ("good_a", "good_b", "good_c", "dup_same", "dup_diff", "to_unknown", "accents", "cjk", "empty_text",
                 "no_text", "no_spk", "tabbed", "gray", "cmyk", "rgba", "pal", "trunc", "corrupt", "noimg",
                 "nan"):
        soundfile.write(media / f"{name}.wav", tone(), 16000)
    wav = tone()
    wav[10:20] = np.nan
    soundfile.write(media / "nan.wav", wav, 16000, subtype="FLOAT")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(media / "ok.png")
    Image.fromarray(rgb[..., 0]).save(media / "gray.png")
    Image.fromarray(rgb).convert("CMYK").save(media / "cmyk.jpg")
    Image.fromarray(np.dstack([rgb, np.full((16, 16), 0, np.uint8)])).save(media / "rgba.png")  # transparent
    Image.fromarray(rgb).convert("P").save(media / "pal.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(media / "full.jpg", quality=95)
    (media / "trunc.jpg").write_bytes((media / "full.jpg").read_bytes()[:2000])
    (media / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a png" * 20)

    images = {"ok": "ok.png", "im_gray": "gray.png", "im_cmyk": "cmyk.jpg", "im_rgba": "rgba.png", "im_pal": "pal.png",
              "im_trunc": "trunc.jpg", "im_corrupt": "corrupt.png", "im_noimg": "missing.png"}
    utt2img = {u: "ok" for u in ("good_a", "good_b", "good_c", "dup_same", "dup_diff", "accents", "cjk",
                                 "empty_text", "no_text", "no_spk", "tabbed", "nan")}
    utt2img.update({u: f"im_{u}" for u in ("gray", "cmyk", "rgba", "pal", "trunc", "corrupt", "noimg")},
                   to_unknown="nowhere")
    text = {u: "a red circle" for u in utt2img}
    text.update(accents="a café’s red circle", cjk="a red 圆 circle", empty_text="   ")
    del text["no_text"]
    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    wav_lines = [f"{u} {media / (u + '.wav')}" for u in sorted(utt2img) if u != "tabbed"]
    wav_lines += [f"tabbed\t{media / 'tabbed.wav'}", f"dup_same {media / 'dup_same.wav'}",
                  f"dup_diff {media / 'good_a.wav'}"]
    (data / "wav.scp").write_text("\n".join(wav_lines) + "\n")
    (data / "text").write_text("".join(f"{u} {t}\n" for u, t in sorted(text.items())) + "orphan a blue star\n",
                               encoding="utf-8")
    (data / "utt2img").write_text("".join(f"{u} {i}\n" for u, i in sorted(utt2img.items())))
    (data / "utt2spk").write_text("".join(f"{u} spk1\n" for u in sorted(utt2img) if u != "no_spk"))
    (data / "img.scp").write_text("".join(f"{i} {media / p}\n" for i, p in sorted(images.items())))
    return data


def test_every_problem_is_reported_by_id_and_the_rest_goes_on(messy, tmp_path):
    dump = tmp_path / "dump" / "train"
    counts = format_data_dir(str(messy), str(dump), max_drop_share=0.5)
    problems = problems_of(dump)
    dropped = {k: r[0][1] for k, r in problems.items() if r[0][0] == "dropped"}
    expected_drops = {"dup_diff": "duplicated id: wav.scp lines", "to_unknown": "utt2img points to image 'nowhere'",
                      "cjk": "transcript has non-ASCII characters that do not fold", "empty_text": "empty transcript",
                      "no_text": "no transcript in text", "trunc": "unusable image: im_trunc: unreadable image",
                      "corrupt": "unusable image: im_corrupt: unreadable image",
                      "noimg": "unusable image: im_noimg: missing image", "nan": "non-finite samples"}
    assert sorted(dropped) == sorted(expected_drops)
    for utt, start in expected_drops.items():
        assert dropped[utt].startswith(start), (utt, dropped[utt])
    assert "truncated" in dropped["trunc"]
    for image in ("im_trunc", "im_corrupt", "im_noimg"):  # the image itself is reported too
        assert problems[image][0][0] == "ignored"
    assert problems["dup_same"] == [("repaired", "duplicated id: wav.scp lines 6, 21 are identical; kept one")]
    assert problems["accents"] == [("repaired", "transcript folded to ASCII: 'a café’s red circle' -> "
                                                "\"a cafe's red circle\"")]
    assert problems["no_spk"][0][0] == "repaired" and "own speaker" in problems["no_spk"][0][1]
    assert problems["orphan"] == [("ignored", "text: no wav.scp entry")]
    for image, mode in (("im_gray", "L"), ("im_cmyk", "CMYK"), ("im_rgba", "RGBA"), ("im_pal", "P")):
        assert problems[image] == [("repaired", f"image: converted {mode} to RGB")]
    assert counts == {"kept": 11, "dropped": 9, "repaired": 7}

    # What is kept is a valid data dir whose images all load as RGB, converted ones included.
    validate_data_dir(dump)
    img_scp = read_kaldi_map(dump / "img.scp")
    assert sorted(img_scp) == ["im_cmyk", "im_gray", "im_pal", "im_rgba", "ok"]
    for image, path in img_scp.items():
        with Image.open(path) as img:
            assert img.mode == "RGB" and img.size == (16, 16)
        load_rgb(image, path)  # stage 3's loader
    assert "/images/" in img_scp["im_gray"] and "my corpus" in img_scp["ok"]  # repaired copy vs in place
    with Image.open(img_scp["im_rgba"]) as img:  # fully transparent -> white, not black
        assert np.asarray(img).min() == 255
    assert read_kaldi_map(dump / "text")["accents"] == "a cafe's red circle"
    assert read_kaldi_map(dump / "utt2spk")["no_spk"] == "no_spk"
    # Paths with spaces and a tab-separated line reach ESPnet's own reader intact (stage 4).
    reader = SoundScpReader(str(dump / "wav.scp"))
    assert "my corpus" in read_kaldi_map(dump / "wav.scp")["good_a"]
    for utt in ("good_a", "tabbed", "dup_same"):
        rate, audio = reader[utt]
        assert rate == 16000 and len(audio) == 8000


def test_drop_share_is_configurable_and_reported_after_writing(messy, tmp_path, caplog):
    dump = tmp_path / "dump"
    caplog.set_level(logging.INFO)
    with pytest.raises(RuntimeError, match=r"9 of 20 utterances dropped, more than 40% \(--max_drop_share\)"):
        format_data_dir(str(messy), str(dump), max_drop_share=0.4)
    assert len(problems_of(dump)) > 9  # the report is complete although the stage failed
    assert "9 dropped" in caplog.text and "dropped for unusable image: 3" in caplog.text


def test_a_split_that_becomes_empty_fails(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"u1 {tmp_path / 'missing.wav'}\n")
    (data / "utt2img").write_text("u1 img\n")
    (data / "img.scp").write_text(f"img {tmp_path / 'x.png'}\n")
    with pytest.raises(RuntimeError, match="every utterance was dropped"):
        format_audio.main(["--data_dir", str(data), "--out_dir", str(tmp_path / "dump"), "--max_drop_share", "1"])
    assert problems_of(tmp_path / "dump")["u1"][0][1].startswith("unusable image: img: missing image")


def test_kaldi_pipe_is_decoded_and_a_failing_pipe_is_reported(tmp_path):
    soundfile.write(tmp_path / "a.wav", tone(), 16000)
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "i.png")
    (data / "wav.scp").write_text(f"p1 cat '{tmp_path / 'a.wav'}' |\np2 false |\n")
    (data / "utt2img").write_text("p1 i\np2 i\n")
    (data / "img.scp").write_text(f"i {tmp_path / 'i.png'}\n")
    format_data_dir(str(data), str(tmp_path / "dump"), max_drop_share=0.5)
    problems = problems_of(tmp_path / "dump")
    assert problems["p1"] == [("repaired", "decoded from a pipe command")]
    assert problems["p2"][0][1].startswith("pipe command failed (exit 1)")
    rate, audio = SoundScpReader(str(tmp_path / "dump" / "wav.scp"))["p1"]
    assert rate == 16000 and len(audio) == 8000
