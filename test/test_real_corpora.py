"""Miniature Flickr8k and SpokenCOCO in the exact real layouts, with the holes real corpora have.

Each miniature has a missing wav, a caption whose image is missing, and a wav whose image is in
no split; the Flickr8k caption file also holds the real file's five ``2258277193_586949ec62.jpg.1``
lines. Stage 1 must list each by name and keep the rest, with speaker-prefixed utterance ids; the
recipes then run stages 1-3 (and for Flickr8k a stage-4 smoke run through ESPnet's trainer) with
random-weight checkpoints in the real formats: a HuBERT in s3prl's converted format, a CLIP as an
open_clip state dict.
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from PIL import Image

from espnet_speechclip.data.flickr8k import prepare_flickr8k
from espnet_speechclip.data.kaldi_dir import read_kaldi_map, utt2spk_sort_mismatch, validate_data_dir
from espnet_speechclip.data.spoken_coco import prepare_spoken_coco
from espnet_speechclip.tasks.speechclip import SpeechCLIPTask
from espnet_speechclip.official_convert import convert
from espnet_speechclip.upstream import write_random_hubert_checkpoint
from official_fixtures import PUBLISHED, write_reference_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONF = Path(__file__).parent / "conf"
SMALL_HUBERT = {"encoder_layers": 1, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
                "encoder_attention_heads": 2, "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
                "final_dim": 16, "conv_pos": 16, "conv_pos_groups": 4}
RNG = np.random.default_rng(0)


def write_wav(path: Path, seconds: float = 1.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(16000 * seconds)) / 16000
    wav = 0.3 * np.sin(2 * np.pi * RNG.uniform(150, 600) * t) + 0.01 * RNG.standard_normal(len(t))
    soundfile.write(path, wav.astype(np.float32), 16000, subtype="PCM_16")


def write_jpg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(path)


# Flickr8k: train A, B, C (C's jpg missing; B_1's wav missing), dev D, test E; Z shipped but in no split
# (as 91 real images are); the real caption file's "2258277193_586949ec62.jpg.1" (no such image).
A, B, C, D, E, Z = ("1000268201_693b08cb0e", "1001773457_577c3a7d70", "1002674143_1b742ab4b8",
                    "1003163366_44323f5815", "1007129816_e794419615", "2714703706_d21c5cb8df")
FLICKR_SIZES = {"train": 3, "dev": 1, "test": 1}
WORD = {A: "puppy", B: "beach", C: "bicycle", D: "mountain", E: "guitar", Z: "kitchen"}
FLICKR_WAVS = [f"{i}_{n}" for i in (A, B, C, D, E) for n in range(2)] + [f"{Z}_0"]
FLICKR_UTT = {w: f"flickr8k_spk{k % 3 + 1}-{w}" for k, w in enumerate(FLICKR_WAVS)}  # wav2spk.txt below
JPG_1_LINES = ["2258277193_586949ec62.jpg.1#0\tpeople waiting for the subway\n",
               "2258277193_586949ec62.jpg.1#1\tSome people looking out windows in a large building .\n",
               "2258277193_586949ec62.jpg.1#2\tThree people are waiting on a train platform .\n",
               "2258277193_586949ec62.jpg.1#3\tThree people standing at a station .\n",
               "2258277193_586949ec62.jpg.1#4\ttwo woman and one man standing near train tracks .\n"]


def make_mini_flickr8k(root: Path) -> Path:
    for name, images in (("train", [A, B, C]), ("dev", [D]), ("test", [E])):
        (root / f"Flickr_8k.{name}Images.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / f"Flickr_8k.{name}Images.txt").write_text("".join(f"{i}.jpg\n" for i in images))
    for image in (A, B, D, E, Z):
        write_jpg(root / "Flicker8k_Dataset" / f"{image}.jpg")
    tokens = [f"{i}.jpg#{n}\tA {WORD[i]} number {n} near the grass .\n"
              for i in (A, B, C, D, E, Z) for n in range(2)]
    tokens.append("1009434119_febe49276a.jpg#0\tA caption of an image that exists nowhere .\n")
    tokens[6:6] = JPG_1_LINES  # where the real file has them, between other images
    (root / "Flickr8k.token.txt").write_text("".join(tokens))
    wavs = [f"{w}.wav" for w in FLICKR_WAVS]
    (root / "flickr_audio" / "wav2capt.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "flickr_audio" / "wav2capt.txt").write_text(
        "".join(f"{w} {w.rsplit('_', 1)[0]}.jpg #{w[-5]}\n" for w in wavs))
    (root / "flickr_audio" / "wav2spk.txt").write_text("".join(f"{w} {k % 3 + 1}\n" for k, w in enumerate(wavs)))
    for wav in wavs + ["1010673430_1a30e81e2c_0.wav"]:  # the last one is in no list at all
        if wav != f"{B}_1.wav":
            write_wav(root / "flickr_audio" / "wavs" / wav, RNG.uniform(0.8, 1.4))
    return root


# SpokenCOCO / MSCOCO (Karpathy): train 9, 42 (restval; one wav missing), 25 (jpg missing);
# val 73; test 74 and 133 (no SpokenCOCO entry); image 30 is in no split.
def coco(split: str, n: int) -> str:
    return f"{split}2014/COCO_{split}2014_{n:012d}.jpg"


COCO_SIZES = {"train": 3, "dev": 1, "test": 2}
COCO_WORD = {9: "BANANA", 25: "TRAIN", 30: "SKIS", 42: "PIZZA", 73: "ZEBRA", 74: "GIRAFFE"}


def make_mini_spokencoco(spoken: Path, mscoco: Path) -> None:
    karpathy = [("train", coco("train", 9)), ("restval", coco("val", 42)), ("train", coco("train", 25)),
                ("val", coco("val", 73)), ("test", coco("val", 74)), ("test", coco("val", 133))]
    mscoco.mkdir(parents=True)
    (mscoco / "dataset_coco.json").write_text(json.dumps({"dataset": "coco", "images": [
        {"filepath": p.split("/")[0], "filename": p.split("/")[1], "split": s, "cocoid": i}
        for i, (s, p) in enumerate(karpathy)]}))
    for image in (coco("train", 9), coco("val", 42), coco("val", 73), coco("val", 74), coco("val", 133),
                  coco("train", 30)):
        write_jpg(mscoco / image)
    manifests = {"train": [coco("train", 9), coco("train", 25), coco("train", 30)],
                 "val": [coco("val", 42), coco("val", 73), coco("val", 74)]}
    for part, images in manifests.items():
        data = []
        for image in images:
            number = int(image[-10:-4])
            captions = []
            for n in range(1 if number == 30 else 2):
                utt = f"spk{n}x-CAP{number}_{n}"
                wav = f"wavs/{part}/{n}/{utt}.wav"
                captions.append({"text": f"A CAT AND A {COCO_WORD[number]} ON A MAT", "speaker": f"spk{n}x",
                                 "uttid": utt, "wav": wav})
                if utt != "spk1x-CAP42_1":
                    write_wav(spoken / wav)
            data.append({"image": image, "captions": captions})
        (spoken / f"SpokenCOCO_{part}.json").write_text(json.dumps({"data": data}))


def problems(path: Path) -> dict:
    return {line.split("\t")[0]: line.split("\t")[1:] for line in path.read_text().splitlines()}


def assert_speaker_prefixed(data: Path) -> None:
    """Kaldi's convention: each utterance id begins with its speaker (or is it), so utt2spk sorts by speaker."""
    utt2spk = read_kaldi_map(data / "utt2spk")
    assert all(utt == spk or utt.startswith(f"{spk}-") for utt, spk in utt2spk.items())
    assert utt2spk_sort_mismatch(utt2spk) is None


