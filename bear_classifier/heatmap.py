"""Where the model looked: a class activation map as a grayscale picture, and laid over the photo."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

# A dark-red → yellow ramp for the overlay: readable on most photos, and in grayscale too.
_RAMP = np.array([[0, 0, 0], [128, 0, 0], [230, 40, 0], [255, 160, 0], [255, 255, 120]], dtype=np.float32)


def heatmap_image(cam: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The map (h, w) stretched to 0-255 and resized to `size` (w, h): 8-bit grayscale, brighter = more evidence."""
    cam = np.asarray(cam, dtype=np.float32)
    span = float(cam.max() - cam.min())
    scaled = (cam - cam.min()) / span if span > 1e-12 else np.zeros_like(cam)
    return Image.fromarray((scaled * 255).round().astype(np.uint8), mode="L").resize(size, Image.BILINEAR)


def overlay(img: Image.Image, heat: Image.Image, alpha: float = 0.5) -> Image.Image:
    """The photo with the heatmap laid over it in colour (dark red = little evidence, yellow = most)."""
    levels = np.asarray(heat.resize(img.size, Image.BILINEAR), dtype=np.float32) / 255 * (len(_RAMP) - 1)
    low = np.floor(levels).astype(int).clip(0, len(_RAMP) - 2)
    frac = (levels - low)[..., None]
    colour = _RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac
    return Image.blend(img.convert("RGB"), Image.fromarray(colour.astype(np.uint8), "RGB"), alpha)


def jpeg(img: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
