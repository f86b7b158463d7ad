"""The "## Environments" block of an ESPnet RESULTS.md: when, with what, from which commit.

ESPnet's ``scripts/utils/show_asr_result.sh`` opens every recipe's RESULTS.md with the date, the
Python / ESPnet / PyTorch versions and the Git hash of the checkout; here the field's other
dependencies (s3prl, open_clip) and the CPU count are added, and a checkout with uncommitted changes
to tracked files is marked, so that a figure can be traced to the code that produced it.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import List, Optional

PACKAGES = (("espnet", "espnet"), ("pytorch", "torch"), ("s3prl", "s3prl"), ("open_clip", "open_clip_torch"))


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(repo: Path, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(repo: Path) -> Optional[dict]:
    """``{"hash", "date", "dirty"}`` of the checkout holding ``repo``, or None outside a git checkout."""
    commit = _git(repo, "rev-parse", "HEAD")
    if not commit:
        return None
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return {"hash": commit, "date": _git(repo, "log", "-1", "--format=%cd") or "?", "dirty": bool(status)}


def environment_markdown(repo: Optional[Path] = None, now: Optional[datetime] = None) -> List[str]:
    """Lines of the block; ``repo`` defaults to the checkout this package is imported from."""
    repo = Path(__file__).resolve().parent.parent if repo is None else repo
    now = now or datetime.now(timezone.utc)
    lines = ["## Environments", f"- date: `{now.strftime('%a %b %d %H:%M:%S %Z %Y')}`",
             f"- python version: `{sys.version.split()[0]}`"]
    lines += [f"- {label} version: `{label} {_version(dist)}`" for label, dist in PACKAGES]
    lines.append(f"- machine: `{platform.machine()}, {os.cpu_count()} CPU cores`")
    git = git_state(repo)
    if git is None:
        lines.append(f"- Git hash: unknown (`{repo}` is not a git checkout)")
    else:
        lines.append(f"- Git hash: `{git['hash']}`" + (" (with uncommitted changes)" if git["dirty"] else ""))
        lines.append(f"  - Commit date: `{git['date']}`")
    return lines