def test_flickr8k_stage1_lists_every_hole_by_name_and_keeps_the_rest(tmp_path):
    corpus = make_mini_flickr8k(tmp_path / "flickr8k")
    counts = prepare_flickr8k(corpus, tmp_path / "data", split_sizes=FLICKR_SIZES, captions_per_image=2,
                              max_drop_share=0.6)
    for split in FLICKR_SIZES:
        validate_data_dir(tmp_path / "data" / split)
        assert_speaker_prefixed(tmp_path / "data" / split)
    u = FLICKR_UTT
    assert sorted(read_kaldi_map(tmp_path / "data" / "train" / "wav.scp")) == sorted([u[f"{A}_0"], u[f"{A}_1"],
                                                                                      u[f"{B}_0"]])
    assert sorted(read_kaldi_map(tmp_path / "data" / "dev" / "utt2img").items()) == [(u[f"{D}_0"], D),
                                                                                      (u[f"{D}_1"], D)]
    assert read_kaldi_map(tmp_path / "data" / "train" / "text")[u[f"{A}_1"]] == "A puppy number 1 near the grass"
    assert read_kaldi_map(tmp_path / "data" / "train" / "utt2spk")[u[f"{A}_0"]] == "flickr8k_spk1"
    train = problems(tmp_path / "data" / "train" / "problems.txt")
    assert set(train) == {u[f"{B}_1"], C}
    assert train[u[f"{B}_1"]][0] == "dropped" and f"wavs/{B}_1.wav" in train[u[f"{B}_1"]][1]
    assert train[C][0] == "dropped" and f"{C}.jpg" in train[C][1] and "2 spoken caption" in train[C][1]
    outside = problems(tmp_path / "data" / "problems.txt")
    jpg_1 = {f"2258277193_586949ec62.jpg.1#{n}" for n in range(5)}
    assert set(outside) == {u[f"{Z}_0"], Z, "1010673430_1a30e81e2c_0.wav", "1009434119_febe49276a#0"} | jpg_1
    assert outside[Z][0] == "ignored"
    assert "no split" in outside[u[f"{Z}_0"]][1] and "wav2capt" in outside["1010673430_1a30e81e2c_0.wav"][1]
    assert all(outside[key][0] == "dropped" and "no split list" in outside[key][1] for key in jpg_1)
    assert counts["train"] == {"images": 2, "utterances": 3, "dropped_utterances": 3, "problems": 2}
    assert problems(tmp_path / "data" / "test" / "problems.txt") == {}


