"""Stage 5 outputs: results.json, an ESPnet-style RESULTS.md, recall@k curves and CIF plots."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from espnet_speechclip.data.kaldi_dir import read_kaldi_map, read_word_align
from espnet_speechclip.evaluation import load_wav
from espnet_speechclip.plots import plot_boundary_f1_by_offset, plot_cif_firing, plot_recall_curves

logger = logging.getLogger(__name__)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _recall_row(name: str, result: Dict[str, float]) -> str:
    return f"|{name}|{_pct(result['r1'])}|{_pct(result['r5'])}|{_pct(result['r10'])}|"


MAX_SPEAKER_ROWS = 20  # a test split of a few voices gets a table; a many-speaker split one line


def _speaker_lines(by_speaker: Dict[str, Dict[str, float]]) -> List[str]:
    """Per-speaker speech→image R@1 (``utt2spk``): which voices the model fails on."""
    if not by_speaker:
        return []
    names = [k for k in next(iter(by_speaker.values())) if k != "num_utterances"]
    lines = ["", "## Speech→image R@1 per speaker", ""]
    if len(by_speaker) > MAX_SPEAKER_ROWS:
        per_speaker = sum(v["num_utterances"] for v in by_speaker.values()) / len(by_speaker)
        return lines + [f"{len(by_speaker)} speakers, {per_speaker:.1f} utterances each on average: more than "
                        f"{MAX_SPEAKER_ROWS} rows, so the figures are only in `results.json`."]
    lines += ["|speaker|utterances|" + "|".join(names) + "|", "|---|---|" + "---|" * len(names)]
    for spk, row in by_speaker.items():
        lines.append(f"|{spk}|{row['num_utterances']}|" + "|".join(_pct(row[n]) for n in names) + "|")
    return lines


def results_markdown(results: Dict, model_dir: str, data_dir: str, config: Optional[str] = None) -> str:
    lines = [f"# RESULTS: {Path(model_dir).name} on {data_dir}", "",
             f"- model: `{model_dir}`" + (f" (config `{config}`)" if config else "")
             + (f", checkpoint `{results['checkpoint']}`" if "checkpoint" in results else ""),
             f"- {results['num_utterances']} utterances, {results['num_images']} images; recalls in %", ""]
    lines += ["## Retrieval (R@1 / R@5 / R@10)", "", "|branch: direction|R@1|R@5|R@10|", "|---|---|---|---|"]
    for branch, res in results["branches"].items():
        for direction in ("speech_to_image", "image_to_speech", "speech_to_text", "text_to_speech"):
            if direction in res:
                lines.append(_recall_row(f"{branch}: {direction.replace('_', ' ')}", res[direction]))
    if "clip_text_to_image" in results:
        lines.append(_recall_row("frozen CLIP text→image (topline)", results["clip_text_to_image"]))
    chance = results["chance"]
    lines += ["", f"Chance: speech→image R@1 {_pct(chance['speech_to_image_r1'])}, "
                  f"R@10 {_pct(chance['speech_to_image_r10'])}."]
    if "clip_text_to_image" in results:
        top = results["clip_text_to_image"]["r1"]
        ratio = results["speech_to_image"]["r1"] / top if top > 0 else float("nan")
        which = results.get("retrieval_branch", "retrieval")
        lines.append(f"Speech→image R@1 of the model's retrieval embedding ({which}) is {ratio:.2f} × "
                     "the CLIP text→image topline.")
        if "bootstrap_ci95" in results:
            ci = results["bootstrap_ci95"]
            (s_lo, s_hi), (t_lo, t_hi) = ci["speech_to_image_r1"], ci["clip_text_to_image_r1"]
            ratio = ci["ratio_to_topline"]
            lines.append(f"95 % intervals over {ci['num_resamples']} bootstrap resamples of the images: "
                         f"speech→image R@1 {_pct(s_lo)}-{_pct(s_hi)}, topline {_pct(t_lo)}-{_pct(t_hi)}, "
                         + (f"ratio {ratio[0]:.2f}-{ratio[1]:.2f}." if ratio else "ratio undefined (topline 0)."))
    lines += _speaker_lines(results.get("speech_to_image_r1_by_speaker", {}))
    if "keyword" in results:
        kw, ch = results["keyword"], results["keyword_chance"]
        lines += ["", "## Keywords (cascaded branch)", "", "|metric|model|chance (random vocabulary tokens)|",
                  "|---|---|---|"]
        for key in ("precision", "recall", "f1"):
            lines.append(f"|{key}|{_pct(kw[key])}|{_pct(ch[key])}|")
        lines.append(f"|hit rate (top-5 per slot)|{_pct(kw['hit_rate'])}|-|")
        lines += ["", "|utterance|transcript|keywords|", "|---|---|---|"]
        for utt, ex in results.get("keyword_examples", {}).items():
            lines.append(f"|{utt}|{ex['transcript']}|{' '.join(ex['keywords'])}|")
    if "cif_boundary" in results:
        b, ch = results["cif_boundary"], results["cif_boundary_chance"]
        lines += ["", "## CIF word boundaries (±50 ms, fire time vs word end)", "",
                  "|metric|model|chance (uniform random times, same count)|", "|---|---|---|"]
        for key in ("precision", "recall", "f1"):
            lines.append(f"|{key}|{_pct(b[key])}|{_pct(ch[key])}|")
        lines.append(f"\nSegments per word: {results['segments_per_word']:.2f}.")
        if "cif_boundary_by_offset" in results:
            lag = results["cif_boundary_by_offset"]
            line = (f"Fire times shifted by a constant (diagnostic, chosen on this split, not a score): "
                    f"F1 peaks at {_pct(lag['best_f1'])} for a shift of {1000 * lag['best_offset_s']:+.0f} ms "
                    "(`cif_boundary_by_offset.png`).")
            if "evenly_spaced_best_f1" in lag:
                line += (f" Evenly spaced fires with the same count per utterance (a constant CIF weight) peak at "
                         f"{_pct(lag['evenly_spaced_best_f1'])} ({1000 * lag['evenly_spaced_best_offset_s']:+.0f} ms): "
                         "only a model peak above that one means the fires follow the words with a steady lag.")
            lines.append(line)
    lines += ["", "Plots: `recall_curves.png`, `cif_*.png` (CIF models)."]
    return "\n".join(lines) + "\n"


def write_report(evaluation: Dict, model_dir: str, data_dir: str, output_dir: str, num_cif_plots: int = 4,
                 config: Optional[str] = None) -> None:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = evaluation["results"]
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "RESULTS.md").write_text(results_markdown(results, model_dir, data_dir, config))
    plot_recall_curves(evaluation["curves"], out / "recall_curves.png", title=f"Recall@k on {Path(data_dir).name}")
    if "cif_boundary_by_offset" in results:
        lag = results["cif_boundary_by_offset"]
        plot_boundary_f1_by_offset(lag["offsets_s"], lag["f1"], results["cif_boundary_chance"]["f1"],
                                   out / "cif_boundary_by_offset.png", evenly_spaced_f1=lag.get("evenly_spaced_f1"),
                                   title=f"CIF fires vs word ends on {Path(data_dir).name}")
    speech = evaluation["speech"]
    align_path = Path(data_dir) / "word_align"
    if speech.alphas and align_path.is_file():
        align = read_word_align(align_path)
        wav_scp = read_kaldi_map(Path(data_dir) / "wav.scp")
        for i, utt in enumerate(speech.utts[:num_cif_plots]):
            plot_cif_firing(load_wav(utt, wav_scp[utt]), 16000, np.asarray(speech.alphas[i]), speech.frame_rates[i],
                            speech.fire_times[i], align.get(utt, []), out / f"cif_{utt}.png", title=f"CIF: {utt}")
    logger.info("wrote %s", out / "RESULTS.md")
