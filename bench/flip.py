"""Test-time flip at serving: the served model's answer on a photo and on its mirror image, averaged, against one pass.

Scored on the photos the shipped model never trained on: the hand-checked bears of data/valid.csv (by source
repository: the worst source is shown), the everyday photos of the subjects held out of training
(training.data.negatives_split), and the photos of people (data/people, by source repository); with the top-class
expected calibration error (10 bins) and the milliseconds per photo of each.
Usage: python -m bench.flip [--data ../shared/data] [--photos data/people/photos]
"""
from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from bench import ROOT


def ece(probs: np.ndarray, right: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of the top class: |accuracy − confidence| over equal-width bins, weighted."""
    conf, out = probs.max(1), 0.0
    for lo in np.linspace(0, 1, bins, endpoint=False):
        inside = (conf > lo) & (conf <= lo + 1 / bins)
        if inside.any():
            out += inside.mean() * abs(right[inside].mean() - conf[inside].mean())
    return float(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--photos", type=Path, default=ROOT / "data" / "people" / "photos")
    args = parser.parse_args()
    from bear_classifier.inference.images import open_image
    from bear_classifier.inference.predict import Classifier
    from bear_classifier.training.data import negatives_split, read_sources

    clf = Classifier.load(people=False)
    sources = read_sources(args.data / "bears") or {}
    rows = [dict(path=args.data / "bears" / r["file"], label=r["label"], part="bears", group=sources.get(r["file"], "?"))
            for r in csv.DictReader(open(ROOT / "data" / "valid.csv"))]
    _, held = negatives_split(sorted((args.data / "not_bear").glob("*.jpg")))
    rows += [dict(path=p, label=clf.classes.none_label, part="everyday", group="") for p in held]
    rows += [dict(path=args.photos / r["file"], label=clf.classes.none_label, part="people", group=r["group"])
             for r in csv.DictReader(open(ROOT / "data" / "people" / "SOURCES.csv")) if (args.photos / r["file"]).exists()]
    one, two, ms1, ms2 = [], [], [], []
    for r in rows:
        img = open_image(r["path"].read_bytes())
        start = time.perf_counter()
        p = clf.probabilities(img)
        ms1.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        q = (clf.probabilities(img) + clf.probabilities(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))) / 2
        ms2.append((time.perf_counter() - start) * 1000)
        one.append(p)
        two.append(q)
    vocab = clf.vocab
    truth = np.array([vocab.index(r["label"]) for r in rows])
    print(f"{len(rows)} photos; one pass vs the photo and its mirror averaged")
    print("part | photos | right, one pass | right, with its mirror | worst source, one / mirror")
    for part in ("bears", "everyday", "people"):
        idx = [i for i, r in enumerate(rows) if r["part"] == part]
        line = [f"{part} | {len(idx)}"]
        for probs in (one, two):
            right = sum(int(np.argmax(probs[i])) == truth[i] for i in idx)
            line.append(f"{right} ({100 * right / len(idx):.2f}%)")
        groups = defaultdict(list)
        for i in idx:
            groups[rows[i]["group"]].append(i)
        worst = [min(np.mean([int(np.argmax(probs[i])) == truth[i] for i in g]) for g in groups.values())
                 for probs in (one, two)]
        print(" | ".join(line) + f" | {100 * worst[0]:.2f}% / {100 * worst[1]:.2f}%")
    scored = [i for i, r in enumerate(rows) if r["part"] != "people"]
    for name, probs in (("one pass", one), ("with its mirror", two)):
        p = np.stack([probs[i] for i in scored])
        print(f"ECE, {name}: {100 * ece(p, p.argmax(1) == truth[scored]):.2f}% "
              f"(NLL {-np.mean(np.log(np.maximum(p[np.arange(len(p)), truth[scored]], 1e-12))):.4f})")
    print(f"ms per photo (median / 90th percentile): one pass {statistics.median(ms1):.1f} / "
          f"{np.percentile(ms1, 90):.1f}; with its mirror {statistics.median(ms2):.1f} / {np.percentile(ms2, 90):.1f}")
    changed = [i for i in range(len(rows)) if int(np.argmax(one[i])) != int(np.argmax(two[i]))]
    print("answers the mirror changes: " + ", ".join(
        f"{rows[i]['part']}/{rows[i]['path'].name} {vocab[truth[i]]}: {vocab[int(np.argmax(one[i]))]} → "
        f"{vocab[int(np.argmax(two[i]))]}" for i in changed))


if __name__ == "__main__":
    main()
