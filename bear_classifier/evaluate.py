"""Measure an exported learner: species accuracy on the hand-checked bears, "not a bear" on everyday photos."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from .data import image_files, read_labels
from .predict import load_model


def predict_files(learn, files: list[Path], bs: int = 64) -> torch.Tensor:
    """Class probabilities (N, C) for image files, batched through the learner's own transforms."""
    dl = learn.dls.test_dl(files, bs=bs, num_workers=0)
    probs, _ = learn.get_preds(dl=dl)
    return probs


def subject(path: Path) -> str:
    """The subject of a not_bear photo, from its file name: `golden_retriever_3fa2c1.jpg` → golden_retriever."""
    return Path(path).stem.rsplit("_", 1)[0]


def evaluate_model(model: Path, data: Path, valid_csv: Path, negatives: Path | None = None) -> dict:
    """Accuracy on the clean validation bears and the share of non-bear photos answered "not_bear"."""
    learn = load_model(model)
    vocab = list(learn.dls.vocab)
    labels = read_labels(valid_csv)
    files = [Path(data) / f for f in labels]
    probs = predict_files(learn, files)
    preds = [vocab[i] for i in probs.argmax(1).tolist()]
    truth = list(labels.values())
    result = dict(bears=dict(
        n=len(files),
        accuracy=round(sum(p == t for p, t in zip(preds, truth)) / len(files), 4),
        per_class={c: round(sum(p == t for p, t in zip(preds, truth) if t == c) / truth.count(c), 4)
                   for c in sorted(set(truth))},
        answered_not_bear=sum(p == "not_bear" for p in preds),
        errors=[dict(file=f, label=t, predicted=p) for f, t, p in zip(labels, truth, preds) if p != t],
    ))
    if negatives is not None and Path(negatives).is_dir():
        neg_files = image_files(negatives)
        neg_preds = [vocab[i] for i in predict_files(learn, neg_files).argmax(1).tolist()]
        missed = [f for f, p in zip(neg_files, neg_preds) if p != "not_bear"]
        result["not_bear"] = dict(
            n=len(neg_files), subjects=len({subject(f) for f in neg_files}),
            rejected=round(1 - len(missed) / len(neg_files), 4),
            missed_by_subject=dict(Counter(subject(f) for f in missed).most_common()),
        )
    return result
