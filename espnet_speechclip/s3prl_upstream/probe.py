"""Stage 8: SUPERB-style keyword-spotting probe through s3prl's own ``speech_commands`` downstream.

The upstream is frozen, s3prl learns a softmax-weighted sum of its hidden states and a linear
projector + mean pooling + linear classifier (SUPERB KS), keeps the checkpoint of the best dev
accuracy and evaluates it on the test root. Run once on the trained model (``speechclip_local``)
and once on its bare upstream (``speechclip_upstream_local``), the two accuracies side by side.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict

import yaml

from espnet_speechclip.s3prl_upstream.runner import run_downstream
from espnet_speechclip.s3prl_upstream.speech_commands import CLASS_MAP, superb_config

logger = logging.getLogger(__name__)
UPSTREAMS = {"speechclip_local": "trained SpeechCLIP model (upstream layers + speech encoder)",
             "speechclip_upstream_local": "its bare upstream (frozen in training)"}
BEGIN, END = "<!-- stage 8: s3prl probe -->", "<!-- /stage 8 -->"


def _accuracies(log: Path, split: str):
    return [float(v) for v in re.findall(rf"^{split} at step \d+: ([0-9.eE+-]+)$", log.read_text(), re.M)]


def probe(ckpt: str, upstream: str, sc_root: str, expdir: str, total_steps: int = 300, eval_step: int = 100,
          device: str = "cpu", batch_size: int = 32, num_workers: int = 2) -> Dict[str, float]:
    """Train and test one upstream; -> {"dev_acc": best dev accuracy, "test_acc", "steps"}."""
    if upstream not in UPSTREAMS:
        raise ValueError(f"upstream must be one of {list(UPSTREAMS)}, got {upstream!r}")
    root = Path(sc_root).resolve()
    for part in ("train", "test"):
        if not (root / part).is_dir():
            raise FileNotFoundError(f"{root / part} not found (export_speech_commands writes it)")
    out = Path(expdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = out / "downstream_config.yaml"
    config.write_text(yaml.safe_dump(superb_config(str(root / "train"), str(root / "test"), total_steps,
                                                   min(eval_step, total_steps), batch_size, num_workers)))
    logger.info("s3prl speech_commands on %s (%s): %d steps -> %s", upstream, ckpt, total_steps, out)
    run_downstream(["-m", "train", "-u", upstream, "-k", str(Path(ckpt).resolve()), "-d", "speech_commands",
                    "-c", str(config), "-p", str(out), "--device", device])
    best = out / "dev-best.ckpt"
    if not best.exists():  # dev accuracy never rose above 0: test the last checkpoint
        best = sorted(out.glob("states-*.ckpt"), key=lambda p: int(p.stem.split("-")[1]))[-1]
    run_downstream(["-m", "evaluate", "-e", str(best), "-t", "test", "--device", device])
    dev, test = _accuracies(out / "log.log", "dev"), _accuracies(out / "log.log", "test")
    if not test:
        raise RuntimeError(f"{out / 'log.log'}: s3prl wrote no test accuracy")
    return {"dev_acc": max(dev) if dev else float("nan"), "test_acc": test[-1], "steps": total_steps}


def results_section(results: Dict[str, Dict[str, float]], sc_root: str) -> str:
    """Markdown table of the probe, between markers so that a rerun replaces it."""
    words = ", ".join(f"{slot}={word}" for slot, word in CLASS_MAP.items())
    lines = [BEGIN, "## SUPERB-style probing: keyword spotting (s3prl speech_commands)", "",
             f"- Data: SpokenShapes isolated words in the Speech Commands v0.01 layout ({sc_root}); 12 classes: "
             f"10 words in the command slots ({words}), 10 other SpokenShapes words as _unknown_, noise as "
             "_silence_; test speakers are voices never heard in train/dev. Chance: 1/12 = 0.083.",
             "- Protocol: frozen upstream, learned weighted sum of hidden states, SUPERB KS head "
             "(projector 256, mean pooling, linear), Adam 1e-4, checkpoint of the best dev accuracy.", "",
             "|upstream|what|steps|dev acc|test acc|", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"|{name}|{UPSTREAMS[name]}|{r['steps']}|{r['dev_acc']:.3f}|{r['test_acc']:.3f}|")
    return "\n".join(lines + ["", END, ""])


def write_results(results_md: str, section: str) -> None:
    """Put ``section`` into RESULTS.md, replacing the one a previous run wrote."""
    path = Path(results_md)
    text = path.read_text() if path.is_file() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + text[text.index(END) + len(END):].lstrip("\n")
    path.write_text(text.rstrip("\n") + ("\n\n" if text.strip() else "") + section)
