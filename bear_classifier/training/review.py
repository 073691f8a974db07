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
