"""Where the model looked: a class activation map as a grayscale picture, and laid over the photo."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

# The overlay keeps the photo's own colours where the model looked and sinks the rest into a dark
# blue: a tint no bear, teddy or background shares, so a red teddy or a brown grizzly still reads
# (a red-yellow ramp vanished on them). It reads in grayscale too: bright = looked, dark = not.
_SHADE = np.array([8, 24, 64], dtype=np.float32)
_FLOOR = 0.15  # what is left of the photo where the model did not look at all: enough to see what it is


def heatmap_image(cam: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The map (h, w) stretched to 0-255 and resized to `size` (w, h): 8-bit grayscale, brighter = more evidence."""
    cam = np.asarray(cam, dtype=np.float32)
    span = float(cam.max() - cam.min())
    scaled = (cam - cam.min()) / span if span > 1e-12 else np.zeros_like(cam)
    return Image.fromarray((scaled * 255).round().astype(np.uint8), mode="L").resize(size, Image.BILINEAR)


def overlay(img: Image.Image, heat: Image.Image) -> Image.Image:
    """The photo lit where the model looked: full colour at the most evidence, dark blue where there was none."""
    weight = np.asarray(heat.resize(img.size, Image.BILINEAR), dtype=np.float32)[..., None] / 255
    weight = _FLOOR + (1 - _FLOOR) * weight
    photo = np.asarray(img.convert("RGB"), dtype=np.float32)
    return Image.fromarray((photo * weight + _SHADE * (1 - weight)).round().astype(np.uint8), "RGB")


def jpeg(img: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
