"""Stages 6 and 7: pack a trained model for the ESPnet model zoo and upload it to the Hugging Face hub.

The zip is written by ESPnet's own ``espnet2.main_funcs.pack_funcs.pack`` (``meta.yaml`` with
``yaml_files: {train_config}`` and ``files: {model_file}``), so ``espnet_model_zoo`` and
:func:`espnet_speechclip.inference.SpeechCLIP.from_pretrained` both read it. Every file the model
builder needs besides the checkpoint (the frozen CLIP's model config and weights, the reduced
vocabulary, an upstream config or checkpoint) is packed too, and the packed ``config.yaml`` names
each by its path inside the archive: ESPnet's ``unpack`` and the model zoo's Hugging Face loader
both rewrite exactly such paths to where the archive was unpacked, so the zip works anywhere.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import string
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import yaml

logger = logging.getLogger(__name__)

# Config keys the model builder reads (tasks/speechclip.py); only files named under them are packed.
MODEL_KEYS = ("upstream_conf", "specaug_conf", "encoder_conf", "shared_block_conf", "parallel_conf", "segmenter_conf",
              "model_conf", "clip_conf", "clip_vocab", "vq_conf")


def checkpoint_name(config: Dict) -> str:
    """The checkpoint ESPnet keeps for the config's first ``best_model_criterion``, e.g. valid.mean_r1.best.pth."""
    criteria = config.get("best_model_criterion") or []
    if criteria:
        phase, key, _ = criteria[0]
        return f"{phase}.{key}.best.pth"
    return "latest.pth"


def find_model_file(exp_dir: Path, config: Dict) -> Path:
    """The selected checkpoint of an ESPnet exp dir; a clear error when training has not finished."""
    names = [checkpoint_name(config), "valid.mean_r10.best.pth", "valid.mean_r1.best.pth", "valid.loss.best.pth",
             "latest.pth"]
    for name in dict.fromkeys(names):
        if (exp_dir / name).exists():
            return exp_dir / name
    raise FileNotFoundError(f"{exp_dir}: no checkpoint among {list(dict.fromkeys(names))} (has stage 4 finished?)")


