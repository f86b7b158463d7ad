"""The SpokenShapes recipe, stages 1-5, on the small corpus with a tiny training config."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs2" / "spoken_shapes" / "speechclip1"


def tiny_train_config(path: Path, **overrides) -> Path:
    config = yaml.safe_load((RECIPE / "conf" / "train_hybrid_plus.yaml").read_text())
    config["encoder_conf"].update(output_size=32, linear_units=64, num_blocks=1, attention_heads=2)
    for slot in ("parallel_conf", "segmenter_conf"):
        config[slot].update(attention_heads=2, linear_units=64)
    config.update(max_epoch=2, batch_size=16, num_workers=0, **overrides)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    # A copy of the recipe as a user would make one: own run.sh/conf/local, shared template links.
    work = tmp_path_factory.mktemp("recipe") / "speechclip1"
    work.mkdir()
    for name in ("run.sh", "conf", "local"):
        (shutil.copytree if (RECIPE / name).is_dir() else shutil.copy2)(RECIPE / name, work / name)
    for name in ("speechclip.sh", "path.sh", "cmd.sh", "utils"):
        (work / name).symlink_to((RECIPE / name).resolve())
    return work


def run_recipe(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = ["./run.sh", "--local_data_opts", "--small true", "--tiny_clip_opts", "--epochs 2 --batch_size 16",
           "--train_config", str(tiny_train_config(recipe / "conf" / "tiny.yaml")), *args]
    env = {**os.environ, "PATH": f"{ROOT / 'tools' / 'venv' / 'bin'}:{os.environ['PATH']}"}
    return subprocess.run(cmd, cwd=recipe, capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_stages_1_to_5_then_rerun_is_a_no_op(recipe):
    first = run_recipe(recipe, "--stage", "1", "--stop-stage", "5")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for n in range(1, 6):
        assert f"Stage {n}:" in first.stdout
    exp = recipe / "exp" / "speechclip_tiny"
    results = json.loads((exp / "eval_test" / "results.json").read_text())
    for key in ("speech_to_image", "image_to_speech", "speech_to_text", "text_to_speech"):
        assert set(results[key]) == {"r1", "r5", "r10"} and all(0 <= v <= 1 for v in results[key].values())
    assert set(results["keyword"]) == {"precision", "recall", "f1", "hit_rate"}
    assert set(results["cif_boundary"]) == {"precision", "recall", "f1"}
    lag = results["cif_boundary_by_offset"]
    assert len(lag["f1"]) == len(lag["evenly_spaced_f1"]) == len(lag["offsets_s"]) == 41
    assert lag["evenly_spaced_best_f1"] == max(lag["evenly_spaced_f1"])
    assert "Evenly spaced fires" in (exp / "eval_test" / "RESULTS.md").read_text()
    ci = results["bootstrap_ci95"]
    for key, value in (("speech_to_image_r1", results["speech_to_image"]["r1"]),
                       ("clip_text_to_image_r1", results["clip_text_to_image"]["r1"])):
        assert ci[key][0] <= value <= ci[key][1], (key, ci[key], value)
    assert "bootstrap resamples of the images" in (exp / "eval_test" / "RESULTS.md").read_text()
    assert results["num_utterances"] == 24 and results["num_images"] == 12
    # Per test voice: every utterance counted once, and the utterance-weighted mean is the overall R@1.
    by_speaker = results["speech_to_image_r1_by_speaker"]
    utt2spk = dict(line.split() for line in (recipe / "dump" / "test" / "utt2spk").read_text().splitlines())
    assert set(by_speaker) == set(utt2spk.values())
    assert sum(row["num_utterances"] for row in by_speaker.values()) == 24
    branch = results["retrieval_branch"]
    weighted = sum(row["num_utterances"] * row[branch] for row in by_speaker.values()) / 24
    assert weighted == pytest.approx(results["speech_to_image"]["r1"], abs=1e-9)
    assert "## Speech→image R@1 per speaker" in (exp / "eval_test" / "RESULTS.md").read_text()
    assert (exp / "eval_test" / "recall_curves.png").stat().st_size > 0
    assert list((exp / "eval_test").glob("cif_*.png"))
    combined = (exp / "RESULTS.md").read_text()
    assert "## Environments" in combined and "- espnet version: `espnet " in combined
    git_hash = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    if git_hash:  # CI and the README run from a clone: the figures name the commit that made them
        assert f"- Git hash: `{git_hash.strip()}`" in combined
    assert combined.index("## Environments") < combined.index("# RESULTS: ")
    # dev, dev_unseen (voices in neither train nor test), test: in that order, each evaluated.
    sections = [combined.index(f"# RESULTS: speechclip_tiny on dump/{split}\n")
                for split in ("dev", "dev_unseen", "test")]
    assert sections == sorted(sections)
    unseen = json.loads((exp / "eval_dev_unseen" / "results.json").read_text())
    assert unseen["num_utterances"] == 20 and unseen["num_images"] == 10
    assert not set(unseen["speech_to_image_r1_by_speaker"]) & set(utt2spk.values())
    problems = (recipe / "dump" / "train" / "problems.txt").read_text()
    assert problems == ""  # the generated corpus is clean
    import open_clip

    vocab = {int(line.split()[0]) for line in (recipe / "exp" / "clip" / "vocab.txt").read_text().splitlines()}
    train_text = [line.split(maxsplit=1)[1] for line in (recipe / "dump" / "train" / "text").read_text().splitlines()]
    train_ids = set(open_clip.get_tokenizer("ViT-B-32")(train_text).flatten().tolist()) - {0, 49406, 49407}
    assert vocab == train_ids  # exactly the train captions' tokens, nothing from dev/test

    again = run_recipe(recipe, "--stage", "1", "--stop-stage", "5")
    assert again.returncode == 0
    for n in (1, 2, 3, 4, 5):
        assert f"Stage {n}:" in again.stdout
    assert again.stdout.count("already done") >= 5


@pytest.mark.slow
def test_parallel_variant_from_stage_4_has_no_keyword_metrics(recipe):
    if not (recipe / "exp" / "clip" / ".stage3.done").exists():
        pytest.skip("needs the stages 1-3 of the previous test")
    config = tiny_train_config(recipe / "conf" / "tiny_parallel.yaml")
    data = yaml.safe_load(config.read_text())
    # The parallel branch alone: no segmenter, hence no CIF weights for the default's boundary prior.
    for key in ("segmenter", "segmenter_conf", "vq_conf", "boundary_prior", "boundary_prior_conf"):
        data.pop(key, None)
    config.write_text(yaml.safe_dump(data))
    env = {**os.environ, "PATH": f"{ROOT / 'tools' / 'venv' / 'bin'}:{os.environ['PATH']}"}
    result = subprocess.run(["./run.sh", "--stage", "4", "--stop-stage", "5", "--train_config", str(config),
                             "--eval_sets", "test"], cwd=recipe, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((recipe / "exp" / "speechclip_tiny_parallel" / "eval_test" / "results.json").read_text())
    assert "keyword" not in results and "cif_boundary" not in results
    assert set(results["branches"]) == {"parallel"}
