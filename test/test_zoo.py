"""Stages 6-7: pack -> from_pretrained round trip, upload failing cleanly, the --dry_run folder."""
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from espnet_speechclip.bin import upload_model as upload_cli
from espnet_speechclip.inference import SpeechCLIP
from espnet_speechclip.zoo import UploadError, pack_model, upload_model
from test_inference import tiny_exp, tone


@pytest.fixture(scope="module")
def packed(tmp_path_factory, tiny_corpus, tiny_clip):
    exp = tiny_exp(tmp_path_factory, tiny_corpus, tiny_clip)
    out = tmp_path_factory.mktemp("packed") / "model.zip"
    pack_model(str(exp), str(out))
    return exp, out


def snapshot(*dirs):
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for d in dirs for p in sorted(Path(d).rglob("*"))}


def test_pack_has_meta_and_archive_relative_paths(packed):
    exp, out = packed
    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
        meta = yaml.safe_load(archive.read("meta.yaml"))
        config = yaml.safe_load(archive.read(meta["yaml_files"]["train_config"]))
    assert meta["files"]["model_file"] == f"exp/{exp.name}/valid.mean_r10.best.pth"
    assert f"exp/{exp.name}/RESULTS.md" in names
    clip = config["clip_conf"]
    for value in (clip["model_config"], clip["pretrained"], config["clip_vocab"]):
        assert not Path(value).is_absolute() and value in names  # rewritten to its place in the zip
    assert clip["model_name"] == "tiny-test-clip"  # a name, not a file: left alone


def test_from_pretrained_zip_equals_in_memory_model(packed, tmp_path, monkeypatch):
    exp, out = packed
    reference = SpeechCLIP.from_pretrained(str(exp))
    moved = tmp_path / "elsewhere" / "model.zip"  # the zip works anywhere, from any working dir
    moved.parent.mkdir()
    moved.write_bytes(out.read_bytes())
    monkeypatch.chdir(tmp_path)
    loaded = SpeechCLIP.from_pretrained(str(moved), cache_dir=str(tmp_path / "cache"))
    ref_state, new_state = reference.model.state_dict(), loaded.model.state_dict()
    assert ref_state.keys() == new_state.keys()
    assert all(torch.equal(ref_state[k], new_state[k]) for k in ref_state)
    waves = [tone(0.7, freq=300), tone(1.1, freq=600)]
    assert torch.equal(loaded.embed_speech(waves), reference.embed_speech(waves))
    assert loaded.keywords(waves[1]) == reference.keywords(waves[1])
    assert torch.equal(loaded.embed_texts(["a red star"]), reference.embed_texts(["a red star"]))


def test_upload_without_token_fails_and_changes_nothing(packed, tmp_path, monkeypatch, caplog):
    import huggingface_hub

    exp, out = packed
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    monkeypatch.chdir(tmp_path)
    before = snapshot(exp, out.parent, tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        upload_cli.main(["--packed", str(out), "--hf_repo", "someone/speechclip"])
    assert exit_info.value.code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "no Hugging Face token" in errors[0] and "nothing was changed" in errors[0]
    # A token but no reachable hub (a closed local port stands in for "offline").
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(UploadError, match="unreachable or refused the token"):
        upload_model(str(out), "someone/speechclip", token="hf_fake")
    assert snapshot(exp, out.parent, tmp_path) == before


def test_dry_run_writes_the_folder_to_upload(packed, tmp_path):
    exp, out = packed
    folder = tmp_path / "hf_upload"
    upload_cli.main(["--packed", str(out), "--hf_repo", "someone/speechclip", "--dry_run_dir", str(folder)])
    with zipfile.ZipFile(out) as archive:
        expected = set(archive.namelist()) | {"README.md"}
    assert {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} == expected
    card = (folder / "README.md").read_text()
    assert "someone/speechclip" in card and "Hybrid+" in card and "speech_to_image r1" in card
    assert "${" not in card
    # The folder is a model the zoo's loader reads: meta.yaml at the top, loadable as it is.
    loaded = SpeechCLIP.from_pretrained(str(folder))
    assert loaded.embed_speech(tone(0.5)).shape == (loaded.model.parallel.embed_dim,)
    with pytest.raises(FileExistsError):
        upload_model(str(out), "someone/speechclip", dry_run_dir=str(folder))
