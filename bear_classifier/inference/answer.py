"""Bytes to answer: the one path every photo takes, from the page, the HTTP API and the command line alike.

`read_photo` makes untrusted bytes the image the model reads (or raises ImageError, a sentence);
`answer` is where each answer is made. (Each answer is counted for /metrics where it is given out: the page
once its card is shown, page/app.py; the API once its JSON is made, api/service.py.)
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from PIL import Image

from .images import ImageError, open_image

if TYPE_CHECKING:  # numpy and the model's code: not imported before the page is up (page/widget.py imports this)
    from .predict import Prediction

log = logging.getLogger(__name__)

# The short side a photo is read at: more than a card's thumbnail (320) and the model's input (224), and 1/8 of a
# 12 MP phone photo's (3000 or 3024), so such a JPEG decodes at 1/8 scale, the fastest Pillow can (and the page's
# browser shrinks big photos to this side before sending them: docs/performance.md has the figures).
SHRINK_SIDE = 375
# What still comes with more pixels (a PNG, a browser that could not decode it) is scaled down to SHRINK_SIDE here:
# a small file of many pixels (a 148 KB PNG of 8000×6000) then costs its decoded 192 MB once, for a moment, not
# again in every copy made after (the model's resize).
KERNEL_SHRINK_PIXELS = 12_000_000
# A picture smaller than this shows too little to tell: a grizzly shrunk to 16 px, or a teddy to 24, is "Not a bear"
# for the model, said as surely as of a photo. It gets a sentence instead of an answer.
MIN_SIDE = 32


class Answers(Protocol):
    """What answers a photo: the ONNX Classifier, or the lesson's load_learner path (model/learner.py)."""

    def predict(self, img: Image.Image) -> "Prediction": ...


def read_photo(data: bytes) -> Image.Image:
    """The photo in `data` as the model reads it, upright RGB; ImageError (a sentence for a person) when it is not one,
    or too small to tell.

    Scaled down, never up, and never past KERNEL_SHRINK_PIXELS: a 210 KB PNG of 50×240,001 scaled to a 375 px
    short side would be 675 MP (5 GB).
    """
    img = open_image(data, min_side=SHRINK_SIDE)
    if img.width * img.height > KERNEL_SHRINK_PIXELS:
        scale = min(SHRINK_SIDE / min(img.size), (KERNEL_SHRINK_PIXELS / (img.width * img.height)) ** 0.5)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.BILINEAR, reducing_gap=2.0)
    if min(img.size) < MIN_SIDE:  # after that scaling, which can make a long thin strip this thin too
        raise ImageError(f"The image is too small to tell what it shows ({img.width}×{img.height} pixels; it needs at "
                         f"least {MIN_SIDE} on each side). Please upload a larger photo.", "too_small")
    return img


def answer(model: Answers, img: Image.Image) -> "Prediction":
    """The model's answer for one photo read by `read_photo`: every answer the project gives is made here."""
    return model.predict(img)


def answer_bytes(model: Answers, data: bytes) -> "tuple[Image.Image, Prediction]":
    """Bytes to answer in one call (the API and the command line): the photo as read, and the model's answer."""
    img = read_photo(data)
    return img, answer(model, img)