def _walk_strings(value, path: Tuple = ()) -> Iterator[Tuple[Tuple, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_strings(item, path + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk_strings(item, path + (i,))
    elif isinstance(value, str):
        yield path, value


def _set(config: Dict, path: Tuple, value: str) -> None:
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def referenced_files(config: Dict, search_dirs: Sequence[Path]) -> List[Tuple[Tuple, str, Path]]:
    """Files named in the model-building part of a training config: ``[(key path, value, file)]``.

    A relative value is looked up in each of ``search_dirs`` in turn (ESPnet writes paths relative to
    the recipe dir the training ran in). Values that name no existing file (hub tags such as
    ``openai``, model names) are not files and are left alone.
    """
    found = []
    for key in MODEL_KEYS:
        if key not in config:
            continue
        for path, value in _walk_strings(config[key], (key,)):
            if not value or "\n" in value:
                continue
            candidates = [Path(value)] if Path(value).is_absolute() else [d / value for d in search_dirs]
            hit = next((c for c in candidates if c.is_file()), None)
            if hit is not None:
                found.append((path, value, hit.resolve()))
    return found


def resolve_config_paths(config: Dict, search_dirs: Sequence[Path]) -> Dict:
    """A copy of ``config`` whose model-building file references are absolute paths."""
    config = yaml.safe_load(yaml.safe_dump(config))
    for path, _, file in referenced_files(config, search_dirs):
        _set(config, path, str(file))
    return config


def _arcname(value: str, used: Dict[str, Path], file: Path) -> str:
    """Where a referenced file goes in the archive: its own relative path when it has one (so the
    packed config reads like the recipe's), else ``model_files/<name>``; always with a '/' in it,
    which is how the model zoo's Hugging Face loader tells a path from a word."""
    rel = Path(value)
    name = str(rel) if not rel.is_absolute() and ".." not in rel.parts and "/" in value else f"model_files/{file.name}"
    stem, n = name, 1
    while name in used and used[name] != file:
        n += 1
        name = f"{Path(stem).parent}/{Path(stem).stem}_{n}{Path(stem).suffix}"
    used[name] = file
    return name


@contextlib.contextmanager
def _chdir(path: Path):
    # ESPnet's pack() names archive members by their path relative to the working directory.
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # a hard link: no copy of a large checkpoint (pack() resolves symlinks)
    except OSError:
        shutil.copyfile(src, dst)


def pack_model(exp_dir: str, outpath: str, model_file: Optional[str] = None,
               search_dirs: Sequence[str] = ()) -> Dict[str, str]:
    """Pack ``exp_dir`` (config.yaml + checkpoint + RESULTS.md) and the files its config names into a zip.

    Args:
        exp_dir: ESPnet exp dir of stage 4 (``exp/speechclip_<tag>``).
        outpath: the ``.zip`` to write.
        model_file: checkpoint to pack; default: the one of the config's ``best_model_criterion``.
        search_dirs: where relative paths of the config are looked up; default: the working
            directory, the recipe dir two levels above ``exp_dir``, then ``exp_dir`` itself.

    Returns:
        ``{archive name: source file}`` of everything packed.
    """
    from espnet2.main_funcs.pack_funcs import pack

    exp = Path(exp_dir).resolve()
    config_path = exp / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: is {exp_dir} an ESPnet exp dir of stage 4?")
    config = yaml.safe_load(config_path.read_text())
    model = Path(model_file) if model_file else find_model_file(exp, config)
    if not model.exists():
        raise FileNotFoundError(f"model file not found: {model}")
    # the exp dir last: a converted published model names its files relative to it
    dirs = [Path(d).resolve() for d in search_dirs] or [Path.cwd(), exp.parent.parent, exp]
    refs = referenced_files(config, dirs)
    for key in ("clip_vocab",):
        if config.get(key) and not any(p == (key,) for p, _, _ in refs):
            raise FileNotFoundError(f"{config_path}: {key}={config[key]} not found in {[str(d) for d in dirs]}")

    prefix = f"exp/{exp.name}"
    used: Dict[str, Path] = {}
    for path, value, file in refs:
        _set(config, path, _arcname(value, used, file))
    members = {f"{prefix}/{model.name}": model.resolve()}
    options = dict(used)
    results = exp / "RESULTS.md"
    if results.is_file():
        options[f"{prefix}/RESULTS.md"] = results
    else:
        logger.warning("%s has no RESULTS.md (run stage 5 first); packing without it", exp)
    for result_json in sorted(exp.glob("eval_*/results.json")):
        options[f"{prefix}/{result_json.parent.name}/results.json"] = result_json
    outpath = Path(outpath).resolve()
    with tempfile.TemporaryDirectory(prefix="speechclip_pack_") as tmp:
        stage = Path(tmp)
        for name, src in {**members, **options}.items():
            _place(src, stage / name)
        (stage / prefix).mkdir(parents=True, exist_ok=True)
        (stage / prefix / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        with _chdir(stage):
            pack(files={"model_file": f"{prefix}/{model.name}"}, yaml_files={"train_config": f"{prefix}/config.yaml"},
                 outpath=str(outpath), option=sorted(options))
    logger.info("packed %s (%d files) -> %s", exp, len(members) + len(options) + 1, outpath)
    return {**{k: str(v) for k, v in {**members, **options}.items()}, f"{prefix}/config.yaml": str(config_path)}


class UploadError(RuntimeError):
    """Uploading is impossible (no token, no network, no such repo); nothing was changed."""


def model_card(unpacked: Path, hf_repo: str) -> str:
    """README.md of the hub repo, from ``templates/model_card.md`` and the packed RESULTS.md."""
    meta = yaml.safe_load((unpacked / "meta.yaml").read_text())
    config_name = meta["yaml_files"]["train_config"]
    config = yaml.safe_load((unpacked / config_name).read_text())
    branches = [b for b in ("parallel", "segmenter") if config.get(b)]
    name = {("parallel",): "Parallel", ("segmenter",): "Cascaded"}.get(tuple(branches), "Hybrid")
    variant = name + ("+" if config.get("segmenter") == "cif" else "")
    results = sorted(unpacked.glob("exp/*/RESULTS.md"))
    upstream = config.get("upstream_conf", {})
    clip = config.get("clip_conf", {})
    template = string.Template((Path(__file__).parent / "templates" / "model_card.md").read_text())
    return template.substitute(
        model_name=hf_repo.split("/")[-1], hf_repo=hf_repo, variant=variant, train_config=config_name,
        branches=", ".join(f"{b}: {config[b]}" for b in branches),
        upstream=upstream.get("name", "?") + (" (random HuBERT)" if upstream.get("random_hubert") else ""),
        clip=f"{clip.get('model_name', '?')} / {Path(str(clip.get('pretrained'))).name}",
        results=results[0].read_text().replace("<!--", "<!-- ") if results else "(no RESULTS.md was packed)")


def build_upload_folder(packed_zip: str, hf_repo: str, folder: str) -> Path:
    """The exact content of the hub repo: the unpacked zip (meta.yaml at the top, as espnet_model_zoo
    expects of a Hugging Face model) and README.md."""
    import zipfile

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not empty")
    with zipfile.ZipFile(packed_zip) as archive:
        if "meta.yaml" not in archive.namelist():
            raise ValueError(f"{packed_zip}: no meta.yaml (not packed by stage 6)")
        archive.extractall(folder)
    (folder / "README.md").write_text(model_card(folder, hf_repo))
    return folder


def upload_model(packed_zip: str, hf_repo: str, dry_run_dir: Optional[str] = None, token: Optional[str] = None,
                 private: bool = False) -> str:
    """Upload a packed model to ``hf_repo`` (created if missing); with ``dry_run_dir``, only write the
    folder that would be uploaded there. Token and hub are checked before anything is written, so a
    failure leaves the disk as it was. Returns the folder (dry run) or the repo URL."""
    if not Path(packed_zip).is_file():
        raise FileNotFoundError(f"packed model not found: {packed_zip} (run stage 6 first)")
    if "/" not in hf_repo:
        raise ValueError(f"--hf_repo must be <user or org>/<name>, got {hf_repo!r}")
    if dry_run_dir is not None:
        folder = build_upload_folder(packed_zip, hf_repo, dry_run_dir)
        logger.info("dry run: %s holds exactly what would be uploaded to %s", folder, hf_repo)
        return str(folder)
    import huggingface_hub

    token = token or huggingface_hub.get_token()
    if not token:
        raise UploadError(f"cannot upload to {hf_repo}: no Hugging Face token (run `hf auth login` or set HF_TOKEN); "
                          "nothing was changed")
    api = huggingface_hub.HfApi(token=token)
    try:
        api.whoami()
    except Exception as err:  # offline, refused, bad token: one message whatever the transport says
        raise UploadError(f"cannot upload to {hf_repo}: the Hugging Face hub is unreachable or refused the token "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); nothing was changed"
                          ) from err
    with tempfile.TemporaryDirectory(prefix="speechclip_upload_") as tmp:
        folder = build_upload_folder(packed_zip, hf_repo, str(Path(tmp) / "repo"))
        api.create_repo(hf_repo, private=private, exist_ok=True)
        api.upload_folder(repo_id=hf_repo, folder_path=str(folder), commit_message="Upload SpeechCLIP model")
    url = f"{huggingface_hub.constants.ENDPOINT}/{hf_repo}"
    logger.info("uploaded %s -> %s", packed_zip, url)
    return url
