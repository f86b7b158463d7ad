"""Helpers shared by the benchmarks: peak-RSS windows and the one-line result that run_all.py reads.

Every bench prints its own table for people, then one last line ``RESULT {json}`` for the runner:
``{"bench": name, "ratios": [{"name", "value", "target", "met"}...], "context": {...}}``. ``target``
is text such as ``"<= 1.10"`` or ``">= 1.5"``; ``met`` is None where the issue sets no target.
"""
from __future__ import annotations

import json
import os
import re
import resource
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional

REPO = Path(__file__).resolve().parents[1]


def rss_mib() -> float:
    """Current resident set size of this process (MiB)."""
    return _status_kib("VmRSS") / 1024


def peak_rss_mib() -> float:
    """Peak resident set size since the process started or the last ``reset_peak_rss`` (MiB)."""
    peak = _status_kib("VmHWM")
    if peak <= 0:  # no /proc (not Linux): ru_maxrss is the whole-process peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where Linux does not allow it."""
    try:
        Path(f"/proc/{os.getpid()}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> float:
    try:
        text = Path(f"/proc/{os.getpid()}/status").read_text()
    except OSError:
        return -1.0
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return float(match.group(1)) if match else -1.0


@contextmanager
def peak_window(record: Dict[str, float]) -> Iterator[None]:
    """Record ``peak_rss_mib`` (peak of this window) and ``wall_s`` of the enclosed block."""
    exact = reset_peak_rss()
    start = time.perf_counter()
    yield
    record["wall_s"] = time.perf_counter() - start
    record["peak_rss_mib"] = peak_rss_mib()
    record["peak_is_window"] = exact


def ratio(name: str, value: Optional[float], target: Optional[str] = None) -> Dict:
    """One ratio for the summary; ``target`` like ``"<= 1.10"`` or ``">= 20"``."""
    met = None
    if target is not None and value is not None:
        op, bound = target.split()
        met = value <= float(bound) if op == "<=" else value >= float(bound)
    return {"name": name, "value": value, "target": target, "met": met}


def print_result(bench: str, ratios: List[Dict], **context) -> None:
    print("RESULT " + json.dumps({"bench": bench, "ratios": ratios, "context": context}), flush=True)
