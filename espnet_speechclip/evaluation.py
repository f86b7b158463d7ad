"""Stage 5: run a trained model over any Kaldi-style data dir and compute the DESIGN §6 metrics.

Images and transcripts are embedded with the frozen CLIP named in the model's training config, so
a data dir the model has never seen works as long as it has wav.scp, utt2img, img.scp and text
(word_align is optional and enables CIF boundary F1).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import soundfile
import torch
from tqdm import tqdm

from espnet_speechclip.clip_adapter import FrozenCLIP
from espnet_speechclip.clip_features import load_image_batch
from espnet_speechclip.confidence import bootstrap_recalls, interval
from espnet_speechclip.data.audio_format import resample
from espnet_speechclip.data.kaldi_dir import read_kaldi_map, read_word_align
from espnet_speechclip.metrics import (boundary_f1, boundary_f1_by_offset, content_words, curve_from_ranks,
                                       evenly_spaced_times, first_relevant_rank, keyword_hit_rate, keyword_prf,
                                       recall_from_ranks, retrieval_ranks, retrieval_recall)

logger = logging.getLogger(__name__)
SAMPLE_RATE = 16000


def load_wav(utt: str, path: str) -> np.ndarray:
    """Mono float32 at 16 kHz; other rates are resampled; empty audio raises naming the utterance."""
    try:
        wav, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise ValueError(f"utterance {utt}: cannot read {path}: {err}") from err
    wav = wav.mean(axis=1)
    if rate != SAMPLE_RATE:
        wav = resample(wav, rate, SAMPLE_RATE)
    if wav.size == 0:
        raise ValueError(f"utterance {utt}: empty audio ({path})")
    return wav


@dataclass
class SpeechOutputs:
    """Per-utterance model outputs, in data-dir order."""
    utts: List[str]
    durations: List[float]
    embeddings: Dict[str, torch.Tensor] = field(default_factory=dict)  # branch -> (N, E)
    keyword_ids: List[List[int]] = field(default_factory=list)  # rows of the reduced vocabulary
    keyword_top5: List[List[List[int]]] = field(default_factory=list)
    fire_times: List[List[float]] = field(default_factory=list)  # seconds
    alphas: List[np.ndarray] = field(default_factory=list)
    frame_rates: List[float] = field(default_factory=list)  # frames per second per utterance


def cif_fire_times(alpha: np.ndarray, num_fires: int, hop: float, threshold: float = 1.0) -> List[float]:
    """Time at which the running α sum crosses each multiple of the threshold, inside its frame."""
    csum = np.cumsum(alpha)
    times = []
    for n in range(1, num_fires + 1):
        target = n * threshold
        frame = int(np.searchsorted(csum, target - 1e-9))
        if frame >= len(alpha):  # the tail fire: the end of the last frame
            times.append(len(alpha) * hop)
            continue
        before = csum[frame] - alpha[frame]
        frac = (target - before) / max(alpha[frame], 1e-12)
        times.append((frame + min(frac, 1.0)) * hop)
    return times


def r1_by_speaker(ranks: Dict[str, torch.Tensor], speakers: List[str]) -> Dict[str, Dict[str, float]]:
    """Speech→image R@1 of each embedding over each speaker's utterances:
    ``{speaker: {"num_utterances": n, <embedding>: R@1, ...}}``, speakers sorted.
    ``ranks[name][i]`` is the rank of utterance i's image, ``speakers[i]`` its speaker."""
    if any(len(r) != len(speakers) for r in ranks.values()):
        raise ValueError(f"r1_by_speaker: {len(speakers)} speakers for ranks of lengths "
                         f"{sorted({len(r) for r in ranks.values()})}")
    rows: Dict[str, List[int]] = {}
    for i, spk in enumerate(speakers):
        rows.setdefault(spk, []).append(i)
    out: Dict[str, Dict[str, float]] = {}
    for spk in sorted(rows):
        index = torch.tensor(rows[spk])
        out[spk] = {"num_utterances": len(rows[spk])}
        out[spk].update({name: recall_from_ranks(r[index], ks=(1,))["r1"] for name, r in ranks.items()})
    return out