def test_flickr8k_sizes_and_missing_parts_are_errors(tmp_path):
    corpus = make_mini_flickr8k(tmp_path / "flickr8k")
    with pytest.raises(ValueError, match=r"Flickr_8k.trainImages.txt: 3 images, expected 6000"):
        prepare_flickr8k(corpus, tmp_path / "data")
    with pytest.raises(RuntimeError, match=r"3 of 6 utterances dropped.*problems.txt"):
        prepare_flickr8k(corpus, tmp_path / "data", split_sizes=FLICKR_SIZES, captions_per_image=2)
    (corpus / "Flickr8k.token.txt").unlink()
    shutil.rmtree(corpus / "flickr_audio" / "wavs")
    with pytest.raises(FileNotFoundError, match=r"lacks Flickr8k.token.txt, flickr_audio/wavs/.*flickraudio"):
        prepare_flickr8k(corpus, tmp_path / "data", split_sizes=FLICKR_SIZES)


def test_spokencoco_stage1_karpathy_split_lists_every_hole_and_keeps_the_rest(tmp_path):
    make_mini_spokencoco(tmp_path / "SpokenCOCO", tmp_path / "mscoco")
    prepare_spoken_coco(tmp_path / "SpokenCOCO", tmp_path / "mscoco", tmp_path / "data", split_sizes=COCO_SIZES,
                        max_drop_share=0.6)
    for split in COCO_SIZES:
        validate_data_dir(tmp_path / "data" / split)
        assert_speaker_prefixed(tmp_path / "data" / split)
    utt2img = read_kaldi_map(tmp_path / "data" / "train" / "utt2img")
    assert utt2img == {"spk0x-CAP9_0": "COCO_train2014_000000000009", "spk1x-CAP9_1": "COCO_train2014_000000000009",
                       "spk0x-CAP42_0": "COCO_val2014_000000000042"}  # restval joined train
    assert read_kaldi_map(tmp_path / "data" / "train" / "utt2spk")["spk1x-CAP9_1"] == "spk1x"
    assert sorted(read_kaldi_map(tmp_path / "data" / "dev" / "wav.scp")) == ["spk0x-CAP73_0", "spk1x-CAP73_1"]
    train = problems(tmp_path / "data" / "train" / "problems.txt")
    assert set(train) == {"COCO_train2014_000000000025", "spk1x-CAP42_1"}
    assert "missing image" in train["COCO_train2014_000000000025"][1]
    assert "missing wav" in train["spk1x-CAP42_1"][1] and train["spk1x-CAP42_1"][0] == "dropped"
    test = problems(tmp_path / "data" / "test" / "problems.txt")
    assert test == {"COCO_val2014_000000000133": ["kept", "in the Karpathy split but has no SpokenCOCO captions"]}
    outside = problems(tmp_path / "data" / "problems.txt")
    assert set(outside) == {"spk0x-CAP30_0"} and "no Karpathy split" in outside["spk0x-CAP30_0"][1]
    with pytest.raises(ValueError, match=r"dataset_coco.json: 3 train images, expected 113287"):
        prepare_spoken_coco(tmp_path / "SpokenCOCO", tmp_path / "mscoco", tmp_path / "data2")


