"""Stage 4 robustness: kill -9 and resume, non-finite batches, same seed -> same results.json."""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from PIL import Image

from espnet_speechclip.bin import speechclip_eval
from espnet_speechclip.tasks.speechclip import SpeechCLIPTask
from conftest import WORDS
from test_training import reporter_stats, train_cmd, write_config

ROOT = Path(__file__).resolve().parents[1]
ITERS = 3  # training steps per epoch
# Crops shorter than the tiny corpus's utterances (8000-16000 samples), so the per-epoch random
# crop is part of what a resumed run must reproduce.
# No per-epoch matplotlib plots: they cost more CPU than these tiny epochs.
OVERRIDES = dict(max_epoch=2, num_iters_per_epoch=ITERS, max_train_samples=6000, use_matplotlib=False)
# The run is killed during epoch 2 (at its 2nd step): a true SIGKILL from inside, at a fixed step.
KILLED_RUN = """
import os, signal, sys
from espnet_speechclip.espnet_model import ESPnetSpeechCLIPModel
from espnet_speechclip.tasks.speechclip import SpeechCLIPTask
forward, steps = ESPnetSpeechCLIPModel.forward, [0]
def forward_then_die(self, *args, **kwargs):
    if self.training:
        steps[0] += 1
        if steps[0] == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)
    return forward(self, *args, **kwargs)
ESPnetSpeechCLIPModel.forward = forward_then_die
SpeechCLIPTask.main(cmd=sys.argv[1:])
"""


@pytest.fixture(scope="module")
def setup(tiny_corpus, tiny_clip, tmp_path_factory):
    """The training config and an evaluation dir (valid audio + small RGB images + transcripts)."""
    work = tmp_path_factory.mktemp("robust_train")
    vocab = str(Path(tiny_clip["model_config"]).parent / "vocab.txt")
    config = write_config("parallel", work, tiny_clip, vocab, **OVERRIDES)
    eval_dir = work / "eval"
    eval_dir.mkdir()
    shutil.copy(tiny_corpus / "valid" / "wav.scp", eval_dir / "wav.scp")
    shutil.copy(tiny_corpus / "valid" / "utt2img", eval_dir / "utt2img")
    rng = np.random.default_rng(0)
    utt2img = dict(line.split() for line in (eval_dir / "utt2img").read_text().splitlines())
    images = {}
    for img in sorted(set(utt2img.values())):
        images[img] = eval_dir / f"{img}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images[img])
    (eval_dir / "img.scp").write_text("".join(f"{i} {p}\n" for i, p in images.items()))
    # One distinct caption per image ("a red circle", "a blue circle", ...), as retrieval needs.
    (eval_dir / "text").write_text("".join(f"{u} a {WORDS[int(i[3:]) % 3]} {WORDS[3 + int(i[3:]) // 3]}\n"
                                           for u, i in sorted(utt2img.items())))
    return {"config": config, "corpus": tiny_corpus, "eval_dir": eval_dir, "work": work}


def train(setup, exp: Path) -> list:
    cmd = train_cmd(setup["config"], setup["corpus"], exp, "--resume", "true")
    SpeechCLIPTask.main(cmd=cmd)
    return cmd


def evaluate(setup, exp: Path) -> dict:
    out = exp / "eval"
    speechclip_eval.main(["--data_dir", str(setup["eval_dir"]), "--model_dir", str(exp), "--model_file",
                          str(exp / f"{OVERRIDES['max_epoch']}epoch.pth"), "--output_dir", str(out),
                          "--num_cif_plots", "0"])
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def reference(setup):
    exp = setup["work"] / "reference"
    train(setup, exp)
    return {"exp": exp, "results": evaluate(setup, exp)}


def test_same_seed_twice_gives_identical_results_json(setup, reference):
    exp = setup["work"] / "again"
    train(setup, exp)
    evaluate(setup, exp)
    assert (exp / "eval" / "results.json").read_bytes() == (reference["exp"] / "eval" / "results.json").read_bytes()
    assert reference["results"]["num_utterances"] == 8


def test_kill_9_mid_epoch_then_same_command_resumes_to_the_same_final_metrics(setup, reference):
    exp = setup["work"] / "killed"
    cmd = train_cmd(setup["config"], setup["corpus"], exp, "--resume", "true")
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN.replace("{kill_at}", str(ITERS + 2)), *cmd],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert sorted(reporter_stats(exp)) == [1]  # died in epoch 2, after epoch 1's checkpoint
    assert not (exp / "2epoch.pth").exists()

    SpeechCLIPTask.main(cmd=cmd)  # the same command again

    stats, ref_stats = reporter_stats(exp), reporter_stats(reference["exp"])
    assert sorted(stats) == [1, 2]
    # Tolerance 1e-6: the resumed epoch sees the same seed, data order and crops (CPU, observed
    # bit-identical); the tolerance only allows for summation order in a different BLAS build.
    for phase, key in (("train", "loss"), ("valid", "loss"), ("valid", "mean_r10")):
        assert stats[2][phase][key] == pytest.approx(ref_stats[2][phase][key], abs=1e-6), (phase, key)
    weights = torch.load(exp / "2epoch.pth", weights_only=True)
    ref_weights = torch.load(reference["exp"] / "2epoch.pth", weights_only=True)
    for name, value in ref_weights.items():
        torch.testing.assert_close(weights[name], value, atol=1e-6, rtol=0, msg=name)