@torch.no_grad()
def embed_speech(model, wav_scp: Dict[str, str], batch_seconds: float = 60.0, device: str = "cpu") -> SpeechOutputs:
    """Run ``model.encode_speech`` over all utterances in length-sorted batches."""
    model.eval()
    utts = list(wav_scp)
    waves = {u: load_wav(u, wav_scp[u]) for u in tqdm(utts, desc="stage 5: reading audio")}
    order = sorted(utts, key=lambda u: len(waves[u]))
    batches, current = [], []
    for utt in order:
        if current and (len(current) + 1) * len(waves[utt]) > batch_seconds * SAMPLE_RATE:
            batches.append(current)
            current = []
        current.append(utt)
    if current:
        batches.append(current)
    per_utt: Dict[str, dict] = {}
    for batch in tqdm(batches, desc="stage 5: embedding speech"):
        lengths = torch.tensor([len(waves[u]) for u in batch])
        speech = torch.zeros(len(batch), int(lengths.max()))
        for i, u in enumerate(batch):
            speech[i, : len(waves[u])] = torch.from_numpy(waves[u])
        out = model.encode_speech(speech.to(device), lengths.to(device))
        for i, u in enumerate(batch):
            item = {name: out[name]["embedding"][i].float().cpu() for name in model.embedding_names()}
            cascaded = out.get("cascaded")
            if cascaded is not None:
                n = int(cascaded["keyword_lengths"][i])
                sim = cascaded["keyword_similarity"][i, :n]
                item["keyword_ids"] = cascaded["keyword_indices"][i, :n].tolist()
                item["keyword_top5"] = sim.topk(min(5, sim.size(-1)), dim=-1).indices.tolist() if n else []
                if "alpha" in cascaded:
                    frames = int(cascaded["alpha_lengths"][i])
                    alpha = cascaded["alpha"][i, :frames].float().cpu().numpy()
                    hop = len(waves[u]) / SAMPLE_RATE / max(frames, 1)
                    item["alpha"], item["frame_rate"] = alpha, 1.0 / hop
                    item["fire_times"] = cif_fire_times(alpha, n, hop, model.cascaded.segmenter.threshold)
            per_utt[u] = item
    result = SpeechOutputs(utts=utts, durations=[len(waves[u]) / SAMPLE_RATE for u in utts])
    for name in model.embedding_names():
        result.embeddings[name] = torch.stack([per_utt[u][name] for u in utts])
    if model.cascaded is not None:
        result.keyword_ids = [per_utt[u]["keyword_ids"] for u in utts]
        result.keyword_top5 = [per_utt[u]["keyword_top5"] for u in utts]
        if "alpha" in per_utt[utts[0]]:
            result.alphas = [per_utt[u]["alpha"] for u in utts]
            result.frame_rates = [per_utt[u]["frame_rate"] for u in utts]
            result.fire_times = [per_utt[u]["fire_times"] for u in utts]
    return result


@torch.no_grad()
def embed_images_and_texts(clip: FrozenCLIP, img_scp: Dict[str, str], images: List[str], texts: List[str],
                           batch_size: int = 64):
    """Frozen CLIP embeddings of the distinct images and distinct transcripts."""
    image_emb, text_emb = [], []
    for s in tqdm(range(0, len(images), batch_size), desc="stage 5: embedding images"):
        chunk = images[s:s + batch_size]
        image_emb.append(clip.encode_image(load_image_batch(clip, [(i, img_scp[i]) for i in chunk])).float())
    for s in range(0, len(texts), 256):
        text_emb.append(clip.encode_text(texts[s:s + 256]).float())
    return torch.cat(image_emb), torch.cat(text_emb)


