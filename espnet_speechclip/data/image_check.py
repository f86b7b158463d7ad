"""Stage 2 on the image side: every image a kept utterance points to is decoded once.

Stage 3 (CLIP image embeddings, the tiny CLIP's training) then sees only images that decode:
a missing, empty, truncated or corrupt image is reported and its utterances dropped; an image that
is not plain 8-bit RGB (grayscale, CMYK, palette, alpha, 16-bit) is converted and written as an RGB
PNG copy under ``<dump>/images/``, noted. Alpha is composited on white, as stage 3's loader does,
so that transparent regions do not turn black.
"""
from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageFile


@dataclass
class ImageResult:
    image_id: str
    path: Optional[str]  # None: unusable
    note: str = ""
    problem: str = ""


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (alpha on white; 16/32-bit grayscale scaled to its own range)."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() if arr.size and arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "P", "La", "RGBa"):
        img = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)
    return img.convert("RGB")


def check_image(image_id: str, path: str, out_dir: Path) -> ImageResult:
    """Decode one image fully; write an RGB copy to ``out_dir`` when its mode is not RGB."""
    source = Path(path)
    if not source.is_file():
        return ImageResult(image_id, None, problem=f"missing image {path}")
    if source.stat().st_size == 0:
        return ImageResult(image_id, None, problem=f"zero-byte image {path}")
    # A truncated JPEG/PNG only fails on load(), and only while this switch is off.
    truncated_ok, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with Image.open(source) as img:
            img.load()
            if img.width == 0 or img.height == 0:
                return ImageResult(image_id, None, problem=f"empty image ({img.width}x{img.height}) {path}")
            if img.mode == "RGB":
                return ImageResult(image_id, str(source.resolve()))
            mode = img.mode
            rgb = to_rgb(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return ImageResult(image_id, None, problem=f"unreadable image {path}: {err}")
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok
    out = out_dir / (image_id.replace("/", "_") + ".png")
    rgb.save(out)
    return ImageResult(image_id, str(out.resolve()), note=f"converted {mode} to RGB")


def _check_job(args: Tuple[str, str, Path]) -> ImageResult:
    return check_image(*args)


def check_images(img_scp: Dict[str, str], image_ids: List[str], out_dir: Path, nj: int = 1) -> Dict[str, ImageResult]:
    """Check ``image_ids`` (those of ``img_scp`` that kept utterances use); image id -> result."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(i, img_scp[i], out_dir) for i in sorted(image_ids)]
    if nj > 1 and len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(nj) as pool:
            results = pool.map(_check_job, jobs, chunksize=64)
    else:
        results = [check_image(*job) for job in jobs]
    return {r.image_id: r for r in results}
