"""Stage 1 on what the real Flickr8k, Flickr Audio, SpokenCOCO and Karpathy files contain.

Each miniature copies the real files' form (and, for Flickr8k, their real lines); each table row
adds one quirk that the real files, or copies of them in public repositories, hold, and says what
stage 1 does with it: kept (no line in problems.txt), repaired or kept with a note, ignored, or
dropped, each named in ``<data>/<split>/problems.txt`` (split "" = ``<data>/problems.txt``). A run
must never stop on such a line, and everything else must be kept.

Where the quirks come from (see also the preparers' docstrings):
* Flickr8k.token.txt (Flickr8k_text.zip; copies in prakhar-dhakar/Image-Captioning and
  Karan14-11/image_caption_generator): 40,460 "<image>.jpg#<n>\\t<caption>" lines, ASCII, LF, no BOM,
  n = 0..4; five "2258277193_586949ec62.jpg.1#<n>" lines for an image in no split list and not in
  Flicker8k_Dataset/ (public loaders skip them by name); captions with and without " .", with
  "# 28", ending "D.C."; one copy has "2258277193_586949ec62.jpg.1#0" then ".jpg#1..4", another a
  space instead of the tab on three lines. The reference SpeechCLIP loader (avssl/data/flickr_dataset.py)
  splits lines at "#<digit>" and strips one final ".".
* flickr_audio/wav2capt.txt "<image>_<n>.wav <image>.jpg #<n>" and wav2spk.txt "<wav> <number>"
  (read so by Kamper's recipe_vision_speech_flickr, which prefixes utterance ids with the speaker).
* SpokenCOCO_{train,val}.json {"data": [{"image", "captions": [{"text", "speaker", "uttid", "wav"}]}]}
  with upper-case transcripts and typos ("TABKE") and uttids that begin with "<speaker>-";
  dataset_coco.json splits train / restval / val / test (restval joins train).
"""
import json
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest
import soundfile
from PIL import Image

from espnet_speechclip.data.flickr8k import prepare_flickr8k
from espnet_speechclip.data.kaldi_dir import read_kaldi_map, utt2spk_sort_mismatch, validate_data_dir
from espnet_speechclip.data.spoken_coco import prepare_spoken_coco

RNG = np.random.default_rng(0)


def write_wav(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, (0.1 * RNG.standard_normal(1600)).astype(np.float32), 16000, subtype="PCM_16")


def write_jpg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 255, (8, 12, 3), dtype=np.uint8)).save(path)


def read_problems(data: Path) -> Dict[Tuple[str, str], str]:
    """{(split or "", key): action} of every problems.txt under ``data``."""
    out = {}
    for path in [data / "problems.txt"] + sorted(data.glob("*/problems.txt")):
        split = "" if path.parent == data else path.parent.name
        for line in path.read_text(encoding="utf-8").splitlines():
            key, action, _ = line.split("\t")
            out[split, key] = action
    return out


def kept(data: Path, splits) -> Dict[str, Tuple[str, str]]:
    """utt -> (speaker, text) over the splits, after checking each dir as Kaldi would."""
    out = {}
    for split in splits:
        validate_data_dir(data / split)
        utt2spk, text = read_kaldi_map(data / split / "utt2spk"), read_kaldi_map(data / split / "text")
        assert all(utt == spk or utt.startswith(f"{spk}-") for utt, spk in utt2spk.items())
        assert utt2spk_sort_mismatch(utt2spk) is None
        out.update({utt: (spk, text[utt]) for utt, spk in utt2spk.items()})
    return out


