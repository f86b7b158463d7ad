"""SpokenShapes generation, its word alignments, and the Kaldi data-dir helpers."""
import ctypes
import ctypes.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from espnet_speechclip.data.kaldi_dir import (
    read_kaldi_map,
    read_word_align,
    validate_data_dir,
    write_kaldi_map,
)
from espnet_speechclip.data.espeak_tts import EspeakEvent, align_words, resample
from espnet_speechclip.data.spoken_shapes import (
    PAD_S,
    SMALL_SIZES,
    TEST_VARIANTS,
    TRAIN_VARIANTS,
    DEV_UNSEEN_VARIANTS,
    prepare_spoken_shapes,
    unknown_variants,
    sample_scene,
)

SPLITS = ("train", "dev", "test", "dev_unseen")
needs_espeak = pytest.mark.skipif(ctypes.util.find_library("espeak-ng") is None,
                                  reason="libespeak-ng1 not installed")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The small corpus, generated once: (corpus_dir, data_dir, counts)."""
    root = tmp_path_factory.mktemp("spoken_shapes")
    counts = prepare_spoken_shapes(root / "corpus", root / "data", **SMALL_SIZES, nj=2)
    return root / "corpus", root / "data", counts


def _maps(data_dir: Path, split: str, name: str) -> dict:
    return read_kaldi_map(data_dir / split / name)


def test_event_struct_matches_header():
    # speak_lib.h (API revision 12) on LP64: six 4-byte ints, a pointer, an 8-byte union.
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        pytest.skip("layout checked for 64-bit only")
    assert ctypes.sizeof(EspeakEvent) == 40
    assert EspeakEvent.text_position.offset == 8 and EspeakEvent.sample.offset == 20
    assert EspeakEvent.user_data.offset == 24 and EspeakEvent.id.offset == 32


def test_align_words_handles_espeak_quirks():
    text = "a star left of a cross"  # word starts at characters 1 3 8 13 16 18 (1-based)
    words = [(1, 0), (3, 100), (8, 300), (13, 500), (18, 800), (0, 990)]  # "a" merged, phantom
    phones = [("@", 500), ("v", 560), ("@", 640), ("k", 800), ("_:", 1000)]
    assert align_words(text, words, phones, voiced_end=1200) == [
        ("a", 0, 100), ("star", 100, 300), ("left", 300, 500), ("of", 500, 640),
        ("a", 640, 800), ("cross", 800, 1000)]  # last word ends at the pause phoneme
    assert align_words("a star", [(1, 0), (3, 100)], [], voiced_end=400)[-1] == ("star", 100, 400)
    with pytest.raises(ValueError, match="no word event for word 1 'star'"):
        align_words("a star", [(1, 0)], [], voiced_end=400)


@needs_espeak
def test_corpus_counts_and_formats(corpus):
    corpus_dir, data_dir, counts = corpus
    for split, key in zip(SPLITS, ("num_train", "num_dev", "num_test", "num_dev_unseen")):
        validate_data_dir(data_dir / split)
        img_scp, utt2img = _maps(data_dir, split, "img.scp"), _maps(data_dir, split, "utt2img")
        assert len(img_scp) == counts[split]["images"] == SMALL_SIZES[key]
        assert len(utt2img) == counts[split]["utterances"] == 2 * SMALL_SIZES[key]
        for utt, spk in _maps(data_dir, split, "utt2spk").items():
            assert utt.startswith(f"{spk}-{utt2img[utt]}_"), utt  # Kaldi: speaker-prefixed ids
        for img in list(img_scp.values())[:3]:
            assert Path(img).is_relative_to(corpus_dir / "images" / split)
            with Image.open(img) as im:
                assert im.size == (96, 96) and im.mode == "RGB"
        wav = next(iter(_maps(data_dir, split, "wav.scp").values()))
        info = soundfile.info(wav)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert Path(wav).is_absolute()


@needs_espeak
def test_test_speakers_never_in_train(corpus):
    _, data_dir, _ = corpus
    spk = {s: set(_maps(data_dir, s, "utt2spk").values()) for s in SPLITS}
    assert not spk["test"] & (spk["train"] | spk["dev"])
    # dev_unseen: the test condition for a dev split, voices in neither train nor test.
    assert not spk["dev_unseen"] & (spk["train"] | spk["dev"] | spk["test"])
    assert {s.split("_")[1] for s in spk["dev_unseen"]} <= set(DEV_UNSEEN_VARIANTS)
    # Not only new ids: test voices use variants (timbres) that train never uses.
    assert {s.split("_")[1] for s in spk["test"]} <= set(TEST_VARIANTS)
    assert {s.split("_")[1] for s in spk["train"]} <= set(TRAIN_VARIANTS)
    for split in SPLITS:  # two captions of one image come from two different speakers
        utt2img, utt2spk = _maps(data_dir, split, "utt2img"), _maps(data_dir, split, "utt2spk")
        pairs = {(utt2img[u], utt2spk[u]) for u in utt2img}
        assert len(pairs) == len(utt2img)


@needs_espeak
def test_every_voice_variant_is_one_espeak_knows():
    """espeak-ng falls back to its plain voice for an unknown variant name without an error, so a
    misspelt variant would silently shrink the voice inventory: each must sound different from
    the plain voice and from every other variant, and no two of train, test and dev_unseen may share one."""
    from espnet_speechclip.data.espeak_tts import synthesize

    inventories = (TRAIN_VARIANTS, TEST_VARIANTS, DEV_UNSEEN_VARIANTS)
    assert sum(map(len, inventories)) == len(set().union(*inventories))
    sounds = {}
    for variant in (None,) + TRAIN_VARIANTS + TEST_VARIANTS + DEV_UNSEEN_VARIANTS:
        audio, _ = synthesize("red star", "en" if variant is None else f"en+{variant}", 160, 50, 0)
        sounds.setdefault(audio.tobytes(), []).append(variant)
    assert [names for names in sounds.values() if len(names) > 1] == []


@needs_espeak
def test_an_unknown_voice_variant_stops_generation_before_any_synthesis(tmp_path, monkeypatch):
    import espnet_speechclip.data.spoken_shapes as spoken_shapes

    assert unknown_variants(["m1", "Mr", "no_such_voice", "f4"]) == ["Mr", "no_such_voice"]
    monkeypatch.setitem(spoken_shapes.SPLIT_SPEAKERS, "test", ("gb_m6", "us_nosuchvoice"))
    with pytest.raises(RuntimeError, match=r"does not know the voice variants \['nosuchvoice'\]"):
        prepare_spoken_shapes(tmp_path / "corpus", tmp_path / "data", **SMALL_SIZES, nj=1)
    assert not list((tmp_path / "corpus" / "wav").rglob("*.wav"))


@needs_espeak
def test_captions_unique_and_not_shared_between_splits(corpus):
    _, data_dir, _ = corpus
    seen = {}
    for split in SPLITS:
        text, utt2img = _maps(data_dir, split, "text"), _maps(data_dir, split, "utt2img")
        img2cap = {}
        for utt, cap in text.items():
            assert cap == cap.lower() and cap.isascii() and len(cap.split()) <= 13, cap
            assert img2cap.setdefault(utt2img[utt], cap) == cap  # all captions of an image agree
        assert len(set(img2cap.values())) == len(img2cap)  # one caption, one image
        for cap in img2cap.values():
            assert seen.setdefault(cap, split) == split, f"{cap!r} in {seen[cap]} and {split}"


@needs_espeak
def test_word_align_matches_transcript_and_audio(corpus):
    _, data_dir, _ = corpus
    for split in SPLITS:
        text, wav = _maps(data_dir, split, "text"), _maps(data_dir, split, "wav.scp")
        for utt, words in read_word_align(data_dir / split / "word_align").items():
            assert [w for w, _, _ in words] == text[utt].split()
            duration = soundfile.info(wav[utt]).duration
            assert words[0][1] == pytest.approx(PAD_S, abs=1e-3)  # trimmed consistently
            for (_, s, e), nxt in zip(words, words[1:] + [None]):
                assert s < e and (nxt is None or e == nxt[1])
            assert words[-1][2] <= duration - PAD_S + 1e-3


def _zcr(x: np.ndarray) -> float:
    return float(np.mean(np.signbit(x[1:]) != np.signbit(x[:-1])))


@needs_espeak
def test_word_starts_sit_on_acoustic_boundaries(corpus):
    """Where "a" (a vowel) is followed by an s-word (small/star/square), the zero-crossing
    rate must jump exactly at the aligned start: low (vowel) in the 30 ms before it, high
    (frication) in the 30 ms after. Shifting the times by 30 ms breaks this, so the test
    pins the boundaries to about ±30 ms; after "of", espeak merges "of a" into one event and
    "a" is placed by its phoneme event: the vowel must be louder than the /v/ before it."""
    _, data_dir, _ = corpus
    hits = {0.0: [], -0.03: [], 0.03: []}
    louder = []
    for split in SPLITS:
        wav = _maps(data_dir, split, "wav.scp")
        for utt, words in read_word_align(data_dir / split / "word_align").items():
            x, sr = soundfile.read(wav[utt])
            gap, win = int(0.005 * sr), int(0.03 * sr)
            for k in range(1, len(words)):
                prev, (w, s, _) = words[k - 1][0], words[k]
                for shift, out in hits.items():
                    t = int(round((s + shift) * sr))
                    if prev == "a" and w[0] == "s":
                        before, after = _zcr(x[t - gap - win:t - gap]), _zcr(x[t + gap:t + gap + win])
                        out.append(before < 0.2 and after > 0.3)
                if prev == "of" and w == "a":
                    t = int(round(s * sr))
                    rms = [np.sqrt(np.mean(x[a:b] ** 2))
                           for a, b in ((t - gap - win, t - gap), (t + gap, t + gap + win))]
                    louder.append(rms[1] > 1.5 * rms[0])
    assert len(hits[0.0]) >= 10 and len(louder) >= 10
    assert np.mean(hits[0.0]) >= 0.9
    assert np.mean(hits[-0.03]) <= 0.2 and np.mean(hits[0.03]) <= 0.2  # the check has teeth
    assert np.mean(louder) >= 0.9


@needs_espeak
def test_deterministic_for_a_seed_whatever_nj(tmp_path):
    # espeak keeps hidden state between utterances; the generator must not leak it into the
    # output, whichever worker synthesises which utterance in which order.
    tiny = {"num_train": 4, "num_dev": 2, "num_test": 3, "num_dev_unseen": 2}
    runs = [tmp_path / "nj1", tmp_path / "nj2"]
    for run, nj in zip(runs, (1, 2)):
        prepare_spoken_shapes(run / "corpus", run / "data", **tiny, nj=nj, seed=0)
    for split in SPLITS:
        a, b = (read_kaldi_map(r / "data" / split / "text") for r in runs)
        assert a == b
        assert (runs[0] / "data" / split / "word_align").read_text() == \
            (runs[1] / "data" / split / "word_align").read_text()
        for utt in sorted(a)[:2]:
            wa, wb = (r / "corpus" / "wav" / split / f"{utt}.wav" for r in runs)
            assert wa.read_bytes() == wb.read_bytes()
    rngs = [np.random.default_rng(seed) for seed in (0, 0, 1)]
    captions = [[sample_scene(rng).caption for _ in range(5)] for rng in rngs]
    assert captions[0] == captions[1] != captions[2]


@needs_espeak
def test_validate_data_dir_rejects_corruption(corpus, tmp_path):
    _, data_dir, _ = corpus

    def broken(edit) -> Path:
        d = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        shutil.copytree(data_dir / "dev", d)
        edit(d)
        return d

    def edit_map(name, fn):
        return lambda d: write_kaldi_map(d / name, fn(read_kaldi_map(d / name)))

    first_img = sorted(_maps(data_dir, "dev", "img.scp"))[0]
    first_utt = sorted(_maps(data_dir, "dev", "text"))[0]

    def unsort(d):
        lines = (d / "text").read_text().splitlines(keepends=True)
        (d / "text").write_text("".join(lines[::-1]))

    def duplicate_first_line(d):
        lines = (d / "utt2spk").read_text().splitlines(keepends=True)
        (d / "utt2spk").write_text("".join(lines[:1] + lines))

    cases = [
        (edit_map("img.scp", lambda m: {**m, first_img: "/nonexistent/x.png"}),
         rf"img\.scp: '{first_img}': file does not exist"),
        (edit_map("utt2img", lambda m: {**m, first_utt: "no_such_image"}),
         rf"utt2img: utterance '{first_utt}' points to image id 'no_such_image'"),
        (unsort, r"text: not sorted"),
        (duplicate_first_line, rf"utt2spk: duplicate key '{first_utt}'"),
        (edit_map("text", lambda m: {k: v for k, v in m.items() if k != first_utt}),
         rf"text: utterance '{first_utt}' is in wav\.scp only"),
        (lambda d: (d / "img.scp").unlink(), r"img\.scp: missing"),
    ]
    validate_data_dir(data_dir / "dev")
    for edit, message in cases:
        with pytest.raises(ValueError, match=message):
            validate_data_dir(broken(edit))


def test_cli_help():
    out = subprocess.run([sys.executable, "-m", "espnet_speechclip.bin.prepare_spoken_shapes", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--corpus_dir" in out and "--small" in out and "Example" in out


def test_resample_matches_band_limited_reference():
    # Tones below 8 kHz survive 22050 -> 16000 Hz exactly (in phase); 10 kHz is removed.
    sr, n = 22050, 22050 + 17
    t = np.arange(n) / sr
    env = np.zeros(n)
    env[2205:-2205] = np.hanning(n - 4410)  # silent ends, as in our clips
    tones = lambda t, e: (np.sin(2 * np.pi * 1000 * t) + 0.5 * np.sin(2 * np.pi * 5000 * t)) * e  # noqa: E731
    y = resample(tones(t, env) + 0.3 * np.sin(2 * np.pi * 10000 * t) * env, sr, 16000)
    assert len(y) == n * 16000 // sr
    t16 = np.arange(len(y)) / 16000
    np.testing.assert_allclose(y, tones(t16, np.interp(t16, t, env)), atol=1e-3)


@needs_espeak
def test_dev_unseen_leaves_the_other_splits_as_they_were(tmp_path):
    """dev_unseen draws from its own random stream after the others: with or without it, train,
    dev and test hold the same images, captions, voices and audio."""
    tiny = {"num_train": 3, "num_dev": 2, "num_test": 2}
    runs = [tmp_path / "without", tmp_path / "with"]
    counts = [prepare_spoken_shapes(run / "corpus", run / "data", **tiny, num_dev_unseen=n, nj=1)
              for run, n in zip(runs, (0, 3))]
    assert "dev_unseen" not in counts[0] and not (runs[0] / "data" / "dev_unseen").exists()
    assert counts[1]["dev_unseen"]["images"] == 3
    for split in ("train", "dev", "test"):
        assert counts[0][split] == counts[1][split]
        for name in ("text", "utt2spk", "utt2img", "word_align"):
            assert (runs[0] / "data" / split / name).read_text() == (runs[1] / "data" / split / name).read_text()
        for utt in sorted(_maps(runs[0] / "data", split, "text")):
            wa, wb = (r / "corpus" / "wav" / split / f"{utt}.wav" for r in runs)
            assert wa.read_bytes() == wb.read_bytes(), utt
        images = [r / "corpus" / "images" / split for r in runs]
        assert [p.read_bytes() for p in sorted(images[0].iterdir())] == \
            [p.read_bytes() for p in sorted(images[1].iterdir())]
    train_captions = set(_maps(runs[1] / "data", "train", "text").values())
    assert not train_captions & set(_maps(runs[1] / "data", "dev_unseen", "text").values())


@needs_espeak
def test_train_captions_per_image_changes_the_train_split_only(tmp_path):
    tiny = {"num_train": 3, "num_dev": 2, "num_test": 2, "num_dev_unseen": 2}
    counts = prepare_spoken_shapes(tmp_path / "corpus", tmp_path / "data", **tiny, train_captions_per_image=3)
    assert [counts[s]["utterances"] for s in SPLITS] == [9, 4, 4, 4]
    utt2img, utt2spk = _maps(tmp_path / "data", "train", "utt2img"), _maps(tmp_path / "data", "train", "utt2spk")
    for img in set(utt2img.values()):
        speakers = [utt2spk[u] for u, i in utt2img.items() if i == img]
        assert len(speakers) == 3 == len(set(speakers))  # three different voices per train image
    with pytest.raises(ValueError, match="captions per image in train"):
        prepare_spoken_shapes(tmp_path / "c2", tmp_path / "d2", **tiny, train_captions_per_image=0)