def evaluate(model, clip: FrozenCLIP, data_dir: str, vocab_pieces: Optional[List[str]] = None,
             boundary_tolerance: float = 0.05, seed: int = 0) -> Dict:
    """All DESIGN §6 metrics: ``{"results": dict, "speech": SpeechOutputs, "curves": recall@k curves}``."""
    data = Path(data_dir)
    wav_scp, utt2img, img_scp = (read_kaldi_map(data / n) for n in ("wav.scp", "utt2img", "img.scp"))
    text = read_kaldi_map(data / "text") if (data / "text").is_file() else {}
    missing = sorted(set(wav_scp) - set(utt2img))
    if missing:
        raise ValueError(f"{data}: utterances without utt2img entry: {missing[:10]}")
    speech = embed_speech(model, wav_scp)
    images = sorted({utt2img[u] for u in speech.utts})
    img_index = {img: n for n, img in enumerate(images)}
    utt2img_index = torch.tensor([img_index[utt2img[u]] for u in speech.utts])
    transcripts = sorted({text[u] for u in speech.utts if u in text}) if text else []
    image_emb, text_emb = embed_images_and_texts(clip, img_scp, images, transcripts or ["-"])

    results: Dict = {"num_utterances": len(speech.utts), "num_images": len(images), "branches": {}}
    curves: Dict[str, Dict[int, float]] = {}
    has_text = len(transcripts) > 0 and all(u in text for u in speech.utts)
    text_index = {t: n for n, t in enumerate(transcripts)}
    utt2text_index = torch.tensor([text_index[text[u]] for u in speech.utts]) if has_text else None
    max_k = min(50, len(images))
    speech_to_image_ranks = {}
    for name, emb in speech.embeddings.items():
        # One ranking per direction gives the recalls, the curve and (retrieval branch) the bootstrap hits.
        ranks = retrieval_ranks(emb, image_emb, utt2img_index)
        speech_to_image_ranks[name] = ranks["speech_to_image"]
        branch = {direction: recall_from_ranks(r) for direction, r in ranks.items()}
        if has_text:
            branch.update(retrieval_recall(emb, text_emb, utt2text_index,
                                           directions=("speech_to_text", "text_to_speech")))
        results["branches"][name] = branch
        curves[f"{name}: speech→image"] = curve_from_ranks(ranks["speech_to_image"], max_k)
        curves[f"{name}: image→speech"] = curve_from_ranks(ranks["image_to_speech"], max_k)
    results.update(results["branches"][model.retrieval_branch])
    results["retrieval_branch"] = model.retrieval_branch
    if (data / "utt2spk").is_file():
        utt2spk = read_kaldi_map(data / "utt2spk")
        unknown = [u for u in speech.utts if u not in utt2spk]
        if unknown:
            logger.warning("%s: %d utterances have no utt2spk entry (e.g. %s): no per-speaker recall",
                           data / "utt2spk", len(unknown), unknown[0])
        else:
            results["speech_to_image_r1_by_speaker"] = r1_by_speaker(
                speech_to_image_ranks, [utt2spk[u] for u in speech.utts])
    if has_text:
        # The frozen CLIP's own text→image retrieval of the transcripts: the ceiling for speech.
        image_of_text = {text[u]: img_index[utt2img[u]] for u in speech.utts}
        text2img = torch.tensor([image_of_text[t] for t in transcripts])
        # One ranking of the transcripts gives the topline's recalls, its curve and its bootstrap hits.
        text_ranks = first_relevant_rank(text_emb, image_emb, text2img)
        results["clip_text_to_image"] = recall_from_ranks(text_ranks)
        curves["CLIP text→image (topline)"] = curve_from_ranks(text_ranks, max_k)
        # Both recalls on the same image resamples, so that their ratio has an interval too.
        speech_hits = speech_to_image_ranks[model.retrieval_branch] == 1
        draws = bootstrap_recalls({"speech": (speech_hits, utt2img_index), "topline": (text_ranks == 1, text2img)},
                                  len(images), seed=seed)
        with np.errstate(invalid="ignore", divide="ignore"):  # a draw whose topline is 0 is left out
            ratio = draws["speech"] / draws["topline"]
        results["bootstrap_ci95"] = {"num_resamples": len(draws["speech"]),
                                     "speech_to_image_r1": interval(draws["speech"]),
                                     "clip_text_to_image_r1": interval(draws["topline"]),
                                     # None when the topline is 0 on every draw (a tiny split).
                                     "ratio_to_topline": interval(ratio) if np.isfinite(ratio).any() else None}
    if speech.keyword_ids and has_text and vocab_pieces is not None:
        predicted = [[vocab_pieces[i] for i in ids] for ids in speech.keyword_ids]
        references = [text[u] for u in speech.utts]
        results["keyword"] = keyword_prf(predicted, references)
        results["keyword"]["hit_rate"] = keyword_hit_rate(
            [[[vocab_pieces[i] for i in slot] for slot in utt] for utt in speech.keyword_top5], references)
        rng = np.random.default_rng(seed)
        chance = [[vocab_pieces[i] for i in rng.integers(0, len(vocab_pieces), len(ids))] for ids in speech.keyword_ids]
        results["keyword_chance"] = keyword_prf(chance, references)
        results["keyword_examples"] = {u: {"transcript": text[u], "keywords": p, "content_words": sorted(content_words(text[u]))}
                                       for u, p in list(zip(speech.utts, predicted))[:10]}
    if speech.fire_times and (data / "word_align").is_file():
        align = read_word_align(data / "word_align")
        refs = [[end for _, _, end in align.get(u, [])] for u in speech.utts]
        results["cif_boundary"] = boundary_f1(speech.fire_times, refs, tolerance=boundary_tolerance)
        rng = np.random.default_rng(seed)
        chance = [sorted(rng.uniform(0, d, len(f)).tolist()) for f, d in zip(speech.fire_times, speech.durations)]
        results["cif_boundary_chance"] = boundary_f1(chance, refs, tolerance=boundary_tolerance)
        results["segments_per_word"] = float(sum(map(len, speech.fire_times)) / max(1, sum(map(len, refs))))
        offsets = [round(0.01 * k, 2) for k in range(-20, 21)]
        by_offset = boundary_f1_by_offset(speech.fire_times, refs, offsets, tolerance=boundary_tolerance)
        steady = boundary_f1_by_offset(evenly_spaced_times([len(f) for f in speech.fire_times], speech.durations),
                                       refs, offsets, tolerance=boundary_tolerance)
        best, steady_best = int(np.argmax(by_offset)), int(np.argmax(steady))
        results["cif_boundary_by_offset"] = {"offsets_s": offsets, "f1": by_offset,
                                             "best_offset_s": offsets[best], "best_f1": by_offset[best],
                                             "evenly_spaced_f1": steady,
                                             "evenly_spaced_best_offset_s": offsets[steady_best],
                                             "evenly_spaced_best_f1": steady[steady_best]}
    results["chance"] = {"speech_to_image_r1": 1.0 / len(images), "speech_to_image_r10": min(1.0, 10.0 / len(images))}
    return {"results": results, "speech": speech, "curves": curves}