# --------------------------------------------------------------------------- Flickr8k + Flickr Audio
A, B, S = "1000268201_693b08cb0e", "1001773457_577c3a7d70", "241347803_afb04b12c4"   # train
DC, Y = "3215870337_c92a1a1b2f", "256085101_2c2617c5d0"                                # dev, test
NO_LIST = "2714703706_d21c5cb8df"  # shipped and captioned, in no split list
FLICKR_SPLITS = {"train": [A, B, S], "dev": [DC], "test": [Y]}
TOKEN_LINES = """\
1000268201_693b08cb0e.jpg#0	A child in a pink dress is climbing up a set of stairs in an entry way .
1000268201_693b08cb0e.jpg#1	A girl going into a wooden building .
1000268201_693b08cb0e.jpg#2	A little girl climbing into a wooden playhouse .
1000268201_693b08cb0e.jpg#3	A little girl climbing the stairs to her playhouse .
1000268201_693b08cb0e.jpg#4	A little girl in a pink dress going into a wooden cabin .
1001773457_577c3a7d70.jpg#0	A black dog and a spotted dog are fighting
1001773457_577c3a7d70.jpg#1	A black dog and a tri-colored dog playing with each other on the road .
1001773457_577c3a7d70.jpg#2	A black dog and a white dog with brown spots are staring at each other in the street .
1001773457_577c3a7d70.jpg#3	Two dogs of different breeds looking at each other on the road .
1001773457_577c3a7d70.jpg#4	Two dogs on pavement moving toward each other .
2258277193_586949ec62.jpg.1#0	people waiting for the subway
2258277193_586949ec62.jpg.1#1	Some people looking out windows in a large building .
2258277193_586949ec62.jpg.1#2	Three people are waiting on a train platform .
2258277193_586949ec62.jpg.1#3	Three people standing at a station .
2258277193_586949ec62.jpg.1#4	two woman and one man standing near train tracks .
241347803_afb04b12c4.jpg#0	A football player is in a red and white uniform Sooners # 28 .
241347803_afb04b12c4.jpg#1	A large football player in a red uniform
241347803_afb04b12c4.jpg#2	A man in a red football uniform and helmet looks to the left .
241347803_afb04b12c4.jpg#3	The Oklahoma football player watches the game from the sidelines .
241347803_afb04b12c4.jpg#4	This football team wears red shirts and red helmets .
256085101_2c2617c5d0.jpg#0	A dog with its mouth opened .
256085101_2c2617c5d0.jpg#1	Brown and white dog yawning .
256085101_2c2617c5d0.jpg#2	Close-up of dog in profile with mouth open .
256085101_2c2617c5d0.jpg#3	Dog yawns
256085101_2c2617c5d0.jpg#4	The dog 's mouth is open like he is yawning .
2714703706_d21c5cb8df.jpg#0	dogs playing
2714703706_d21c5cb8df.jpg#1	A brown dog is biting a white and tan dog on the snout .
2714703706_d21c5cb8df.jpg#2	The brown dog has a hold of the other dogs cheek with its teeth .
2714703706_d21c5cb8df.jpg#3	Two dogs are nuzzling each other nose to nose .
2714703706_d21c5cb8df.jpg#4	Two dogs bite at each other on the carpet .
3215870337_c92a1a1b2f.jpg#0	A crowd of people in front of a memorial in Washington DC .
3215870337_c92a1a1b2f.jpg#1	A crowd of people views newspaper covers in Washington D.C.
3215870337_c92a1a1b2f.jpg#2	A group dressed in wintery attire of people on a sidewalk in Washington D.C.
3215870337_c92a1a1b2f.jpg#3	Large group of people standing outside of a building .
3215870337_c92a1a1b2f.jpg#4	Lots of people gathering in a line .
"""
WAVS = [f"{image}_{n}.wav" for images in FLICKR_SPLITS.values() for image in images for n in range(5)]
# Speaker numbers as wav2spk.txt gives them; 1, 10 and 100 sort "spk1_..." after "spk10_..." but "spk1-..." first.
SPEAKER = {wav: (1, 10, 100, 7)[k % 4] for k, wav in enumerate(WAVS)}


def utt(wav: str) -> str:
    return f"flickr8k_spk{SPEAKER[wav + '.wav']}-{wav}"


