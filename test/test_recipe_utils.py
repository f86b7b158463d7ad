"""The Kaldi-style utilities the recipes ship: parse_options.sh, run.pl, slurm.pl, queue.pl, cmd.sh."""
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


def fake_scheduler(tmp_path, name):
    """A stand-in for sbatch/qsub: records its arguments, runs the job script (the last one)."""
    fake = tmp_path / name
    fake.write_text(f"#!/usr/bin/env bash\necho \"$@\" >> {tmp_path}/calls\nbash \"${{@: -1}}\"\n")
    fake.chmod(0o755)
    return str(fake)


def test_queue_pl_maps_options_to_qsub_and_reports_failures(tmp_path):
    (tmp_path / "queue.conf").write_text("-q gpu.q  # the GPU queue\n")
    env = {"QSUB": fake_scheduler(tmp_path, "qsub")}
    result = run([str(UTILS / "queue.pl"), "--config", "queue.conf", "--gpu", "1", "--mem", "4G", "--num_threads", "3",
                  "--num_nodes", "1", "JOB=1:2", "log/q.JOB.log", "echo", "job", "JOB", "&&", "test", "JOB", "-ne", "2"],
                 tmp_path, env=env)
    assert result.returncode == 1 and "queue.pl: 1 / 2 failed, log is in log/q.2.log" in result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 2
    for call in calls:
        assert call.startswith("-sync y -cwd -j y -N q.")
        assert "-q gpu.q -l gpu=1 -l mem_free=4G,ram_free=4G -pe smp 3" in call and "-pe mpi" not in call
    assert "job 1" in (tmp_path / "log" / "q.1.log").read_text()
    assert "# Ended (code 1)" in (tmp_path / "log" / "q.2.log").read_text()
    bad = run([str(UTILS / "queue.pl"), "--partition", "x", "a.log", "true"], tmp_path, env=env)
    assert bad.returncode != 0 and "queue.pl: unknown option --partition" in bad.stderr


def test_cmd_sh_selects_each_backend(tmp_path):
    cmd_sh = UTILS.parent / "cmd.sh"
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "queue.conf").write_text("-q all.q\n")
    seen = {}
    for backend in ("local", "slurm", "sge", "pbs"):
        out = run(["bash", "-c", f". {cmd_sh} && echo \"$train_cmd|$cuda_cmd\""], tmp_path,
                  env={"SPEECHCLIP_CMD_BACKEND": backend})
        seen[backend] = (out.returncode, out.stdout.strip(), out.stderr)
    assert seen["local"][:2] == (0, "utils/run.pl|utils/run.pl")
    assert seen["slurm"][:2] == (0, "utils/slurm.pl|utils/slurm.pl")  # no conf/slurm.conf here
    assert seen["sge"][:2] == (0, "utils/queue.pl --config conf/queue.conf|utils/queue.pl --config conf/queue.conf")
    assert seen["pbs"][0] != 0 and "unknown cmd_backend pbs" in seen["pbs"][2]


def test_espnet_launcher_submits_through_queue_pl(tmp_path):
    """espnet2.bin.launch (single node) calls the cmd script as `<cmd> --gpu N <log> <command...>`."""
    import sys

    env = {"QSUB": fake_scheduler(tmp_path, "qsub")}
    result = run([sys.executable, "-m", "espnet2.bin.launch", "--cmd", f"{UTILS / 'queue.pl'} --mem 2G",
                  "--log", "exp/train.log", "--ngpu", "0", "--", sys.executable, "-c",
                  "import sys; print('trainer args', sys.argv[1:])"], tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "-l mem_free=2G,ram_free=2G" in (tmp_path / "calls").read_text()
    assert "trainer args ['--ngpu', '0', '--multiprocessing_distributed', 'True']" in \
        (tmp_path / "exp" / "train.log").read_text()
