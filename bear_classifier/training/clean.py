"""Cleaning noisy labels without moving anyone's files: a label-override CSV, a review sheet, and auto-clean.

The shared pool is read-only, so cleaning decisions live in `data/cleaning.csv` (file,label;
an empty label drops the file), which training applies. `review` writes the images a model
finds most suspicious as an HTML contact sheet plus a CSV; a person fills in the `new_label`
column and `apply_review` merges it into the cleaning CSV. Before training, `auto_clean` drops the
photos the pretrained network contradicts.
"""
from __future__ import annotations

import csv
import html
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DROP = ""  # the label that means "remove from the data set"


def write_labels(path: Path, labels: dict[str, str]) -> None:
    """Write {file: label} as the cleaning CSV, sorted so diffs stay readable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label"])
        w.writerows(sorted(labels.items()))


def write_review(rows: list[dict], root: Path, out: Path, then: str, name: str = "review") -> tuple[Path, Path]:
    """Write out/<name>.csv and out/<name>.html for rows of {file, label, predicted, probability, loss}; `then` (HTML)
    says what to do with them.

    The CSV has an empty `new_label` column: write a class name to relabel, `drop` to remove,
    leave it empty to keep the label.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, html_path = out / f"{name}.csv", out / f"{name}.html"
    with open(csv_path, "w", newline="") as f:
        # Plain newlines: the sheet is marked by hand, often with sed or awk, which a "\r" at each line's end defeats.
        w = csv.DictWriter(f, ["file", "label", "predicted", "probability", "loss", "new_label"], lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "new_label": ""})
    cards = []
    for r in rows:
        src = os.path.relpath(Path(root) / r["file"], out)
        cards.append(
            f'<figure><img src="{html.escape(src)}" loading="lazy"><figcaption>{html.escape(r["file"])}<br>'
            f'label <b>{html.escape(r["label"])}</b>, model says {html.escape(r["predicted"])} '
            f'{float(r["probability"]):.2f}</figcaption></figure>'
        )
    html_path.write_text(
        "<!doctype html><meta charset=utf-8><title>Review</title><style>"
        "body{font-family:sans-serif} figure{display:inline-block;width:220px;margin:6px;vertical-align:top}"
        "img{width:220px;height:180px;object-fit:contain;background:#eee} figcaption{font-size:12px}</style>"
        f"<h1>{len(rows)} images to review</h1><p>{then}</p>" + "".join(cards)
    )
    return csv_path, html_path


def apply_review(review_csv: Path, labels_csv: Path, classes: list[str]) -> dict[str, str]:
    """Merge a marked-up review CSV into the cleaning CSV; returns the changes applied."""
    from .data import read_labels

    labels = read_labels(labels_csv) if Path(labels_csv).exists() else {}
    changes = {}
    with open(review_csv, newline="") as f:
        for row in csv.DictReader(f):
            mark = (row.get("new_label") or "").strip().lower()
            if not mark:
                continue
            if mark not in classes + ["drop"]:
                raise ValueError(f"{row['file']}: new_label {mark!r} is not one of {classes + ['drop']}")
            changes[row["file"]] = DROP if mark == "drop" else mark
    labels.update(changes)
    write_labels(labels_csv, labels)
    return changes


def suspicious_labels(learn, views: torch.Tensor, targets: torch.Tensor, min_prob: float = 0.1,
                      min_seen: float = 0.01) -> dict[int, str]:
    """Training items to drop automatically, {index: reason}, from two signals of the pretrained network:

    - with an ImageNetGate, its ImageNet head sees none of the classes' rows in any view (drawings,
      footprints, placeholders);
    - a linear probe on its features that never saw the item (k-fold cross-validation) gives its
      label < min_prob (brown bears filed under black/, plush toys under black/, cubs under teddy/...).
    These are computed on un-augmented images of the pretrained network, before any fine-tuning.
    """
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    from ..model.classifier import ImageNetGate

    gate, out = learn.model.gate, {}
    if isinstance(gate, ImageNetGate):
        with torch.inference_mode():
            seen = gate.scores(views.to(gate.thresholds.device)).sum(1).cpu()
        out = {i: "none of the classes seen by the backbone" for i in (seen < min_seen).nonzero().flatten().tolist()}
    folds = min(5, int(targets.bincount().min()))
    if folds < 2:
        return out
    oof = cross_val_predict(LogisticRegression(C=0.5, max_iter=2000), views[:, 0].numpy(), targets.numpy(),
                            cv=folds, method="predict_proba")
    labels = sorted(set(targets.tolist()))  # the probe's columns: the labels present
    vocab = list(learn.dls.vocab)
    for i, y in enumerate(targets.tolist()):
        if i not in out and oof[i, labels.index(y)] < min_prob:
            out[i] = f"label {vocab[y]} contradicted (probe says {vocab[labels[oof[i].argmax()]]})"
    return out


def auto_clean(learn, items: list, views: torch.Tensor | None = None) -> dict[Path, str]:
    """{path: why} for the training (path, label) items to drop (see suspicious_labels), from the untrained
    network's pooled views of them: `views` where they are at hand (train_model shares them with the probe)."""
    import torch

    from ..model.classifier import view_features

    if views is None:  # validation transforms: no augmentation
        views, _ = view_features(learn, learn.dls.test_dl([p for p, _ in items]))
    targets = torch.tensor([learn.dls.vocab.o2i[y] for _, y in items])
    dropped = suspicious_labels(learn, views, targets)
    print(f"auto-clean: dropped {len(dropped)} of {len(items)} training images")
    return {items[i][0]: why for i, why in dropped.items()}


def cleaner_changes(cleaner, root: Path, none_label: str | None = None) -> dict[str, str]:
    """fastai ImageClassifierCleaner's choices as cleaning-CSV entries (deletions and relabels). The cleaner offers
    every label of the model, "none of these" too: a photo of none of the classes is no training photo, so it is
    dropped, as `review --apply` asks to write it."""
    fns = cleaner.fns
    out = {Path(fns[i]).relative_to(root).as_posix(): DROP for i in cleaner.delete()}
    out.update({Path(fns[i]).relative_to(root).as_posix(): DROP if label == none_label else label
                for i, label in cleaner.change()})
    return out