def make_flickr8k(root: Path) -> Path:
    """The real layout: Flicker8k_Dataset/, the text files, flickr_audio/{wavs/,wav2capt.txt,wav2spk.txt}."""
    for split, images in FLICKR_SPLITS.items():
        (root / f"Flickr_8k.{split}Images.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / f"Flickr_8k.{split}Images.txt").write_text("".join(f"{i}.jpg\n" for i in images))
    for image in [i for images in FLICKR_SPLITS.values() for i in images] + [NO_LIST]:
        write_jpg(root / "Flicker8k_Dataset" / f"{image}.jpg")
    (root / "Flickr8k.token.txt").write_text(TOKEN_LINES)
    audio = root / "flickr_audio"
    for wav in WAVS:
        write_wav(audio / "wavs" / wav)
    (audio / "wav2capt.txt").write_text("".join(f"{w} {w.rsplit('_', 1)[0]}.jpg #{w[-5]}\n" for w in WAVS))
    (audio / "wav2spk.txt").write_text("".join(f"{w} {SPEAKER[w]}\n" for w in WAVS))
    return root


def edit(name: str, change: Callable[[str], str]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = next(p for p in (root / name, root / "flickr_audio" / name) if p.is_file())
        path.write_bytes(change(path.read_bytes().decode("utf-8")).encode("utf-8"))
    return apply


def replace(name: str, old: str, new: str) -> Callable[[Path], None]:
    def change(text: str) -> str:
        assert old in text, old
        return text.replace(old, new)
    return edit(name, change)


def each(*edits: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        for e in edits:
            e(root)
    return apply


def remove(relative: str) -> Callable[[Path], None]:
    return lambda root: (root / relative).unlink()


def add_wav(name: str) -> Callable[[Path], None]:
    return lambda root: write_wav(root / "flickr_audio" / "wavs" / name)


JPG_1 = {("", f"2258277193_586949ec62.jpg.1#{n}"): "dropped" for n in range(5)}
AS_DISTRIBUTED = {**JPG_1, ("", NO_LIST): "ignored"}
TEXT_FILES = ("Flickr8k.token.txt", "Flickr_8k.trainImages.txt", "wav2capt.txt", "wav2spk.txt")

A0_TEXT = "A child in a pink dress is climbing up a set of stairs in an entry way"
# (case, change to the real files, problems beyond AS_DISTRIBUTED {(split, key): action; None: not listed},
#  {utterance: text} kept, number of utterances kept of the 25)
FLICKR_QUIRKS: List[Tuple[str, Callable[[Path], None], Dict[Tuple[str, str], object], Dict[str, str], int]] = [
    ("as distributed: 2258277193_586949ec62.jpg.1#0-4, captions with/without ' .', '# 28', 'D.C.'",
     lambda root: None, {},
     {utt(f"{A}_0"): A0_TEXT, utt(f"{B}_0"): "A black dog and a spotted dog are fighting",
      utt(f"{S}_0"): "A football player is in a red and white uniform Sooners # 28",
      utt(f"{DC}_1"): "A crowd of people views newspaper covers in Washington D.C",  # the reference strips "."
      utt(f"{Y}_3"): "Dog yawns"}, 25),
    ("copy with 2258277193_586949ec62.jpg.1#0 then .jpg#1-4 (prakhar-dhakar/Image-Captioning)",
     each(*(replace("Flickr8k.token.txt", f"62.jpg.1#{n}", f"62.jpg#{n}") for n in range(1, 5))),
     {**{("", f"2258277193_586949ec62.jpg.1#{n}"): None for n in range(1, 5)},
      **{("", f"2258277193_586949ec62#{n}"): "dropped" for n in range(1, 5)}}, {}, 25),
    ("space instead of the tab after #<n> (Karan14-11/image_caption_generator)",
     replace("Flickr8k.token.txt", f"{A}.jpg#0\tA child", f"{A}.jpg#0 A child"), {}, {utt(f"{A}_0"): A0_TEXT}, 25),
    ("CRLF line ends (a re-saved copy)", each(*(edit(n, lambda t: t.replace("\n", "\r\n")) for n in TEXT_FILES)),
     {}, {utt(f"{B}_0"): "A black dog and a spotted dog are fighting"}, 25),
    ("UTF-8 BOM (a re-saved copy)", each(*(edit(n, lambda t: "\ufeff" + t) for n in TEXT_FILES)),
     {}, {utt(f"{A}_0"): A0_TEXT}, 25),
    ("blank lines, no final newline",
     each(*(edit(n, lambda t: "\n" + t.replace("\n", "\n\n").rstrip("\n")) for n in TEXT_FILES)),
     {}, {utt(f"{Y}_4"): "The dog 's mouth is open like he is yawning"}, 25),
    ("a line that is no caption (a captions.txt header)", edit("Flickr8k.token.txt", lambda t: "image,caption\n" + t),
     {("", "Flickr8k.token.txt:1"): "dropped"}, {}, 25),
    ("an empty caption", replace("Flickr8k.token.txt", "#2\tA little girl climbing into a wooden playhouse .", "#2\t"),
     {("train", utt(f"{A}_2")): "dropped"}, {}, 24),
    ("a caption number given two captions", edit("Flickr8k.token.txt", lambda t: t + f"{A}.jpg#3\tAnother .\n"),
     {("", f"{A}#3"): "dropped", ("train", utt(f"{A}_3")): "dropped"}, {}, 24),
    ("a spoken caption without a text caption",
     replace("wav2capt.txt", f"{A}_4.wav {A}.jpg #4", f"{A}_4.wav {A}.jpg #7"),
     {("train", utt(f"{A}_4")): "dropped"}, {}, 24),
    ("a wav2capt.txt line that cannot be read", replace("wav2capt.txt", f"{A}_4.wav {A}.jpg #4", f"{A}_4.wav"),
     {("", f"{A}_4.wav"): "dropped", ("train", A): "kept"}, {}, 24),
    ("a wav that wav2capt.txt does not list", add_wav(f"{A}_5.wav"), {("", f"{A}_5.wav"): "dropped"}, {}, 25),
    ("an image with 6 spoken captions (the 6th without a speaker)",
     each(add_wav(f"{A}_5.wav"), edit("wav2capt.txt", lambda t: t + f"{A}_5.wav {A}.jpg #0\n")),
     {("train", A): "kept", ("train", f"{A}_5"): "kept"}, {f"{A}_5": A0_TEXT}, 26),
    ("an image with 4 spoken captions",
     each(remove(f"flickr_audio/wavs/{B}_4.wav"), replace("wav2capt.txt", f"{B}_4.wav {B}.jpg #4\n", "")),
     {("train", B): "kept"}, {}, 24),
    ("a missing wav", remove(f"flickr_audio/wavs/{S}_2.wav"), {("train", utt(f"{S}_2")): "dropped"}, {}, 24),
    ("a missing image", remove(f"Flicker8k_Dataset/{S}.jpg"), {("train", S): "dropped"}, {}, 20),
    ("a wav that wav2spk.txt does not name", replace("wav2spk.txt", f"{Y}_1.wav {SPEAKER[f'{Y}_1.wav']}\n", ""),
     {("test", f"{Y}_1"): "kept"}, {f"{Y}_1": "Brown and white dog yawning"}, 25),
    ("a wav2spk.txt line that cannot be read",
     replace("wav2spk.txt", f"{Y}_1.wav {SPEAKER[f'{Y}_1.wav']}\n", f"{Y}_1.wav\n"),
     {("", f"{Y}_1.wav"): "ignored", ("test", f"{Y}_1"): "kept"}, {f"{Y}_1": "Brown and white dog yawning"}, 25),
    ("no wav2spk.txt: every utterance its own speaker", remove("flickr_audio/wav2spk.txt"),
     {("", "wav2spk.txt"): "kept"}, {f"{A}_0": A0_TEXT}, 25),
]


@pytest.mark.parametrize("case,change,problems,texts,num_kept", FLICKR_QUIRKS, ids=[row[0] for row in FLICKR_QUIRKS])
def test_flickr8k_stage1_lists_each_real_quirk_and_keeps_the_rest(tmp_path, case, change, problems, texts, num_kept):
    root = make_flickr8k(tmp_path / "flickr8k")
    change(root)
    counts = prepare_flickr8k(root, tmp_path / "data", split_sizes={s: len(i) for s, i in FLICKR_SPLITS.items()},
                              max_drop_share=0.5)
    expected = {key: action for key, action in {**AS_DISTRIBUTED, **problems}.items() if action is not None}
    assert read_problems(tmp_path / "data") == expected
    found = kept(tmp_path / "data", FLICKR_SPLITS)
    assert {u: found[u][1] for u in texts} == texts
    assert len(found) == sum(c["utterances"] for c in counts.values()) == num_kept


def test_flickr8k_utterance_ids_begin_with_the_wav2spk_speaker(tmp_path):
    root = make_flickr8k(tmp_path / "flickr8k")
    prepare_flickr8k(root, tmp_path / "data", split_sizes={s: len(i) for s, i in FLICKR_SPLITS.items()})
    found = kept(tmp_path / "data", FLICKR_SPLITS)
    assert set(found) == {utt(w[:-4]) for w in WAVS}
    assert found[utt(f"{A}_1")][0] == f"flickr8k_spk{SPEAKER[f'{A}_1.wav']}" == "flickr8k_spk10"
    assert read_kaldi_map(tmp_path / "data" / "train" / "utt2img")[utt(f"{S}_0")] == S
    spk2utt = read_kaldi_map(tmp_path / "data" / "train" / "spk2utt")
    assert list(spk2utt) == sorted(spk2utt) == ["flickr8k_spk1", "flickr8k_spk10", "flickr8k_spk100", "flickr8k_spk7"]


# --------------------------------------------------------------------------- SpokenCOCO + Karpathy split
def coco_caption(speaker: str, hit: str, image: int, cap: int, text: str, part: str = "val") -> dict:
    uttid = f"{speaker}-{hit}_{image}_{cap}"
    return {"text": text, "speaker": speaker, "uttid": uttid, "wav": f"wavs/{part}/0/{uttid}.wav"}


URINAL = "val2014/COCO_val2014_000000325114.jpg"  # a real entry of SpokenCOCO_val.json
URINAL_CAPTIONS = [
    coco_caption("m071506418gb9vo0w5xq3", "3LUY3GC63Z0R9PYEETJGN5HO4UEP7B", 325114, 629297,
                 "A URINAL IN A PUBLIC RESTROOM NEAR A WOODEN TABLE"),
    coco_caption("m221bzbcdh4ro4", "3ZQIG0FLQEGJ4OWB8D0RLD5NKVLWVB", 325114, 628718,
                 "A WHITE URINAL WHITE TILES A RED TABLE WITH A DISH"),
    coco_caption("m2zco7272xa5e0", "3RANCT1ZVFHR36908WUQ2DQJVTZBU1", 325114, 615377,
                 "A TABLE WITH A PLATE OF FOOD AND A URINAL BASIN"),
    coco_caption("m2saqi3zjrms1y", "3F0BG9B9MPNLI3QF5GFZ0WA089EY7V", 325114, 630704,
                 "A LITTLE RED TABKE WITH A PLATE ON IT IN THE BATHROOM"),
    coco_caption("ma7soiuo8jbku", "3LOTDFNYA7ZU8RAL8YVN3R21Z9QFWI", 325114, 622604,
                 "A URINAL NEXT TO A RED TABLE WITH A PLATE SITTING ON THE TABLE"),
]
TRAIN_IMAGE, RESTVAL_IMAGE, TEST_IMAGE = ("train2014/COCO_train2014_000000000009.jpg",
                                          "val2014/COCO_val2014_000000000042.jpg",
                                          "val2014/COCO_val2014_000000391895.jpg")
KARPATHY = [(TRAIN_IMAGE, "train"), (RESTVAL_IMAGE, "restval"), (URINAL, "val"), (TEST_IMAGE, "test")]
COCO_SIZES = {"train": 2, "dev": 1, "test": 1}


def coco_manifests() -> Dict[str, list]:
    def captions(image: str, part: str, hit: str, number: int) -> list:
        return [coco_caption(f"m{k}spk{number}", hit, number, k, f"A CAPTION {k} OF IMAGE {number}", part)
                for k in range(5)]
    return {"train": [{"image": TRAIN_IMAGE, "captions": captions(TRAIN_IMAGE, "train", "3AAA", 9)}],
            "val": [{"image": RESTVAL_IMAGE, "captions": captions(RESTVAL_IMAGE, "val", "3BBB", 42)},
                    {"image": URINAL, "captions": [dict(c) for c in URINAL_CAPTIONS]},
                    {"image": TEST_IMAGE, "captions": captions(TEST_IMAGE, "val", "3CCC", 391895)}]}


def make_spokencoco(spoken: Path, mscoco: Path, manifests: Dict[str, list], bom: bool = False) -> None:
    """SpokenCOCO_{train,val}.json + wavs/, MSCOCO train2014/ val2014/ and Karpathy's dataset_coco.json."""
    mscoco.mkdir(parents=True, exist_ok=True)
    (mscoco / "dataset_coco.json").write_text(json.dumps({"dataset": "coco", "images": [
        {"filepath": path.split("/")[0], "filename": path.split("/")[1], "split": split, "imgid": i,
         "cocoid": int(path[-10:-4]), "sentids": [], "sentences": [
             {"tokens": ["a", "man"], "raw": "A man with a red helmet on a small moped on a dirt road. "}]}
        for i, (path, split) in enumerate(KARPATHY)]}))
    for path, _ in KARPATHY:
        write_jpg(mscoco / path)
    for part, entries in manifests.items():
        for entry in entries:
            for cap in entry.get("captions", []) if isinstance(entry, dict) else []:
                if isinstance(cap, dict) and isinstance(cap.get("wav"), str):
                    write_wav(spoken / cap["wav"])
        text = json.dumps({"data": entries})
        (spoken / f"SpokenCOCO_{part}.json").write_text(("\ufeff" if bom else "") + text, encoding="utf-8")


def urinal(k: int, **changes) -> Callable[[dict], None]:
    """Change caption ``k`` of the urinal image (``None`` deletes a field)."""
    def apply(manifests: dict) -> None:
        cap = manifests["val"][1]["captions"][k]
        for field, value in changes.items():
            if value is None:
                del cap[field]
            else:
                cap[field] = value
    return apply


U = [c["uttid"] for c in URINAL_CAPTIONS]
# (case, change to the manifests, problems {(split, key): action}, kept {utt: (speaker, text)})
COCO_QUIRKS = [
    ("as distributed: uttid begins with '<speaker>-', upper case, typo; restval joins train", lambda m: None, {},
     {U[3]: ("m2saqi3zjrms1y", "A LITTLE RED TABKE WITH A PLATE ON IT IN THE BATHROOM"),
      "m0spk42-3BBB_42_0": ("m0spk42", "A CAPTION 0 OF IMAGE 42")}),
    ("an uttid without its speaker prefix", urinal(0, uttid="3LUY3GC63Z0R9PYEETJGN5HO4UEP7B_325114_629297"),
     {("dev", U[0]): "repaired"}, {U[0]: ("m071506418gb9vo0w5xq3", URINAL_CAPTIONS[0]["text"])}),
    ("no speaker: the start of the uttid is", urinal(1, speaker=None),
     {("dev", U[1]): "repaired"}, {U[1]: ("m221bzbcdh4ro4", URINAL_CAPTIONS[1]["text"])}),
    ("no speaker, an uttid without '-': its own speaker", urinal(2, speaker="", uttid="629297"),
     {("dev", "629297"): "kept"}, {"629297": ("629297", URINAL_CAPTIONS[2]["text"])}),
    ("no uttid: the wav name", urinal(4, uttid=None), {("dev", U[4]): "repaired"},
     {U[4]: ("ma7soiuo8jbku", URINAL_CAPTIONS[4]["text"])}),
    ("a transcript with a newline and runs of spaces", urinal(3, text=" A LITTLE RED  TABKE\nWITH A PLATE "), {},
     {U[3]: ("m2saqi3zjrms1y", "A LITTLE RED TABKE WITH A PLATE")}),
    ("no transcript", urinal(3, text=None), {("dev", U[3]): "dropped"}, {}),
    ("no wav", urinal(3, wav=None), {("dev", "COCO_val2014_000000325114[3]"): "dropped"}, {}),
    ("an uttid listed twice", lambda m: m["val"][1]["captions"].append(dict(URINAL_CAPTIONS[0])),
     {("dev", U[0]): "dropped"}, {U[0]: ("m071506418gb9vo0w5xq3", URINAL_CAPTIONS[0]["text"])}),
    ("an entry that is not {'image', 'captions'}", lambda m: m["val"].append({"image": URINAL}),
     {("", "SpokenCOCO_val.json:data[3]"): "dropped"}, {}),
    ("an image in no Karpathy split", lambda m: m["train"].append(
        {"image": "train2014/COCO_train2014_000000000030.jpg",
         "captions": [coco_caption("mzz", "3DDD", 30, 0, "SKIS", "train")]}),
     {("", "mzz-3DDD_30_0"): "dropped"}, {}),
]


@pytest.mark.parametrize("case,change,problems,utts", COCO_QUIRKS, ids=[row[0] for row in COCO_QUIRKS])
def test_spokencoco_stage1_lists_each_quirk_and_keeps_the_rest(tmp_path, case, change, problems, utts):
    manifests = coco_manifests()
    change(manifests)
    make_spokencoco(tmp_path / "SpokenCOCO", tmp_path / "mscoco", manifests)
    prepare_spoken_coco(tmp_path / "SpokenCOCO", tmp_path / "mscoco", tmp_path / "data", split_sizes=COCO_SIZES,
                        max_drop_share=0.5)
    assert read_problems(tmp_path / "data") == problems
    found = kept(tmp_path / "data", COCO_SIZES)
    assert {u: found[u] for u in utts} == utts
    dropped = sum(action == "dropped" and split != "" for (split, _), action in problems.items())
    assert len(found) == 20 + (case.startswith("an uttid listed")) - dropped


def test_spokencoco_json_with_a_bom_reads_as_without(tmp_path):
    make_spokencoco(tmp_path / "SpokenCOCO", tmp_path / "mscoco", coco_manifests(), bom=True)
    prepare_spoken_coco(tmp_path / "SpokenCOCO", tmp_path / "mscoco", tmp_path / "data", split_sizes=COCO_SIZES)
    assert read_problems(tmp_path / "data") == {}
    assert len(kept(tmp_path / "data", COCO_SIZES)) == 20


def test_speaker_prefix_with_dash_sorts_like_the_speakers():
    """Why "-": "spk1_x" sorts after "spk10_x" although "spk1" < "spk10"; "spk1-x" sorts first."""
    underscore = {"spk1_a": "spk1", "spk10_a": "spk10"}
    assert utt2spk_sort_mismatch(underscore) == "spk10_a"
    assert utt2spk_sort_mismatch({"spk1-a": "spk1", "spk10-a": "spk10", "spk10": "spk10"}) is None
