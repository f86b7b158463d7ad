"""Two-process CPU training (gloo) through ESPnet's launcher equals one process on the same global batch.

``espnet2.bin.launch --host h1,h2 --ngpu 0`` is ESPnet's way to run one CPU process per host: it
starts each process over ssh with ``--multiprocessing_distributed false --dist_rank r
--dist_world_size 2 --dist_backend gloo --dist_init_method file://...``. The test runs that
launcher unchanged; only the ``ssh`` it calls is a stand-in on PATH that runs the command on this
machine. ESPnet shards each global batch across the ranks (``batch[rank::2]``); with the
global-batch InfoNCE of ``espnet_speechclip.distributed`` and plain SGD (so parameters move by
exactly lr × gradient), the trained weights and the training loss must equal the single-process run's.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from espnet2.torch_utils.set_all_random_seed import set_all_random_seed

from espnet_speechclip.tasks.speechclip import SpeechCLIPTask
from test_training import reporter_stats, train_cmd, write_config

# Same global batches, different float summation order (shards, thread counts): a few ulps.
TOLERANCE = 1e-5
# 7 utterances per global batch: shards of 4 and 3, so uneven shards are covered too. Every training
# utterance is cropped to 8,000 samples (the corpus has 8,000-16,000), so no batch is padded: s3prl's
# upstreams and ESPnet's Conv2dSubsampling give the last frames of a padded utterance values that
# depend on the batch's longest one, and a shard's longest is not the global batch's.
OVERRIDES = dict(optim="sgd", optim_conf={"lr": 0.5}, batch_size=7, max_epoch=1, num_iters_per_epoch=2,
                 max_train_samples=8000)


def fake_ssh(directory: Path) -> Path:
    """An ``ssh`` that runs its remote command here: ``ssh HOST bash <heredoc>`` -> ``bash -c``."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "ssh"
    script.write_text('#!/bin/bash\nshift\nexec bash -c "$*"\n')
    script.chmod(0o755)
    return directory


def test_two_gloo_processes_match_one_process(tiny_corpus, tiny_clip, tmp_path):
    vocab = str(Path(tiny_clip["model_config"]).parent / "vocab.txt")
    config = write_config("parallel", tmp_path, tiny_clip, vocab, **OVERRIDES)

    single = tmp_path / "single"
    SpeechCLIPTask.main(cmd=train_cmd(config, tiny_corpus, single))

    ddp = tmp_path / "ddp"
    env = dict(os.environ, PATH=f"{fake_ssh(tmp_path / 'bin')}:{os.environ['PATH']}", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH")])))
    launch = [sys.executable, "-m", "espnet2.bin.launch", "--host", "localhost,localhost", "--ngpu", "0",
              "--envfile", "none", "--log", str(ddp / "train.log"),
              "--init_file_prefix", str(ddp / ".dist_init_"), "--",
              sys.executable, "-m", "espnet_speechclip.bin.speechclip_train"]
    done = subprocess.run(launch + train_cmd(config, tiny_corpus, ddp), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    log = (ddp / "train.log").read_text() if (ddp / "train.log").exists() else ""
    assert done.returncode == 0, f"launcher failed:\n{done.stderr[-3000:]}\n{log[-3000:]}"
    for rank in (0, 1):  # ESPnet's launcher started both ranks as gloo processes of one group
        assert re.search(rf"--dist_rank {rank} --dist_world_size 2 .*--dist_backend gloo", log), rank

    ref, got = reporter_stats(single), reporter_stats(ddp)
    for key in ("loss", "loss_parallel"):
        assert abs(got[1]["train"][key] - ref[1]["train"][key]) < TOLERANCE, (key, got[1]["train"], ref[1]["train"])

    set_all_random_seed(0)  # what main_worker does before building the model (seed: 0 in the config)
    before = SpeechCLIPTask.build_model(SpeechCLIPTask.get_parser().parse_args(
        train_cmd(config, tiny_corpus, tmp_path / "unused"))).state_dict()
    ref_w = torch.load(single / "1epoch.pth", map_location="cpu", weights_only=True)
    got_w = torch.load(ddp / "1epoch.pth", map_location="cpu", weights_only=True)
    assert ref_w.keys() == got_w.keys()
    moved = max((ref_w[k] - before[k]).abs().max().item() for k in ref_w if ref_w[k].is_floating_point())
    assert moved > 100 * TOLERANCE  # the steps changed the weights, so equal weights mean equal gradients
    worst = max((ref_w[k] - got_w[k]).abs().max().item() for k in ref_w if ref_w[k].is_floating_point())
    assert worst < TOLERANCE, worst
