"""The Kaldi-style utilities the recipes ship: parse_options.sh, run.pl, slurm.pl."""
import os
import subprocess
from pathlib import Path

UTILS = Path(__file__).resolve().parents[1] / "egs2" / "TEMPLATE" / "speechclip1" / "utils"


def run(cmd, cwd, env=None):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})


def test_parse_options_sets_known_variables_and_rejects_unknown(tmp_path):
    script = tmp_path / "t.sh"
    script.write_text("stage=1\nstop_stage=5\nuse_x=false\nhelp_message='usage: t.sh'\n"
                      f". {UTILS}/parse_options.sh\necho \"$stage $stop_stage $use_x|$*\"\n")
    assert run(["bash", str(script), "--stage", "3", "--stop-stage", "4", "--use_x", "true", "a"], tmp_path).stdout \
        == "3 4 true|a\n"
    assert run(["bash", str(script), "--stop_stage=2"], tmp_path).stdout == "1 2 false|\n"
    bad = run(["bash", str(script), "--stgae", "3"], tmp_path)
    assert bad.returncode != 0 and "invalid option --stgae" in bad.stderr
    assert run(["bash", str(script), "--use_x", "maybe"], tmp_path).returncode != 0
    assert "usage: t.sh" in run(["bash", str(script), "--help"], tmp_path).stderr
    (tmp_path / "defaults.conf").write_text("stage=7\n")
    assert run(["bash", str(script), "--config", "defaults.conf"], tmp_path).stdout.startswith("7 5")


def test_run_pl_job_array_logs_and_failures(tmp_path):
    result = run([str(UTILS / "run.pl"), "JOB=1:3", "log/job.JOB.log", "echo", "out", "JOB", "&&", "test", "JOB",
                  "-ne", "2"], tmp_path)
    assert result.returncode == 1 and "1 / 3 failed, log is in log/job.2.log" in result.stderr
    log1 = (tmp_path / "log" / "job.1.log").read_text()
    assert "out 1" in log1 and "# Ended (code 0)" in log1
    assert "# Ended (code 1)" in (tmp_path / "log" / "job.2.log").read_text()
    ok = run([str(UTILS / "run.pl"), "--gpu", "0", "--name", "x", "one.log", "echo", "a b"], tmp_path)
    assert ok.returncode == 0 and "a b" in (tmp_path / "one.log").read_text()


def test_slurm_pl_maps_options_to_sbatch(tmp_path):
    fake = tmp_path / "sbatch"
    fake.write_text(f"#!/usr/bin/env bash\necho \"$@\" >> {tmp_path}/calls\nbash \"${{@: -1}}\"\n")
    fake.chmod(0o755)
    result = run([str(UTILS / "slurm.pl"), "--gpu", "2", "--mem", "8G", "--num_threads", "4", "JOB=1:2",
                  "log/s.JOB.log", "echo", "job", "JOB"], tmp_path, env={"SBATCH": str(fake)})
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 2 and all("--wait" in c and "--gres=gpu:2" in c and "--mem=8G" in c
                                   and "--cpus-per-task=4" in c for c in calls)
    assert "job 2" in (tmp_path / "log" / "s.2.log").read_text()
