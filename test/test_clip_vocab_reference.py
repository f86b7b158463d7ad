"""The reference reduced-vocabulary rule (SpeechCLIP+ avssl/data/*_stat/stat_textCLIP_input.py) and the
reader of the reference's own text_clip_vocab_usage_byfreq.npy, as options of stage 3."""
import re
from pathlib import Path

import numpy as np
import pytest

import espnet_speechclip.clip_features as clip_features
from espnet_speechclip.bin import build_clip_vocab
from espnet_speechclip.clip_features import (numpy_quicksort_argsort, read_reference_vocab_stats,
                                             reference_caption, reference_token_counts)
from espnet_speechclip.tasks.speechclip import read_vocab

PAD, SOT, EOT = 0, 49406, 49407
A, DOG, CAT, PERIOD = 320, 1929, 2368, 269  # CLIP BPE ids of "a", "dog", "cat", "."


def padded(*rows):
    """Token rows padded with 0 to CLIP's 77 positions -> (B, 77)."""
    out = np.zeros((len(rows), 77), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def write_text(path: Path, lines: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k} {v}\n" for k, v in lines.items()))
    return str(path)


def test_reference_caption_rule():
    # Flickr8k script: strip, drop one final ".", strip again; SpokenCOCO script: unchanged.
    assert reference_caption(" a dog . ") == "a dog"
    assert reference_caption("a dog..") == "a dog."
    assert reference_caption("a dog .", strip_final_period=False) == "a dog ."


def test_hand_worked_counts_with_ties():
    # "a dog", "a cat", "a dog": each row SOT a <word> EOT + 73 pads.
    tokens = padded([SOT, A, DOG, EOT], [SOT, A, CAT, EOT], [SOT, A, DOG, EOT])
    stats = reference_token_counts(tokens)
    # Counts: pad 3 x 73 = 219, "a"/SOT/EOT 3 each (a tie), dog 2, cat 1.
    # Six ids are one insertion sort in numpy's introsort, i.e. stable ascending; the reference's
    # [::-1] then puts the tied ids in DESCENDING id order: EOT, SOT, "a".
    assert stats.tolist() == [[PAD, 219], [EOT, 3], [SOT, 3], [A, 3], [DOG, 2], [CAT, 1]]


def test_counts_follow_the_reference_lines():
    # The stat script's own lines, on a layout where numpy's generic introsort is the one used
    # (long double has no SIMD sort); our port must give the same row order.
    if np.dtype(np.longdouble).itemsize <= 8:
        pytest.skip("long double is double here: np.argsort may take a SIMD sort")
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 400, size=(300, 77)) * (rng.random((300, 77)) < 0.3)  # many ties, many pads
    unique, counts = np.unique(tokens.flatten(), return_counts=True)
    result = np.asarray((unique, counts)).T
    expected = result[np.argsort(result[:, 1].astype(np.longdouble))[::-1]]
    np.testing.assert_array_equal(reference_token_counts(tokens), expected)


def _killer_values(n: int) -> np.ndarray:
    """McIlroy's median-of-3 adversary against the port: values that drive it into its heapsort."""
    gas, val, state = n, [n] * n, {"solid": 0, "candidate": None}

    class Item:
        def __init__(self, k):
            self.k = k

        def __lt__(self, other):
            x, y = self.k, other.k
            if val[x] == gas and val[y] == gas:
                val[x if x == state["candidate"] else y] = state["solid"]
                state["solid"] += 1
            if val[x] == gas:
                state["candidate"] = x
            elif val[y] == gas:
                state["candidate"] = y
            return val[x] < val[y]

    numpy_quicksort_argsort([Item(k) for k in range(n)])
    for k in range(n):
        if val[k] == gas:
            val[k] = state["solid"]
            state["solid"] += 1
    return np.array(val)


@pytest.mark.parametrize("n", [0, 1, 2, 15, 16, 17, 100, 2000])
def test_port_matches_numpy_introsort(n):
    if np.dtype(np.longdouble).itemsize <= 8:
        pytest.skip("long double is double here: np.argsort may take a SIMD sort")
    rng = np.random.default_rng(n)
    for high in (1, 3, 40, 10 ** 6):
        values = rng.integers(0, high, n)
        assert numpy_quicksort_argsort(values.tolist()) == np.argsort(values.astype(np.longdouble)).tolist()


def test_port_heapsort_fallback_matches_numpy(monkeypatch):
    if np.dtype(np.longdouble).itemsize <= 8:
        pytest.skip("long double is double here: np.argsort may take a SIMD sort")
    values = _killer_values(400) // 2  # tied pairs, still deep enough for the depth limit
    heapsorted = []
    original = clip_features._numpy_heapsort_argsort
    monkeypatch.setattr(clip_features, "_numpy_heapsort_argsort",
                        lambda v, order, start, n: heapsorted.append(n) or original(v, order, start, n))
    assert numpy_quicksort_argsort(values.tolist()) == np.argsort(values.astype(np.longdouble)).tolist()
    assert heapsorted, "the adversarial input no longer reaches the heapsort fallback"


