"""The headless ImageClassifierCleaner: rank a folder's images by loss under a trained model."""
from __future__ import annotations

from pathlib import Path

import torch

from .clean import write_review
from .data import image_files, label_items, read_labels
from .evaluate import predict_files
from ..model.export import learner_classes
from ..model.learner import load_model


def review(data: Path, model: Path, out: Path, top: int = 100, labels_csv: Path | None = None) -> tuple[Path, Path]:
    """Write the `top` highest-loss images (label vs. model) to out/review.csv and out/review.html."""
    data = Path(data)
    learn = load_model(model)
    vocab, labels = list(learn.dls.vocab), learner_classes(learn).labels
    overrides = read_labels(labels_csv) if labels_csv and Path(labels_csv).exists() else None
    items = [(p, y) for p, y in label_items(data, image_files(data), overrides) if y in labels]
    probs = predict_files(learn, [p for p, _ in items])
    targets = torch.tensor([vocab.index(y) for _, y in items])
    losses = -probs[torch.arange(len(items)), targets].clamp_min(1e-12).log()
    rows = []
    for i in losses.argsort(descending=True)[:top].tolist():
        p = int(probs[i].argmax())
        rows.append(dict(file=items[i][0].relative_to(data).as_posix(), label=items[i][1], predicted=vocab[p],
                         probability=round(float(probs[i, p]), 4), loss=round(float(losses[i]), 4)))
    return write_review(rows, data, out)


def review_feedback(store, out: Path) -> tuple[Path, Path]:
    """The photos visitors flagged as wrong and nobody has reviewed yet, written to
    out/feedback/<their label>/flag-<id>.jpg and listed in out/review.csv and out/review.html (label = the visitor's
    answer, predicted = the model's).

    Decide on each with `review --feedback --accept ID` (and --accept-as, --reject, --delete; training/flags.py).
    """
    out = Path(out)
    rows = []
    for flag in (f for f in store.all() if not f.review):
        path = out / "feedback" / flag.label / f"flag-{flag.id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(flag.photo)
        rows.append(dict(file=path.relative_to(out).as_posix(), label=flag.label, predicted=flag.predicted,
                         probability=round(flag.probability, 4), loss=""))
    return write_review(rows, out, out)
