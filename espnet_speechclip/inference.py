"""The Python API of a trained SpeechCLIP / SpeechCLIP+ model.

    >>> from espnet_speechclip.inference import SpeechCLIP
    >>> model = SpeechCLIP.from_pretrained("exp/speechclip_train_hybrid_plus")   # or a packed zip, or a zoo tag
    >>> emb = model.embed_speech(wav, sample_rate=22050)                            # (E,), L2-normalised
    >>> model.keywords(wav, sample_rate=22050)        # [{"word", "token_id", "start", "end"}, ...] (CIF models)
    >>> model.search_images(wav, ["a.png", "b.png"], k=1)                          # [(index, score)]

Every speech method takes one waveform (1-D array/tensor or a wav path) or a list of them, and
returns one result or a list. Audio at another sample rate is resampled to 16 kHz. Audio longer
than ``chunk_seconds`` is cut into equal chunks that run separately, so memory stays bounded for
any length: the utterance embedding is the duration-weighted mean of the chunk embeddings, and
keywords and CIF boundaries are concatenated on the recording's time axis. Clips shorter than
``min_seconds`` are padded with silence (the encoder's subsampling needs a few frames).
"""
from __future__ import annotations

import hashlib
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import yaml

from espnet_speechclip.data.audio_format import resample
from espnet_speechclip.evaluation import cif_fire_times, load_wav
from espnet_speechclip.zoo import find_model_file, resolve_config_paths

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
Audio = Union[np.ndarray, torch.Tensor, str, Path]
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".gz", ".tbz2", ".bz2", ".txz", ".xz")


@dataclass
class _Result:
    """One utterance's outputs on its own time axis."""
    duration: float
    embeddings: Dict[str, torch.Tensor] = field(default_factory=dict)  # branch -> (E,)
    keyword_ids: List[int] = field(default_factory=list)  # rows of the reduced vocabulary
    fire_times: List[float] = field(default_factory=list)  # seconds; CIF models only


def _cache_dir(cache_dir: Optional[str]) -> Path:
    return Path(cache_dir) if cache_dir else Path.home() / ".cache" / "espnet_speechclip"


def resolve_model_files(tag_or_path: str, cache_dir: Optional[str] = None) -> Tuple[Path, Path, Path]:
    """-> (train config, model file, root that relative paths of the config are relative to).

    Accepts an ESPnet exp dir, a checkpoint file with config.yaml beside it, a packed archive
    (unpacked with ESPnet's ``unpack`` into the cache, keyed by the archive's path, size and time),
    an unpacked archive / Hugging Face snapshot (a dir with ``meta.yaml``), or a model-zoo tag.
    """
    from espnet2.main_funcs.pack_funcs import unpack

    path = Path(tag_or_path)
    if path.is_dir() and (path / "meta.yaml").is_file():
        meta = yaml.safe_load((path / "meta.yaml").read_text())
        return path / meta["yaml_files"]["train_config"], path / meta["files"]["model_file"], path
    if path.is_dir():
        config = path / "config.yaml"
        if not config.is_file():
            raise FileNotFoundError(f"{path}: no config.yaml (expected an ESPnet exp dir or an unpacked model)")
        return config, find_model_file(path, yaml.safe_load(config.read_text())), path.resolve().parent.parent
    if path.is_file() and any(str(path).endswith(s) for s in ARCHIVE_SUFFIXES):
        stat = path.stat()
        key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        out = _cache_dir(cache_dir) / "unpacked" / key
        files = unpack(path, out)
        return Path(files["train_config"]), Path(files["model_file"]), out
    if path.is_file():
        config = path.parent / "config.yaml"
        if not config.is_file():
            raise FileNotFoundError(f"{path}: no config.yaml beside the checkpoint")
        return config, path, path.resolve().parent.parent.parent
    if path.suffix or str(tag_or_path).startswith((".", "/")):
        raise FileNotFoundError(f"model not found: {tag_or_path} (neither a file, a dir nor a model-zoo tag)")
    return _download(str(tag_or_path), cache_dir)


