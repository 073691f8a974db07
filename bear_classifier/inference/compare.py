"""The promotion gate: the served model and a candidate scored on the same evaluation photos, side by side.

The rule, as `models promote` prints it: a candidate is worse, and refused without --force, when it gets fewer of
the evaluation photos right than the served model, or when it gets fewer right in any one class (the "none of
these" photos included) by more than MAX_CLASS_DROP of that class's photos."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .answer import read_photo
from .images import ImageError

MAX_CLASS_DROP = 0.10
RULE = ("A candidate is refused (unless --force) when it gets fewer evaluation photos right than the served model, "
        f"or loses more than {MAX_CLASS_DROP:.0%} of any one class's photos, \"none of these\" included.")
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".avif"}


@dataclass
class Photo:
    key: str  # what the report calls it: the file relative to the folder, or "correction 12"
    label: str
    data: bytes


def folder_photos(root: Path) -> list[Photo]:
    """root/<label>/**/* as evaluation photos (the folder a deployer keeps; a class's photos at any depth)."""
    root = Path(root)
    return [Photo(p.relative_to(root).as_posix(), p.relative_to(root).parts[0], p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_EXTS
            and len(p.relative_to(root).parts) > 1]


@dataclass
class Score:
    version: str
    answers: dict[str, str]  # photo key → answered label
    probs: np.ndarray  # (photos, vocab)
    right: int = 0
    per_class: dict[str, tuple[int, int]] = field(default_factory=dict)  # label → (right, photos)
    ece: float = 0.0


def ece(probs: np.ndarray, targets: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error, as model/calibrate.py computes it, in numpy (serving has no torch)."""
    if not len(targets):
        return 0.0
    conf, pred = probs.max(1), probs.argmax(1)
    which = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        inside = which == b
        if inside.any():
            total += inside.sum() * abs(conf[inside].mean() - (pred[inside] == targets[inside]).mean())
    return float(total / len(targets))


def score(classifier, photos: list[Photo]) -> Score:
    vocab = list(classifier.vocab)
    probs, answers = np.zeros((len(photos), len(vocab))), {}
    for i, photo in enumerate(photos):
        probs[i] = classifier.probabilities(read_photo(photo.data))  # read as the page and the API read a photo
        answers[photo.key] = vocab[int(probs[i].argmax())]
    targets = np.array([vocab.index(p.label) for p in photos], dtype=int)
    s = Score(classifier.version, answers, probs, ece=ece(probs, targets))
    for photo in photos:
        right, n = s.per_class.get(photo.label, (0, 0))
        ok = answers[photo.key] == photo.label
        s.per_class[photo.label] = (right + ok, n + 1)
        s.right += ok
    return s


def usable(photos: list[Photo], vocab: list[str]) -> tuple[list[Photo], list[str]]:
    """The photos both models can be scored on, and a sentence for each left out (a label neither knows, no image)."""
    kept, left_out = [], []
    for p in photos:
        if p.label not in vocab:
            left_out.append(f"{p.key}: {p.label!r} is not one of the model's answers ({', '.join(vocab)})")
            continue
        try:
            read_photo(p.data)  # as score() reads it: a photo too small to tell is left out here, with why
        except ImageError as e:
            left_out.append(f"{p.key}: {e}")
            continue
        kept.append(p)
    return kept, left_out


@dataclass
class Verdict:
    served: Score
    candidate: Score
    worse: list[str]  # why the candidate is worse; empty: it may be promoted
    changed: list[tuple[str, str, str, str]]  # (photo, label, served's answer, candidate's answer)


def compare(served, candidate, photos: list[Photo]) -> Verdict:
    """Score both classifiers on `photos` (the same ones) and apply the rule above."""
    if list(served.vocab) != list(candidate.vocab):
        raise ValueError(f"The candidate answers {list(candidate.vocab)}, the served model {list(served.vocab)}: "
                         "versions of one page must have the same classes. Serve a model with other classes by "
                         "starting the servers with it (BEAR_MODEL), not by promoting it.")
    if not photos:
        raise ValueError("There are no evaluation photos to compare the models on: put some in the evaluation "
                         "folder, one subfolder per class (--eval DIR/<label>/*.jpg).")
    a, b = score(served, photos), score(candidate, photos)
    worse = []
    if b.right < a.right:
        worse.append(f"it gets {b.right} of {len(photos)} photos right, the served model {a.right}")
    for label, (right_a, n) in a.per_class.items():
        right_b = b.per_class[label][0]
        if (right_a - right_b) / n > MAX_CLASS_DROP:
            worse.append(f"{label}: {right_b} of {n} right, the served model {right_a}")
    changed = [(p.key, p.label, a.answers[p.key], b.answers[p.key]) for p in photos
               if a.answers[p.key] != b.answers[p.key]]
    return Verdict(a, b, worse, changed)


def report(v: Verdict, none_label: str) -> str:
    """The side-by-side table `models promote` prints."""
    a, b = v.served, v.candidate
    width = max([len(k) for k in a.per_class] + [len("answered none"), len(none_label) + 16]) + 2
    left, right = len("served " + a.version) + 2, len("candidate " + b.version) + 2
    lines = [f"{'':<{width}}{'served ' + a.version:>{left}}{'candidate ' + b.version:>{right}}"]

    def row(name: str, x: str, y: str) -> None:
        lines.append(f"{name:<{width}}{x:>{left}}{y:>{right}}")

    n = len(a.answers)
    row("photos right", f"{a.right}/{n} ({a.right / n:.1%})", f"{b.right}/{n} ({b.right / n:.1%})")
    for label in sorted(a.per_class, key=lambda k: (k == none_label, k)):
        (ra, m), (rb, _) = a.per_class[label], b.per_class[label]
        row(f"{label} (none of these)" if label == none_label else label, f"{ra}/{m}", f"{rb}/{m}")
    row("answered none", *(f"{sum(v == none_label for v in s.answers.values())}/{n}" for s in (a, b)))
    row("ECE", f"{a.ece:.3f}", f"{b.ece:.3f}")
    lines.append(f"{len(v.changed)} photo{'s' * (len(v.changed) != 1)} answered differently"
                 + (":" if v.changed else "."))
    for key, label, was, now in v.changed:
        mark = "fixed" if now == label else "broken" if was == label else "still wrong"
        lines.append(f"  {key} (is {label}): {was} -> {now}  [{mark}]")
    return "\n".join(lines)
