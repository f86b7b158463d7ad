"""Every stage entry point in espnet_speechclip/bin answers --help (exit 0, usage and description)."""
import importlib
from pathlib import Path

import pytest

BIN = Path(__file__).resolve().parents[1] / "espnet_speechclip" / "bin"
ENTRY_POINTS = sorted(p.stem for p in BIN.glob("*.py") if not p.stem.startswith("_"))


def test_entry_points_are_found():
    assert {"prepare_spoken_shapes", "speechclip_train", "speechclip_eval", "show_environment"} <= set(ENTRY_POINTS)


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_help(name, capsys):
    module = importlib.import_module(f"espnet_speechclip.bin.{name}")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ")
    description = (module.__doc__ or "").strip()
    assert description, f"{name}: no module docstring to describe it"
    if name != "speechclip_train":  # ESPnet's task parser writes its own description
        assert description.split("\n")[0][:40] in " ".join(out.split()), f"{name}: --help lacks its description"