def _download(tag: str, cache_dir: Optional[str]) -> Tuple[Path, Path, Path]:
    try:
        from espnet_model_zoo.downloader import ModelDownloader
    except ImportError as err:
        raise ImportError("model-zoo tags need espnet_model_zoo (pip install espnet_model_zoo; pinned in "
                          "tools/requirements.txt)") from err
    try:
        files = ModelDownloader(_cache_dir(cache_dir) / "zoo").download_and_unpack(tag)
    except Exception as err:  # network, hub or archive errors all end here with the same advice
        raise RuntimeError(f"cannot fetch model-zoo tag {tag!r} ({type(err).__name__}: {err}). Without a network, "
                           "download the packed zip elsewhere and pass its path instead.") from err
    config = Path(files["train_config"])
    return config, Path(files["model_file"]), config.parent


class SpeechCLIP:
    """A trained model with the frozen CLIP it was trained against.

    Args:
        model: the ESPnet model (``SpeechCLIPTask.build_model``), put in eval mode here.
        clip: the frozen CLIP (the cascaded branch's own when it has one).
        device: where the model runs.
        chunk_seconds: longest stretch of audio one forward pass sees.
        min_seconds: shorter clips are padded with trailing silence to this length.
        batch_seconds: total audio per batch when a list is embedded.
    """

    def __init__(self, model, clip, device: str = "cpu", chunk_seconds: float = 30.0, min_seconds: float = 0.25,
                 batch_seconds: float = 120.0):
        if chunk_seconds < 2 * min_seconds:
            raise ValueError(f"chunk_seconds={chunk_seconds} must be at least twice min_seconds={min_seconds}")
        self.model = model.to(device).eval()
        self.clip = clip.to(device)
        self.device = device
        self.chunk_seconds, self.min_seconds, self.batch_seconds = chunk_seconds, min_seconds, batch_seconds
        cascaded = model.cascaded
        self.vocab_pieces = clip.decode(cascaded.bridge.token_ids.tolist()) if cascaded is not None else None
        self.token_ids = cascaded.bridge.token_ids.tolist() if cascaded is not None else None

    @classmethod
    def from_pretrained(cls, tag_or_path: str, device: str = "cpu", cache_dir: Optional[str] = None,
                        **kwargs) -> "SpeechCLIP":
        """Load from an exp dir, a checkpoint, a packed zip, an unpacked model or a model-zoo tag."""
        from espnet_speechclip.clip_adapter import FrozenCLIP
        from espnet_speechclip.tasks.speechclip import SpeechCLIPTask

        config_path, model_file, root = resolve_model_files(str(tag_or_path), cache_dir)
        config = yaml.safe_load(config_path.read_text())
        # Relative paths were written relative to the recipe dir (or the archive root).
        config = resolve_config_paths(config, [root, Path.cwd(), config_path.parent])
        with tempfile.TemporaryDirectory(prefix="speechclip_config_") as tmp:
            resolved = Path(tmp) / "config.yaml"
            resolved.write_text(yaml.safe_dump(config))
            model, args = SpeechCLIPTask.build_model_from_file(str(resolved), str(model_file), device)
        clip = model.cascaded.clip if model.cascaded is not None else FrozenCLIP(**args.clip_conf)
        logger.info("loaded %s (%s)", model_file, ", ".join(model.branches()))
        return cls(model, clip, device=device, **kwargs)

    # ------------------------------------------------------------------ audio in
    @staticmethod
    def _as_list(items) -> Tuple[list, bool]:
        if isinstance(items, (list, tuple)):
            return list(items), True
        if isinstance(items, (np.ndarray, torch.Tensor)) and items.ndim == 2:
            return list(items), True
        return [items], False

    def _load(self, item: Audio, sample_rate: int, name: str) -> np.ndarray:
        if isinstance(item, (str, Path)):
            return load_wav(name, str(item))  # mono, 16 kHz; empty or unreadable files raise naming it
        wav = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
        if wav.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D waveform, got shape {tuple(wav.shape)}")
        if wav.size == 0:
            raise ValueError(f"{name}: empty audio (0 samples)")
        if not np.isfinite(wav).all():
            raise ValueError(f"{name}: audio contains NaN or infinite samples")
        wav = wav.astype(np.float32)
        return resample(wav, sample_rate, SAMPLE_RATE) if sample_rate != SAMPLE_RATE else wav

    def _chunks(self, wav: np.ndarray) -> List[np.ndarray]:
        """Equal chunks of at most chunk_seconds, each at least min_seconds (padded)."""
        num = max(1, math.ceil(len(wav) / (self.chunk_seconds * SAMPLE_RATE)))
        size = math.ceil(len(wav) / num)
        chunks = [wav[i:i + size] for i in range(0, len(wav), size)]
        floor = int(self.min_seconds * SAMPLE_RATE)
        return [np.pad(c, (0, floor - len(c))) if len(c) < floor else c for c in chunks]

    @torch.no_grad()
    def _run(self, speech, sample_rate: int, names: Optional[Sequence[str]] = None) -> Tuple[List[_Result], bool]:
        items, batched = self._as_list(speech)
        if not items:
            raise ValueError("no audio given (empty list)")
        names = list(names) if names is not None else [f"input {i}" if batched else "input" for i in range(len(items))]
        waves = [self._load(item, sample_rate, name) for item, name in zip(items, names)]
        # (utterance, chunk index, chunk start in s, samples of real audio, chunk)
        jobs = []
        for u, wav in enumerate(waves):
            start = 0
            for c, chunk in enumerate(self._chunks(wav)):
                real = min(len(chunk), len(wav) - start)
                jobs.append((u, c, start / SAMPLE_RATE, real, chunk))
                start += real
        results = [_Result(duration=len(w) / SAMPLE_RATE) for w in waves]
        parts: List[List[Tuple]] = [[] for _ in waves]
        for batch in self._batches(jobs):
            for job, out in zip(batch, self._forward([j[4] for j in batch])):
                parts[job[0]].append((job, out))
        for u, chunk_outs in enumerate(parts):
            self._merge(results[u], sorted(chunk_outs, key=lambda p: p[0][1]))
        return results, batched

    def _batches(self, jobs: List[Tuple]) -> List[List[Tuple]]:
        order = sorted(jobs, key=lambda j: len(j[4]))
        batches, current = [], []
        for job in order:
            if current and (len(current) + 1) * len(job[4]) > self.batch_seconds * SAMPLE_RATE:
                batches.append(current)
                current = []
            current.append(job)
        return batches + [current] if current else batches

    def _forward(self, chunks: List[np.ndarray]) -> List[Dict]:
        lengths = torch.tensor([len(c) for c in chunks])
        speech = torch.zeros(len(chunks), int(lengths.max()))
        for i, c in enumerate(chunks):
            speech[i, : len(c)] = torch.from_numpy(c)
        out = self.model.encode_speech(speech.to(self.device), lengths.to(self.device))
        cascaded = out.get("cascaded")
        outs = []
        for i, chunk in enumerate(chunks):
            item = {"embeddings": {name: out[name]["embedding"][i].float().cpu()
                                   for name in self.model.embedding_names()}}
            if cascaded is not None:
                n = int(cascaded["keyword_lengths"][i])
                item["keyword_ids"] = cascaded["keyword_indices"][i, :n].tolist()
                if "alpha" in cascaded:
                    frames = int(cascaded["alpha_lengths"][i])
                    alpha = cascaded["alpha"][i, :frames].float().cpu().numpy()
                    item["fire_times"] = cif_fire_times(alpha, n, len(chunk) / SAMPLE_RATE / max(frames, 1),
                                                        self.model.cascaded.segmenter.threshold)
            outs.append(item)
        return outs

    @staticmethod
    def _merge(result: _Result, chunk_outs: List[Tuple]) -> None:
        weights = torch.tensor([job[3] for job, _ in chunk_outs], dtype=torch.float32)
        for name in chunk_outs[0][1]["embeddings"]:
            embs = torch.stack([torch.nn.functional.normalize(o["embeddings"][name], dim=-1) for _, o in chunk_outs])
            result.embeddings[name] = (embs * weights[:, None]).sum(0) / weights.sum() if len(chunk_outs) > 1 \
                else chunk_outs[0][1]["embeddings"][name]
        for job, out in chunk_outs:
            result.keyword_ids += out.get("keyword_ids", [])
            end = job[2] + job[3] / SAMPLE_RATE
            result.fire_times += [min(job[2] + float(t), end) for t in out.get("fire_times", [])]

    # ------------------------------------------------------------------ public API
    @property
    def branches(self) -> List[str]:
        """Names ``branch=`` accepts: each branch, and "fused" for a hybrid model."""
        return self.model.embedding_names()

    def embed_speech(self, speech, sample_rate: int = SAMPLE_RATE, branch: Optional[str] = None,
                     normalize: bool = True, names: Optional[Sequence[str]] = None) -> torch.Tensor:
        """Utterance embedding(s): (E,) for one waveform, (B, E) for a list; ``branch`` defaults to the
        model's retrieval branch."""
        branch = branch or self.model.retrieval_branch
        if branch not in self.branches:
            raise ValueError(f"this model has no {branch!r} branch (it has {self.branches})")
        results, batched = self._run(speech, sample_rate, names)
        emb = torch.stack([r.embeddings[branch] for r in results])
        emb = torch.nn.functional.normalize(emb, dim=-1) if normalize else emb
        return emb if batched else emb[0]

    @torch.no_grad()
    def embed_images(self, images, normalize: bool = True) -> torch.Tensor:
        """Frozen CLIP image embedding(s) of PIL images or image paths: (E,) or (B, E)."""
        from PIL import Image

        from espnet_speechclip.clip_features import load_rgb

        items, batched = self._as_list(images) if isinstance(images, (list, tuple)) else ([images], False)
        pixels = torch.stack([self.clip.preprocess(item.convert("RGB") if isinstance(item, Image.Image)
                                                   else load_rgb(str(item), str(item))) for item in items])
        emb = self.clip.encode_image(pixels.to(self.device)).float().cpu()
        emb = torch.nn.functional.normalize(emb, dim=-1) if normalize else emb
        return emb if batched else emb[0]

    def embed_texts(self, texts: Union[str, Sequence[str]], normalize: bool = True) -> torch.Tensor:
        """Frozen CLIP text embedding(s): (E,) for a string, (B, E) for a list."""
        batched = not isinstance(texts, str)
        emb = self.clip.encode_text([texts] if not batched else list(texts)).float().cpu()
        emb = torch.nn.functional.normalize(emb, dim=-1) if normalize else emb
        return emb if batched else emb[0]

    def keywords(self, speech, sample_rate: int = SAMPLE_RATE) -> Union[List[Dict], List[List[Dict]]]:
        """Keywords of the cascaded branch as ``{"word", "token_id", "start", "end"}`` dicts; the time span
        (seconds) runs from the previous CIF firing to this one and is None for CLS-token models."""
        if self.model.cascaded is None:
            raise ValueError("this model has no cascaded branch, hence no keywords")
        results, batched = self._run(speech, sample_rate)
        out = []
        for r in results:
            spans = list(zip([0.0] + r.fire_times[:-1], r.fire_times)) if r.fire_times else [(None, None)] * len(r.keyword_ids)
            out.append([{"word": self.vocab_pieces[i], "token_id": self.token_ids[i], "start": s, "end": e}
                        for i, (s, e) in zip(r.keyword_ids, spans)])
        return out if batched else out[0]

    def segment_boundaries(self, speech, sample_rate: int = SAMPLE_RATE) -> Union[List[float], List[List[float]]]:
        """CIF firing times in seconds (segment ends) of a CIF (SpeechCLIP+) model."""
        if self.model.cascaded is None or not self.model.cascaded.segmenter.has_cif_weights:
            raise ValueError("this model has no CIF segmenter, hence no segment boundaries")
        results, batched = self._run(speech, sample_rate)
        out = [r.fire_times for r in results]
        return out if batched else out[0]

    def _search(self, query: torch.Tensor, gallery: torch.Tensor, k: int):
        scores = query @ torch.nn.functional.normalize(gallery.float(), dim=-1).T  # (B, N)
        top = scores.topk(min(k, gallery.size(0)), dim=-1)
        return [list(zip(i.tolist(), s.tolist())) for i, s in zip(top.indices, top.values)]

    def search_images(self, speech, gallery, k: int = 5, sample_rate: int = SAMPLE_RATE, branch: Optional[str] = None):
        """Speech -> image search: ``gallery`` is a list of images/paths or an (N, E) tensor of image
        embeddings; returns ``[(gallery index, cosine)]`` best first (a list of those for a list of audio)."""
        gallery = gallery if isinstance(gallery, torch.Tensor) else self.embed_images(list(gallery))
        query = self.embed_speech(speech, sample_rate, branch=branch)
        hits = self._search(query.reshape(-1, query.size(-1)), gallery, k)
        return hits if query.dim() == 2 else hits[0]

    def search_texts(self, speech, gallery, k: int = 5, sample_rate: int = SAMPLE_RATE, branch: Optional[str] = None):
        """Speech -> text search over a list of captions or an (N, E) tensor of CLIP text embeddings."""
        gallery = gallery if isinstance(gallery, torch.Tensor) else self.embed_texts(list(gallery))
        query = self.embed_speech(speech, sample_rate, branch=branch)
        hits = self._search(query.reshape(-1, query.size(-1)), gallery, k)
        return hits if query.dim() == 2 else hits[0]