def test_cli_reference_rule_every_split(tiny_clip, tmp_path):
    train = write_text(tmp_path / "train" / "text", {"u1": "a dog.", "u2": "a cat"})
    test = write_text(tmp_path / "test" / "text", {"u3": "a dog"})
    out = tmp_path / "vocab.txt"
    build_clip_vocab.main(["--rule", "reference", "--text", train, test, "--output", str(out),
                           "--clip_model_name", tiny_clip["model_name"],
                           "--clip_model_config", tiny_clip["model_config"]])
    assert read_vocab(str(out)).tolist() == [PAD, EOT, SOT, A, DOG, CAT]
    assert out.read_text().splitlines()[4] == f"{DOG} dog"
    # SpokenCOCO's script keeps the period: it is counted like any token, once, a tie with "cat"
    # that the reversed insertion sort puts after the higher id.
    build_clip_vocab.main(["--rule", "reference", "--no-strip_final_period", "--text", train, test,
                           "--output", str(out), "--clip_model_name", tiny_clip["model_name"],
                           "--clip_model_config", tiny_clip["model_config"]])
    assert read_vocab(str(out)).tolist() == [PAD, EOT, SOT, A, DOG, CAT, PERIOD]


def test_reference_rule_errors(tiny_clip, tmp_path):
    args = ["--clip_model_name", tiny_clip["model_name"], "--clip_model_config", tiny_clip["model_config"]]
    first = write_text(tmp_path / "a" / "text", {"u1": "a dog"})
    again = write_text(tmp_path / "b" / "text", {"u1": "a dog"})
    with pytest.raises(ValueError, match="'u1' is in both"):
        build_clip_vocab.main(["--rule", "reference", "--text", first, again, "--output",
                               str(tmp_path / "v.txt")] + args)
    long = write_text(tmp_path / "c" / "text", {"u1": " ".join(["dog"] * 76)})  # 78 tokens with SOT/EOT
    with pytest.raises(ValueError, match="exceed CLIP's 77 tokens"):
        build_clip_vocab.main(["--rule", "reference", "--text", long, "--output", str(tmp_path / "v.txt")] + args)
    fits = write_text(tmp_path / "d" / "text", {"u1": " ".join(["dog"] * 75)})  # exactly 77: allowed
    build_clip_vocab.main(["--rule", "reference", "--text", fits, "--output", str(tmp_path / "v.txt")] + args)
    assert read_vocab(str(tmp_path / "v.txt")).tolist() == [DOG, EOT, SOT]


@pytest.mark.parametrize("cmd, message", [
    (["--text", "a", "b"], "--rule train takes the training split's text only"),
    (["--rule", "reference"], "--text is required"),
    (["--from_reference_stats", "s.npy", "--text", "a"], "no --text, no --rule"),
    (["--text", "a", "--no-strip_final_period"], "applies to --rule reference only"),
])
def test_cli_argument_errors(cmd, message, capsys):
    with pytest.raises(SystemExit):
        build_clip_vocab.main(cmd + ["--output", "v.txt"])
    assert message in capsys.readouterr().err


def reference_stats():
    """An (N, 2) [id, count] array saved as the stat script saves it (int64, rows by count)."""
    return np.array([[PAD, 219], [A, 3], [SOT, 3], [EOT, 3], [DOG, 2], [CAT, 1]], dtype=np.int64)


def test_read_reference_npy_and_txt(tmp_path):
    np.save(tmp_path / "text_clip_vocab_usage_byfreq.npy", reference_stats())
    np.savetxt(tmp_path / "text_clip_vocab_usage_byfreq.txt", reference_stats())  # floats, like the reference
    expected = [PAD, A, SOT, EOT, DOG, CAT]
    assert read_reference_vocab_stats(tmp_path / "text_clip_vocab_usage_byfreq.npy") == expected
    assert read_reference_vocab_stats(str(tmp_path / "text_clip_vocab_usage_byfreq.txt")) == expected


@pytest.mark.parametrize("name, content", [
    ("ids_only.npy", np.array([0, 320, 49406])),
    ("three_columns.npy", np.zeros((4, 3), dtype=np.int64)),
    ("empty.npy", np.zeros((0, 2), dtype=np.int64)),
    ("fractional.npy", np.array([[0.5, 3.0], [320.0, 2.0]])),
    ("negative.npy", np.array([[-1, 3], [320, 2]])),
    ("twice.npy", np.array([[320, 3], [320, 2]])),
    ("strings.npy", np.array([["0", "3"], ["320", "2"]])),
    ("pickled.npy", np.array([{"id": 0}, {"id": 1}], dtype=object)),
    ("not_numbers.txt", "0 3\n320 many\n"),
    ("not_npy.npy", "0 3\n320 2\n"),
])
def test_read_reference_malformed(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        np.save(path, content, allow_pickle=True)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        read_reference_vocab_stats(path)


def test_read_reference_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="byfreq.npy"):
        read_reference_vocab_stats(tmp_path / "text_clip_vocab_usage_byfreq.npy")


def test_cli_converts_reference_stats(tiny_clip, tmp_path):
    stats = tmp_path / "text_clip_vocab_usage_byfreq.npy"
    np.save(stats, reference_stats())
    out = tmp_path / "clip" / "vocab.txt"
    args = ["--clip_model_name", tiny_clip["model_name"], "--clip_model_config", tiny_clip["model_config"]]
    build_clip_vocab.main(["--from_reference_stats", str(stats), "--output", str(out)] + args)
    assert read_vocab(str(out)).tolist() == [PAD, A, SOT, EOT, DOG, CAT]
    np.save(stats, np.array([[49408, 1]]))  # one past the 49,408 CLIP tokens
    with pytest.raises(ValueError, match="CLIP id 49408 is outside"):
        build_clip_vocab.main(["--from_reference_stats", str(stats), "--output", str(out)] + args)