@pytest.fixture(scope="module")
def recipes(tmp_path_factory):
    """Copies of both recipes as a user would make them (own files, shared template links)."""
    out = {}
    for corpus in ("flickr8k", "spokencoco"):
        src = ROOT / "egs2" / corpus / "speechclip1"
        work = tmp_path_factory.mktemp(corpus) / "speechclip1"
        work.mkdir()
        for name in ("run.sh", "db.sh", "conf", "local"):
            if (src / name).is_dir():
                shutil.copytree(src / name, work / name, symlinks=True)  # conf/train.yaml stays a link
            else:
                shutil.copy2(src / name, work / name)
        for name in ("speechclip.sh", "path.sh", "cmd.sh", "utils"):
            (work / name).symlink_to((src / name).resolve())
        out[corpus] = work
    return out


def run(recipe: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PATH": f"{ROOT / 'tools' / 'venv' / 'bin'}:{os.environ['PATH']}",
                "FLICKR8K": "", "SPOKENCOCO": "", "MSCOCO": "", **env}
    result = subprocess.run(["./run.sh", *args], cwd=recipe, capture_output=True, text=True, env=full_env,
                            timeout=600)
    result.log = result.stdout + result.stderr
    return result


def tiny_config(path: Path, tiny_clip: dict, hubert: str) -> Path:
    config = yaml.safe_load((CONF / "tiny_common.yaml").read_text())
    config.update(yaml.safe_load((CONF / "tiny_parallel.yaml").read_text()))
    config.update(upstream_conf={"name": "hubert_local", "path_or_url": hubert}, clip_conf=tiny_clip,
                  batch_size=2, max_epoch=1, num_iters_per_epoch=2)
    path.write_text(yaml.safe_dump(config))
    return path


def test_missing_corpus_root_is_one_message_naming_the_db_variable(recipes):
    result = run(recipes["flickr8k"], "--stage", "1", "--stop_stage", "1", "--train_config", "/nonexistent.yaml")
    assert result.returncode != 0 and not (recipes["flickr8k"] / "data").exists()
    assert "nonexistent.yaml" in result.log  # the preflight reads the config before any work
    for corpus, variable, where in (("flickr8k", "FLICKR8K", "flickraudio"), ("spokencoco", "SPOKENCOCO", "placesaudio")):
        result = subprocess.run(["local/data.sh"], cwd=recipes[corpus], capture_output=True, text=True,
                                env={**os.environ, "FLICKR8K": "", "SPOKENCOCO": ""})
        assert result.returncode == 1
        assert f"{variable}='' (db.sh) is not a directory" in result.stdout and where in result.stdout


