"""The headless ImageClassifierCleaner: rank a folder's images by loss under a trained model."""
from __future__ import annotations

import html
from pathlib import Path

import torch

from .clean import write_review
from .data import image_files, label_items, read_labels
from .evaluate import predict_files
from ..model.export import learner_classes
from ..model.learner import load_model


def review(data: Path, model: Path, out: Path, labels_csv: Path, top: int = 100) -> tuple[Path, Path]:
    """Write the `top` highest-loss images (label vs. model) to out/review.csv and out/review.html; `labels_csv`, the
    cleaning CSV they are labelled by, is the one `apply_command` merges the marked sheet into."""
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
    then = (f"Mark each in review.csv's new_label column: a class name to relabel, <code>drop</code> to remove, "
            f"empty to keep. Then run <code>{html.escape(apply_command(out, model, labels_csv))}</code>, and train "
            f"again with <code>--labels {html.escape(str(labels_csv))}</code>.")
    return write_review(rows, data, out, then)


def apply_command(out: Path, model: Path, labels_csv: Path) -> str:
    """The command that merges the marked sheet in `out` into `labels_csv`, checked against `model`'s classes."""
    return f"python -m bear_classifier review --apply {Path(out) / 'review.csv'} --model {model} --labels {labels_csv}"
