"""How far a recall could move on another draw of the same kind of test images.

A split's captions come in clusters: every image has several spoken captions, so utterances are
not independent draws. The percentile bootstrap therefore resamples *images* (a cluster
bootstrap): resample b draws M of the M images with replacement, and a recall over those images is

    R_b = Σ_{m in draw b} hits_m / Σ_{m in draw b} queries_m,

where hits_m and queries_m count the hits and queries that belong to image m. Several recalls
(speech→image R@1 and the CLIP text→image topline) are computed on the *same* draws, so their
ratio gets an interval too. The interval is the [(1-level)/2, (1+level)/2] quantile range of R_b.
"""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import numpy as np
import torch


def per_image_counts(hits: torch.Tensor, image_index: torch.Tensor, num_images: int) -> Tuple[np.ndarray, np.ndarray]:
    """(hits per image, queries per image), both (M,), from per-query hits and image indices."""
    hits = torch.as_tensor(hits).reshape(-1).cpu().numpy().astype(np.float64)
    index = torch.as_tensor(image_index, dtype=torch.long).reshape(-1).cpu().numpy()
    if hits.shape != index.shape:
        raise ValueError(f"{hits.shape[0]} hits for {index.shape[0]} image indices")
    if index.size and (index.min() < 0 or index.max() >= num_images):
        raise ValueError(f"image indices must lie in [0, {num_images}), got [{index.min()}, {index.max()}]")
    return np.bincount(index, weights=hits, minlength=num_images), np.bincount(index, minlength=num_images)


def bootstrap_recalls(recalls: Mapping[str, Tuple[torch.Tensor, torch.Tensor]], num_images: int,
                      num_resamples: int = 1000, seed: int = 0) -> Dict[str, np.ndarray]:
    """Recall of every named query set on the same image resamples.

    Args:
        recalls: name -> (hits (Q,) bool or 0/1, image index (Q,) of each query).
        num_images: M, the images of the split (indices lie in [0, M)).

    Returns:
        name -> (num_resamples,) recalls. A draw without any query of a set gives NaN for it.
    """
    if num_images < 1 or num_resamples < 1:
        raise ValueError(f"need num_images >= 1 and num_resamples >= 1, got {num_images} and {num_resamples}")
    draws = np.random.default_rng(seed).integers(0, num_images, size=(num_resamples, num_images))
    # How often each image is drawn in each resample: (B, M), so sums over draws are matrix products.
    multiplicity = np.zeros((num_resamples, num_images))
    np.add.at(multiplicity, (np.arange(num_resamples)[:, None], draws), 1.0)
    out = {}
    for name, (hits, index) in recalls.items():
        hit_counts, query_counts = per_image_counts(hits, index, num_images)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = (multiplicity @ hit_counts) / (multiplicity @ query_counts)
    return out


def interval(samples: np.ndarray, level: float = 0.95) -> Tuple[float, float]:
    """Percentile interval of bootstrap samples (NaN draws left out)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        raise ValueError("no finite bootstrap sample")
    low, high = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
