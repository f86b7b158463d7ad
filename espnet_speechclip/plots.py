"""Evaluation plots: recall@k curves, a CIF firing diagram, boundary F1 by fire-time shift.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), never
through ``pyplot``: no display is needed and the process-wide backend is left alone.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]


def _save(fig: Figure, path: PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)
    logger.info("wrote %s", path)


def plot_recall_curves(
    curves: Mapping[str, Mapping[int, float]], path: PathLike, title: str = "Recall@k"
) -> None:
    """One line per curve (branch / direction): x = k, y = recall@k in [0, 1].

    Args:
        curves: name -> {k: recall}, e.g. from :func:`espnet_speechclip.metrics.recall_curve`.
        path: output image file (PNG by extension).
        title: figure title.
    """
    if not curves:
        raise ValueError("plot_recall_curves: no curves given")
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    max_k = 1
    for name, curve in curves.items():
        ks = sorted(curve)
        if not ks:
            raise ValueError(f"plot_recall_curves: curve {name!r} is empty")
        ax.plot(ks, [curve[k] for k in ks], marker="." if len(ks) <= 20 else None, label=name)
        max_k = max(max_k, ks[-1])
    if max_k > 20:
        ax.set_xscale("log")
    ax.set_xlim(1, max_k)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    _save(fig, path)


def plot_cif_firing(
    waveform: np.ndarray,
    sample_rate: int,
    alpha: np.ndarray,
    frame_rate_hz: float,
    fire_times: Sequence[float],
    word_boundaries: Sequence[Tuple[str, float, float]],
    path: PathLike,
    title: str = "CIF firing",
    threshold: float = 1.0,
) -> None:
    """Waveform with true word spans above, CIF weights and their running sum below.

    Args:
        waveform: (S,) samples.
        sample_rate: samples per second.
        alpha: (T,) CIF weight of each frame; frame t covers [t, t + 1) / frame_rate_hz.
        frame_rate_hz: frames per second of ``alpha`` (e.g. 50 for HuBERT).
        fire_times: seconds at which CIF fired (drawn as vertical lines on both panels).
        word_boundaries: (word, start_s, end_s) of the reference words (shaded, labelled).
        path: output image file.
        title: figure title.
        threshold: CIF threshold β; multiples of it are marked on the accumulated-weight axis.
    """
    waveform = np.asarray(waveform, dtype=np.float32).reshape(-1)
    alpha = np.asarray(alpha, dtype=np.float64).reshape(-1)
    if sample_rate <= 0 or frame_rate_hz <= 0:
        raise ValueError(f"rates must be positive, got {sample_rate} Hz and {frame_rate_hz} Hz")
    duration = max(len(waveform) / sample_rate, len(alpha) / frame_rate_hz, 1e-3)

    fig = Figure(figsize=(10, 5))
    ax_wav, ax_alpha = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1.2]})
    ax_wav.plot(np.arange(len(waveform)) / sample_rate, waveform, lw=0.5, color="0.3")
    peak = float(np.abs(waveform).max()) if len(waveform) else 1.0
    peak = peak or 1.0
    ax_wav.set_ylim(-1.15 * peak, 1.35 * peak)
    for i, (word, start, end) in enumerate(word_boundaries):
        for ax in (ax_wav, ax_alpha):
            ax.axvspan(start, end, color=f"C{i % 10}", alpha=0.15, lw=0)
        ax_wav.text((start + end) / 2, 1.2 * peak, word, ha="center", va="center", fontsize=8)
    ax_wav.set_ylabel("waveform")
    ax_wav.set_title(title)

    frame_start = np.arange(len(alpha)) / frame_rate_hz
    ax_alpha.bar(frame_start, alpha, width=1.0 / frame_rate_hz, align="edge", color="C0",
                 alpha=0.7, label="α per frame")
    ax_alpha.set_ylim(0, 1.05)
    ax_alpha.set_ylabel("α")
    ax_alpha.set_xlabel("time (s)")
    ax_acc = ax_alpha.twinx()
    accumulated = np.concatenate([[0.0], np.cumsum(alpha)])
    ax_acc.plot(np.arange(len(alpha) + 1) / frame_rate_hz, accumulated, color="C3",
                label="accumulated α")
    for level in np.arange(threshold, accumulated[-1] + 1e-9, threshold):
        ax_acc.axhline(level, color="C3", lw=0.5, ls=":")
    ax_acc.set_ylim(0, max(accumulated[-1], threshold) * 1.05)
    ax_acc.set_ylabel("accumulated α", color="C3")
    for i, t in enumerate(fire_times):
        ax_wav.axvline(t, color="k", lw=1.0, ls="--")
        ax_alpha.axvline(t, color="k", lw=1.0, ls="--", label="fire" if i == 0 else None)
    handles = ax_alpha.get_legend_handles_labels()
    acc_handles = ax_acc.get_legend_handles_labels()
    ax_alpha.legend(handles[0] + acc_handles[0], handles[1] + acc_handles[1], loc="upper left",
                    fontsize=8)
    ax_alpha.set_xlim(0, duration)
    fig.tight_layout()
    _save(fig, path)


def plot_boundary_f1_by_offset(offsets_s: Sequence[float], f1: Sequence[float], chance_f1: float,
                               path: PathLike, title: str = "Boundary F1 by shift",
                               evenly_spaced_f1: Optional[Sequence[float]] = None) -> None:
    """Boundary F1 of fire times shifted by each constant (ms on x), chance level as a line.

    Args:
        offsets_s: shifts in seconds added to every fire time.
        f1: boundary F1 at each shift, in [0, 1].
        chance_f1: F1 of random times (same count) at shift 0.
        path: output image file.
        title: figure title.
        evenly_spaced_f1: the same curve for evenly spaced fires (a constant CIF weight), the
            baseline a peak must beat to show word-locked fires.
    """
    if len(offsets_s) != len(f1) or not len(f1):
        raise ValueError(f"plot_boundary_f1_by_offset: {len(offsets_s)} offsets for {len(f1)} F1 values")
    if evenly_spaced_f1 is not None and len(evenly_spaced_f1) != len(f1):
        raise ValueError(f"plot_boundary_f1_by_offset: {len(evenly_spaced_f1)} evenly spaced F1 values for "
                         f"{len(f1)} offsets")
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    ms = 1000 * np.asarray(offsets_s, dtype=np.float64)
    ax.plot(ms, f1, marker=".", label="CIF fires")
    if evenly_spaced_f1 is not None:
        ax.plot(ms, evenly_spaced_f1, color="C1", ls=":", label="evenly spaced fires (constant α)")
    ax.axhline(chance_f1, color="0.5", ls="--", label="chance (random times)")
    ax.axvline(0.0, color="k", lw=0.5)
    ax.set_xlabel("shift added to every fire time (ms)")
    ax.set_ylabel("boundary F1 (±tolerance)")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    _save(fig, path)
