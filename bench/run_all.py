"""Run every benchmark of issue 6 and print each ratio against its target.

Usage (from the repository root):
    tools/venv/bin/python bench/run_all.py                                  # all benches, full settings
    tools/venv/bin/python bench/run_all.py --run_main_job                   # + the main job in a fresh clone
    tools/venv/bin/python bench/run_all.py --main_job_log main_job.log      # + stage shares from a saved log
    tools/venv/bin/python bench/run_all.py --quick                          # reduced settings: checks it runs

Each bench runs in its own process (so peak-memory figures are its own), prints its table, and
ends with a ``RESULT {json}`` line; this script gathers those into one summary. torch-cif 0.2.0
(bench/requirements.txt, a bench-only dependency) is installed into this interpreter first unless
``--no_install``; without it the CIF bench leaves out the torch-cif column.

Main job (stages 1-5 of egs2/spoken_shapes/speechclip1, default config): its wall clock and each
stage's share come from the timestamped stage banners of ``speechclip.sh`` (``Stage N: ...`` and
``Successfully finished ...``). ``--run_main_job`` clones the committed repository (``git clone``,
so nothing already generated is reused), runs ``./run.sh --stage 1 --stop-stage 5`` there with
this checkout's virtual environment (about 12 minutes on 2 cores) and parses its output;
``--main_job_log`` parses a saved output instead. Do not run this while other heavy jobs share
the machine: every figure is a ratio measured side by side, but a busy machine still skews them.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional, Tuple

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BANNER = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d) \(speechclip\.sh:\d+:\w+\) "
                    r"(?:Stage (\d+): (.*)|(Successfully finished.*))$")

# name -> (full arguments, quick arguments)
BENCHES: Dict[str, Tuple[List[str], List[str]]] = {
    "bench_cif.py": ([], ["--batch", "8", "--repeats", "2", "--loop-batch", "2", "--loop-repeats", "1"]),
    "bench_inference.py": ([], ["--quick"]),
    "bench_retrieval.py": ([], ["--num_images", "1000", "--repeats", "1"]),
    "bench_train_throughput.py": ([], ["--quick"]),
    "bench_train_throughput.py --clip ViT-B-32": (["--clip", "ViT-B-32", "--steps", "4"], None),
}


def ensure_torch_cif(install: bool) -> None:
    try:
        import torch_cif  # noqa: F401
        return
    except ImportError:
        pass
    requirement = (BENCH / "requirements.txt").read_text().split()[0]
    if not install:
        print(f"torch-cif is not installed (--no_install): the CIF bench leaves out its column. "
              f"Install it with: {sys.executable} -m pip install {requirement}")
        return
    print(f"installing the bench-only dependency {requirement} (bench/requirements.txt) ...", flush=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", requirement])
    if done.returncode != 0:
        print(f"could not install {requirement}: the CIF bench runs without the torch-cif column")


def run_bench(label: str, extra: List[str]) -> Tuple[Optional[Dict], float]:
    script = label.split()[0]
    cmd = [sys.executable, str(BENCH / script)] + extra
    print(f"\n=== {label}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    result = None
    for line in proc.stdout:
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
        elif not re.search(r"it/s\]|utt/s\]|Warning|warn\(|Flash Attention", line):
            print(line, end="", flush=True)
    proc.wait()
    if proc.returncode != 0:
        print(f"{label} failed (exit {proc.returncode})")
        result = None
    return result, time.perf_counter() - start


def stage_shares(log_text: str) -> Optional[Dict]:
    """Wall clock per stage (and per banner) from the stage banners of speechclip.sh."""
    events = []
    for line in log_text.splitlines():
        match = BANNER.match(line.strip())
        if match:
            when = datetime.fromisoformat(match.group(1))
            events.append((when, match.group(2), match.group(3) or match.group(4)))
    if not events:
        return None
    end = events[-1][0]
    banners = [(t, s, text) for t, s, text in events if s is not None]
    if not banners:
        return None
    per_stage: Dict[str, float] = {}
    steps = []
    for (t, stage, text), nxt in zip(banners, banners[1:] + [(end, None, None)]):
        seconds = (nxt[0] - t).total_seconds()
        per_stage[stage] = per_stage.get(stage, 0.0) + seconds
        steps.append({"stage": stage, "banner": text, "seconds": seconds})
    total = (end - banners[0][0]).total_seconds()
    finished = events[-1][1] is None
    return {"total_s": total, "finished": finished, "per_stage_s": per_stage, "steps": steps}


def run_main_job(work: Path) -> str:
    clone = work / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(clone)], check=True)
    recipe = clone / "egs2/spoken_shapes/speechclip1"
    env = dict(os.environ, SPEECHCLIP_VENV=str(REPO / "tools/venv"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(clone), os.environ.get("PYTHONPATH")])))
    print(f"\n=== main job: ./run.sh --stage 1 --stop-stage 5 in a fresh clone ({recipe})", flush=True)
    proc = subprocess.run(["./run.sh", "--stage", "1", "--stop-stage", "5"], cwd=recipe, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    (work / "main_job.log").write_text(proc.stdout)
    if proc.returncode != 0:
        print(proc.stdout[-3000:])
        raise SystemExit(f"the main job failed (exit {proc.returncode})")
    return proc.stdout


def print_main_job(shares: Dict) -> None:
    print(f"\n=== main job: {shares['total_s']:.0f} s wall clock, stages "
          f"{min(shares['per_stage_s'])}-{max(shares['per_stage_s'])}"
          + ("" if shares["finished"] else " (no 'Successfully finished' line: ends at the last banner)"))
    for stage, seconds in shares["per_stage_s"].items():
        print(f"  stage {stage}: {seconds:7.0f} s  {100 * seconds / max(shares['total_s'], 1e-9):5.1f}%")
    for step in shares["steps"]:
        if step["seconds"] >= 0.05 * shares["total_s"]:
            print(f"    {step['seconds']:6.0f} s  stage {step['stage']}: {step['banner'][:90]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced settings: checks every bench runs")
    parser.add_argument("--only", nargs="+", default=None, help="run only these benches (script names)")
    parser.add_argument("--main_job_log", type=Path, default=None, help="saved output of ./run.sh --stage 1 --stop-stage 5")
    parser.add_argument("--run_main_job", action="store_true", help="run the main job in a fresh clone first")
    parser.add_argument("--no_install", action="store_true", help="do not pip-install torch-cif")
    parser.add_argument("--json", type=Path, default=None, help="also write every result to this file")
    args = parser.parse_args()

    ensure_torch_cif(not args.no_install)
    results, walls = [], {}
    for label, (full, quick) in BENCHES.items():
        if args.only and label.split()[0] not in args.only and label not in args.only:
            continue
        if args.quick and quick is None:
            continue
        result, walls[label] = run_bench(label, quick if args.quick else full)
        if result is not None:
            results.append(result)

    shares = None
    with tempfile.TemporaryDirectory(prefix="bench_main_job_") as tmp:
        if args.run_main_job:
            shares = stage_shares(run_main_job(Path(tmp)))
        elif args.main_job_log is not None:
            shares = stage_shares(args.main_job_log.read_text(errors="replace"))
            if shares is None:
                print(f"{args.main_job_log}: no speechclip.sh stage banners found")
    if shares is not None:
        print_main_job(shares)

    print("\n=== summary" + (" (QUICK MODE: reduced settings, not the issue's figures)" if args.quick else ""))
    print(f"{'measure':<58} {'value':>9}  {'target':<8} met")
    for result in results:
        for r in result["ratios"]:
            value = "-" if r["value"] is None else f"{r['value']:.3g}"
            met = {True: "yes", False: "NO", None: "-"}[r["met"]]
            print(f"{r['name']:<58} {value:>9}  {r['target'] or '-':<8} {met}")
    if shares is not None:
        print(f"{'main job stages 1-5 wall clock (s)':<58} {shares['total_s']:>9.0f}  {'-':<8} -")
    elif not args.quick:
        print("main job: not measured (pass --run_main_job, or --main_job_log with a saved run.sh output)")
    print("bench wall clock: " + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items()))
    if args.json is not None:
        args.json.write_text(json.dumps({"benches": results, "main_job": shares, "quick": args.quick}, indent=1))
    if len(results) < len(walls):
        raise SystemExit("some benches failed (see above)")


if __name__ == "__main__":
    main()