def test_flickr8k_recipe_stages_1_to_3_then_a_stage4_smoke_run(recipes, tiny_clip, tmp_path):
    recipe = recipes["flickr8k"]
    corpus = make_mini_flickr8k(tmp_path / "flickr8k")
    hubert = write_random_hubert_checkpoint(str(tmp_path / "hubert_small.pt"), SMALL_HUBERT)
    config = tiny_config(recipe / "conf" / "tiny.yaml", tiny_clip, hubert)
    result = run(recipe, "--stage", "1", "--stop_stage", "3", "--train_config", str(config), "--nj", "1",
                 "--local_data_opts", "--num_train 3 --num_dev 1 --num_test 1 --captions_per_image 2 "
                 "--max_drop_share 0.6", FLICKR8K=str(corpus))
    assert result.returncode == 0, result.log[-4000:]
    assert f"{B}_1" in (recipe / "data" / "train" / "problems.txt").read_text()
    assert f"{Z}_0" in result.log  # problems are in the log too
    for split, utts in (("train", 3), ("dev", 2), ("test", 2)):
        validate_data_dir(recipe / "dump" / split)
        feats = read_kaldi_map(recipe / "dump" / split / "image_feats.scp")
        assert len(feats) == utts and np.load(next(iter(feats.values()))).shape == (32,)
    vocab = {line.split()[1] for line in (recipe / "exp" / "clip" / "vocab.txt").read_text().splitlines()}
    assert {"puppy", "beach", "grass"} <= vocab and not {"mountain", "guitar", "bicycle"} & vocab  # train only
    # Stage 4 smoke: the options speechclip.sh passes, in this process (its launcher is tested by the
    # SpokenShapes recipe test), with the random HuBERT in s3prl's format as the upstream.
    dump, exp = recipe / "dump", recipe / "exp" / "speechclip_tiny"
    cmd = ["--config", str(config), "--output_dir", str(exp), "--ngpu", "0", "--use_tensorboard", "false",
           "--clip_vocab", str(recipe / "exp" / "clip" / "vocab.txt")]
    for prefix, split in (("train", "train"), ("valid", "dev")):
        cmd += [f"--{prefix}_data_path_and_name_and_type", f"{dump / split / 'wav.scp'},speech,sound",
                f"--{prefix}_data_path_and_name_and_type", f"{dump / split / 'image_feats.scp'},image_feats,npy",
                f"--{prefix}_shape_file", str(dump / split / "speech_shape")]
    SpeechCLIPTask.main(cmd=cmd)
    stats = torch.load(exp / "checkpoint.pth", map_location="cpu", weights_only=True)["reporter"]["stats"]
    assert np.isfinite(stats[1]["train"]["loss"]) and 0.0 <= stats[1]["valid"]["mean_r10"] <= 1.0
    assert (exp / "valid.mean_r10.best.pth").is_file()
    # A published model (its stand-in), converted, evaluated by stage 5 on the prepared test split.
    record = next(r for r in PUBLISHED if r.variant == "Parallel" and r.size == "base")
    write_reference_checkpoint(tmp_path / "parallel_base.ckpt", record)
    convert(str(tmp_path / "parallel_base.ckpt"), str(recipe / "exp" / "speechclip_published"))
    result = run(recipe, "--stage", "5", "--stop_stage", "5", "--model_dir", "exp/speechclip_published",
                 "--eval_sets", "test", FLICKR8K=str(corpus))
    assert result.returncode == 0, result.log[-4000:]
    results = json.loads((recipe / "exp" / "speechclip_published" / "eval_test" / "results.json").read_text())
    assert results["num_utterances"] == 2 and "speech_to_image" in json.dumps(results)


def test_spokencoco_recipe_stages_1_to_3_on_the_miniature(recipes, tiny_clip, tmp_path):
    recipe = recipes["spokencoco"]
    make_mini_spokencoco(tmp_path / "SpokenCOCO", tmp_path / "mscoco")
    hubert = write_random_hubert_checkpoint(str(tmp_path / "hubert_small.pt"), SMALL_HUBERT)
    config = tiny_config(recipe / "conf" / "tiny.yaml", tiny_clip, hubert)
    result = run(recipe, "--stage", "1", "--stop_stage", "3", "--train_config", str(config), "--nj", "1",
                 "--local_data_opts", "--num_train 3 --num_dev 1 --num_test 2 --max_drop_share 0.6",
                 SPOKENCOCO=str(tmp_path / "SpokenCOCO"), MSCOCO=str(tmp_path / "mscoco"))
    assert result.returncode == 0, result.log[-4000:]
    assert "spk1x-CAP42_1" in (recipe / "data" / "train" / "problems.txt").read_text()
    assert "spk1x-CAP42_1" in result.log  # problems are in the log too
    for split, utts in (("train", 3), ("dev", 2), ("test", 2)):
        validate_data_dir(recipe / "dump" / split)
        assert len(read_kaldi_map(recipe / "dump" / split / "image_feats.scp")) == utts
    vocab = {line.split()[1] for line in (recipe / "exp" / "clip" / "vocab.txt").read_text().splitlines()}
    assert {"cat", "banana", "pizza"} <= vocab and not {"zebra", "giraffe"} & vocab  # train captions only
