"""The ESPnet-style "## Environments" block of RESULTS.md names versions and the exact commit."""
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from espnet_speechclip.bin import show_environment
from espnet_speechclip.environment import environment_markdown, git_state


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    return tmp_path


def test_block_names_the_commit_and_versions(repo):
    lines = environment_markdown(repo, now=datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc))
    assert lines[0] == "## Environments"
    assert lines[1] == "- date: `Mon Nov 30 12:00:00 UTC 2026`"
    assert f"- Git hash: `{_git(repo, 'rev-parse', 'HEAD')}`" in lines
    import torch
    assert f"- pytorch version: `pytorch {torch.__version__.split('+')[0]}" in "\n".join(lines)
    assert any(line.startswith("- espnet version: `espnet ") for line in lines)


def test_uncommitted_changes_are_marked_untracked_files_are_not(repo):
    (repo / "scratch.log").write_text("not tracked\n")
    assert git_state(repo)["dirty"] is False
    (repo / "a.txt").write_text("two\n")
    assert git_state(repo)["dirty"] is True
    assert any(line.endswith("(with uncommitted changes)") for line in environment_markdown(repo))


def test_outside_a_checkout(tmp_path):
    assert git_state(tmp_path) is None
    assert f"- Git hash: unknown (`{tmp_path}` is not a git checkout)" in environment_markdown(tmp_path)


def test_cli_prints_the_block(capsys):
    show_environment.main([])
    assert capsys.readouterr().out.startswith("## Environments\n- date: `")
