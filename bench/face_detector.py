"""The person sentence's detector against a CNN one: OpenCV's Haar cascade (inference/people.py, shipped) beside the
ONNX model of Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB (MIT) on ONNX Runtime, on people, bears, teddies and
everyday photos: how many get a face of at least a fifth of the shorter side (what "mainly a person" needs).

The ONNX model is not shipped; bring it back with git at the commit data/people/SOURCES.csv lists for that repository:
  git init /tmp/rfb && git -C /tmp/rfb fetch --depth 1 \\
      https://github.com/Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB dffdddda9794a50607cba8f318507a28c1c27cab
  git -C /tmp/rfb show FETCH_HEAD:models/onnx/version-RFB-320_simplified.onnx > /tmp/rfb/rfb320.onnx
Usage: python -m bench.face_detector --model /tmp/rfb/rfb320.onnx   (about 3 minutes on 2 CPU cores)
"""
from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from bench import ROOT
from bench.people_answer import photo_list

SHARE = 0.2  # inference/people.py's MAIN: the face's side against the photo's shorter side
SCORES = (0.95, 0.995)  # the CNN's confidence: its own demo's 0.7 finds faces in most dogs


class CnnFaces:
    """The RFB-320 detector: a 320×240 squish of the photo, (pixels − 127) / 128, scores and corner boxes out."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.log_severity_level = 1, 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def best(self, img: Image.Image, share: float) -> float:
        """The highest face score among boxes whose side is at least `share` of the photo's shorter side."""
        x = (np.asarray(img.convert("RGB").resize((320, 240), Image.BILINEAR), dtype=np.float32) - 127) / 128
        scores, boxes = self.session.run(None, {"input": x.transpose(2, 0, 1)[None]})
        w, h = img.size
        side = np.minimum((boxes[0, :, 2] - boxes[0, :, 0]) * w, (boxes[0, :, 3] - boxes[0, :, 1]) * h) / min(w, h)
        big = scores[0, :, 1][side >= share]
        return float(big.max()) if big.size else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="version-RFB-320_simplified.onnx (see above)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--photos", type=Path, default=ROOT / "data" / "people" / "photos")
    args = parser.parse_args()
    from bear_classifier.inference.images import open_image
    from bear_classifier.inference.people import PersonDetector

    haar, cnn = PersonDetector(), CnnFaces(args.model)
    found, totals, seconds = Counter(), Counter(), Counter()
    for row in photo_list(args.data, args.photos, 1):
        kind = {"grizzly": "wild bear", "black": "wild bear"}.get(row["kind"], row["kind"])
        img = open_image(row["path"].read_bytes())
        totals[kind] += 1
        start = time.perf_counter()
        found[kind, "Haar cascade (shipped)"] += haar.face_share(img) >= SHARE
        seconds["haar"] += time.perf_counter() - start
        start = time.perf_counter()
        score = cnn.best(img, SHARE)
        seconds["cnn"] += time.perf_counter() - start
        for s in SCORES:
            found[kind, f"CNN, score ≥ {s}"] += score >= s
    n = sum(totals.values())
    kinds = ["person", "wild bear", "teddy", "not_bear"]
    print(f"photos with a face of at least {SHARE:.0%} of the shorter side; ms a photo: Haar "
          f"{1000 * seconds['haar'] / n:.1f}, CNN {1000 * seconds['cnn'] / n:.1f}")
    print("detector | " + " | ".join(f"{k} ({totals[k]})" for k in kinds))
    for name in ["Haar cascade (shipped)", *(f"CNN, score ≥ {s}" for s in SCORES)]:
        print(f"{name} | " + " | ".join(str(found[k, name]) for k in kinds))


if __name__ == "__main__":
    main()