def test_truncated_checkpoint_is_one_clear_error(setup, tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "checkpoint.pth").write_bytes(b"PK\x03\x04truncated")
    with pytest.raises(RuntimeError, match=r"cannot resume from .*checkpoint\.pth: truncated or corrupt"):
        train(setup, exp)


def test_nan_batch_is_skipped_counted_and_never_reaches_the_weights(tiny_corpus, tiny_clip, tmp_path, caplog):
    # A float wav holding NaNs in the training data: the batch that carries it has a NaN loss.
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus / "train", corpus / "train")
    shutil.copytree(tiny_corpus / "valid", corpus / "valid")
    wav_scp = dict(line.split(maxsplit=1) for line in (corpus / "train" / "wav.scp").read_text().splitlines())
    bad = sorted(wav_scp)[5]
    wav, rate = soundfile.read(wav_scp[bad], dtype="float32")
    wav[100:200] = np.nan
    soundfile.write(tmp_path / "nan.wav", wav, rate, subtype="FLOAT")
    wav_scp[bad] = str(tmp_path / "nan.wav")
    (corpus / "train" / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in sorted(wav_scp.items())))
    # The cascaded branch has a BatchNorm (VQ bridge) whose running statistics forward updates.
    vocab = str(Path(tiny_clip["model_config"]).parent / "vocab.txt")
    config = write_config("cascaded", tmp_path, tiny_clip, vocab, max_epoch=1, num_iters_per_epoch=ITERS,
                          use_matplotlib=False)
    exp = tmp_path / "exp"
    with caplog.at_level(logging.WARNING, logger="espnet_speechclip.trainer"):
        SpeechCLIPTask.main(cmd=train_cmd(config, corpus, exp))
    skips = [r.getMessage() for r in caplog.records if r.getMessage().startswith("non-finite loss")]
    assert skips and all(bad in message for message in skips)
    train_stats = reporter_stats(exp)[1]["train"]
    assert train_stats["nonfinite_batches"] == len(skips)
    assert np.isfinite(train_stats["loss"])
    checkpoint = torch.load(exp / "checkpoint.pth", weights_only=False)
    steps = {int(state["step"]) for state in checkpoint["optimizers"][0]["state"].values()}
    assert steps == {ITERS - len(skips)}  # the skipped batches made no optimiser step
    for name, value in checkpoint["model"].items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), name
    assert any("running_mean" in name for name in checkpoint["model"])


def test_stage5_evaluates_the_checkpoint_of_the_configs_criterion_the_one_stage6_packs(setup, reference, tmp_path):
    # A criterion ESPnet does not pick by default (valid mean_r1), whose best epoch is not the last.
    exp = tmp_path / "exp"
    exp.mkdir()
    for name in ("1epoch.pth", "2epoch.pth", "latest.pth", "valid.mean_r10.best.pth"):
        shutil.copy(reference["exp"] / name, exp / name)
    config = yaml.safe_load((reference["exp"] / "config.yaml").read_text())
    config["best_model_criterion"] = [["valid", "mean_r1", "max"]]
    (exp / "config.yaml").write_text(yaml.safe_dump(config))
    os.symlink("1epoch.pth", exp / "valid.mean_r1.best.pth")
    default, explicit = tmp_path / "default", tmp_path / "explicit"
    speechclip_eval.main(["--data_dir", str(setup["eval_dir"]), "--model_dir", str(exp), "--output_dir",
                          str(default), "--num_cif_plots", "0"])
    speechclip_eval.main(["--data_dir", str(setup["eval_dir"]), "--model_dir", str(exp), "--model_file",
                          str(exp / "1epoch.pth"), "--output_dir", str(explicit), "--num_cif_plots", "0"])
    got, want = (json.loads((d / "results.json").read_text()) for d in (default, explicit))
    assert got.pop("checkpoint") == "valid.mean_r1.best.pth"
    assert want.pop("checkpoint") == "1epoch.pth"
    assert got == want
    assert "checkpoint `valid.mean_r1.best.pth`" in (default / "RESULTS.md").read_text()
    last = tmp_path / "last"
    speechclip_eval.main(["--data_dir", str(setup["eval_dir"]), "--model_dir", str(exp), "--model_file",
                          str(exp / "2epoch.pth"), "--output_dir", str(last), "--num_cif_plots", "0"])
    last_results = json.loads((last / "results.json").read_text())
    assert last_results.pop("checkpoint") == "2epoch.pth"
    assert last_results != want  # the two epochs differ, so the comparison above could fail
