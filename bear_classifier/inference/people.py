"""Whether a photo is mainly a person: the largest face OpenCV's Haar cascade finds, against the photo's size.

The model knows bears and "not a bear"; a visitor's first photo is often a selfie, which deserves "that looks like a
person" rather than a bare "not a bear". The cascade's model (`haarcascade_frontalface_alt2.xml`) ships inside the
`opencv-python-headless` wheel, so nothing is downloaded at run time. Its figures (people, bears, everyday photos,
time and memory) are in docs/model.md ("Photos of people").
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

CASCADE = "haarcascade_frontalface_alt2.xml"  # of the frontal cascades, the one with the fewest false faces
# The cascade reads a gray copy at most this long: a face that counts spans a fifth of it or more, so 128 px loses
# none and costs half of 256 px's time (docs/model.md).
SIDE = 128
SMALLEST = 0.15  # of the shorter side: smaller faces are never searched for (a person in a landscape, a crowd)
# A human face gathers many overlapping detections, the cascade's false faces (a cat's, a dog's, a bear's, a teddy's)
# few: at 10, 2 photos of cats and dogs keep a large face (13 at 6 on 256 px) and 314 of 504 photos of people do.
NEIGHBOURS = 10
MAIN = 0.2  # a face at least this share of the shorter side makes the photo "mainly a person" (docs/model.md)


@dataclass(frozen=True)
class Face:
    """A face's box, in fractions of the photo's width and height."""

    x: float
    y: float
    w: float
    h: float

    def share(self, width: int, height: int) -> float:
        """The face's side as a share of the photo's shorter side."""
        return self.w * width / min(width, height)

    def holds_person(self, box: Sequence[float]) -> bool:
        """`box` (left, top, right, bottom, in fractions of the photo) holds part of the face's width down to its
        centre or below: the face, or the body under it."""
        return box[0] <= self.x + self.w and self.x <= box[2] and box[3] >= self.y + self.h / 2


class PersonDetector:
    """Faces in a photo, and whether one is large enough to make the photo mainly a person."""

    def __init__(self, main: float = MAIN):
        import cv2  # a serving dependency, but only this wing needs it: imported where it is used

        cv2.setNumThreads(1)  # a kernel serves one visitor, one photo at a time (docs/performance.md)
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV's {CASCADE} could not be read: reinstall opencv-python-headless.")
        self.main, self._cv2, self._lock = main, cv2, threading.Lock()

    def faces(self, img: Image.Image) -> list[Face]:
        """The faces of `img` whose side is at least SMALLEST of its shorter side, largest first."""
        gray = img.convert("L")
        gray.thumbnail((SIDE, SIDE))
        pixels = self._cv2.equalizeHist(np.asarray(gray))
        h, w = pixels.shape
        side = max(12, min(h, w) * SMALLEST)
        with self._lock:  # one cascade, and OpenCV's isn't safe to run from two threads (the API's pool) at once
            boxes = self.cascade.detectMultiScale(pixels, scaleFactor=1.1, minNeighbors=NEIGHBOURS,
                                                  minSize=(int(side), int(side)))
        found = [Face(float(x / w), float(y / h), float(bw / w), float(bh / h))
                 for x, y, bw, bh in (boxes if len(boxes) else [])]
        return sorted(found, key=lambda f: -f.w * f.h)

    def face_share(self, img: Image.Image) -> float:
        """The largest face's side as a share of the photo's shorter side; 0 where there is none."""
        faces = self.faces(img)
        return faces[0].share(*img.size) if faces else 0.0

    def main_face(self, img: Image.Image) -> Face | None:
        """The face that makes the photo mainly a person (its side at least `main` of the shorter side), if any."""
        faces = self.faces(img)
        return faces[0] if faces and faces[0].share(*img.size) >= self.main else None

    def is_person(self, img: Image.Image) -> bool:
        """The photo is mainly a person: its largest face is at least `main` of its shorter side."""
        return self.main_face(img) is not None
