"""Stage 8: the trained model as an s3prl upstream, the Speech Commands export, a short s3prl run."""
import json
from pathlib import Path

import pytest
import soundfile
import torch

from espnet_speechclip.s3prl_upstream import register
from test_inference import tiny_exp, tone


@pytest.fixture(scope="module")
def exp(tmp_path_factory, tiny_corpus, tiny_clip):
    return tiny_exp(tmp_path_factory, tiny_corpus, tiny_clip)


def test_s3prl_upstream_finds_it_and_gives_frame_rate_states(exp):
    register()
    from s3prl.nn import S3PRLUpstream

    from espnet_speechclip.inference import SpeechCLIP

    full = S3PRLUpstream("speechclip_local", path_or_url=str(exp)).eval()
    bare = S3PRLUpstream("speechclip_upstream_local", path_or_url=str(exp)).eval()
    model = SpeechCLIP.from_pretrained(str(exp)).model
    with torch.no_grad():
        branch_states = model.branch_frame_states(model.encode_frames(torch.zeros(1, 16000), torch.tensor([16000])))
    assert len(branch_states) >= 1  # the parallel branch's layer at least
    # tiny configs: s3prl fbank (1 state) + the trained encoder's output + the branches' frame states
    assert (full.num_layers, bare.num_layers) == (2 + len(branch_states), 1)
    assert full.downsample_rates == [160] * full.num_layers and bare.downsample_rates == [160]
    # fbank (80 mel + deltas) and the 32-d encoder output, zero-padded to one width for s3prl's weighted sum
    assert full.hidden_sizes == [bare.hidden_sizes[0]] * full.num_layers and bare.hidden_sizes[0] >= 32
    wavs = torch.zeros(2, 16000)
    wavs[0] = torch.from_numpy(tone(1.0, freq=300))
    wavs[1, :8000] = torch.from_numpy(tone(0.5, freq=700))
    lengths = torch.tensor([16000, 8000])
    with torch.no_grad():
        states, state_lengths = full(wavs, lengths)
        bare_states, _ = bare(wavs, lengths)
    assert [s.shape[:2] for s in states] == [(2, 100)] * full.num_layers
    for branch_state in states[2:]:  # learnt by the visually grounded training, not a copy of the encoder
        assert branch_state[0].abs().sum() > 0 and not torch.equal(branch_state, states[1])
    assert state_lengths[0].tolist() == [100, 50]
    torch.testing.assert_close(states[0][..., : bare_states[0].size(-1)], bare_states[0])
    encoded = states[1][..., :32]
    assert encoded.abs().sum() > 0 and states[1][..., 32:].abs().sum() == 0
    # The encoder output is repeated to the upstream rate: runs of equal frames (x4 subsampling).
    changes = (encoded[0, 1:] != encoded[0, :-1]).any(dim=-1).sum()
    assert 100 / 8 <= changes <= 100 / 3


def test_export_layout_and_short_downstream_run(exp, tmp_path):
    from espnet_speechclip.bin import export_speech_commands, s3prl_probe
    from espnet_speechclip.s3prl_upstream.runner import apply_runner_shims

    apply_runner_shims()
    from s3prl.downstream.speech_commands.expert import split_dataset
    from espnet_speechclip.s3prl_upstream.speech_commands import CLASS_MAP, UNKNOWN_WORDS

    root = tmp_path / "sc"
    export_speech_commands.main(["--out_dir", str(root), "--num_train_speakers", "2", "--num_dev_speakers", "1",
                                 "--num_test_speakers", "1", "--nj", "1"])
    train, dev = split_dataset(root / "train")
    assert len(train) == 20 and len(dev) == 20  # one speaker each, all 20 words; s3prl discards none
    assert {c for c, _ in train} == set(CLASS_MAP) | set(UNKNOWN_WORDS)
    wav, rate = soundfile.read(next((root / "test" / "yes").glob("*.wav")))
    assert rate == 16000 and len(wav) == 16000 and abs(wav).max() > 0.05
    assert sorted(p.name for p in (root / "test").iterdir()) == sorted(set(CLASS_MAP) | {"_unknown_", "_silence_"})

    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# RESULTS\nstage 5 table\n")
    probe_dir = tmp_path / "probe"
    args = ["--model", str(exp), "--sc_root", str(root), "--expdir", str(probe_dir), "--results_md",
            str(results_md), "--total_steps", "2", "--eval_step", "2", "--batch_size", "4", "--num_workers", "0",
            "--upstreams", "speechclip_local"]
    s3prl_probe.main(args)
    results = json.loads((probe_dir / "results.json").read_text())
    assert 0.0 <= results["speechclip_local"]["test_acc"] <= 1.0
    log = (probe_dir / "speechclip_local" / "log.log").read_text()
    assert "dev at step 2:" in log and "test at step" in log  # s3prl's own dev selection and test evaluation
    text = results_md.read_text()
    assert text.startswith("# RESULTS\nstage 5 table") and "|speechclip_local|" in text
    from espnet_speechclip.s3prl_upstream.probe import results_section, write_results

    write_results(str(results_md), results_section(results, str(root)))  # a rerun replaces its section
    assert results_md.read_text().count("SUPERB-style probing") == 1
