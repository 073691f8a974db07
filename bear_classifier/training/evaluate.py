"""Measure a learner: accuracy, confusion matrix, calibration and top losses, through fastai's ClassificationInterpretation."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from fastai.interpret import ClassificationInterpretation

from ..model.calibrate import expected_calibration_error, plot_reliability
from .data import image_files, negatives_split, read_labels, subject
from ..model.export import learner_classes
from ..inference.predict import read_card
from ..model.learner import load_model


def predict_files(learn, files: list[Path], bs: int = 64) -> torch.Tensor:
    """Class probabilities (N, C) for image files, batched through the learner's own transforms."""
    dl = learn.dls.test_dl(files, bs=bs, num_workers=0)
    probs, _ = learn.get_preds(dl=dl)
    return probs


def evaluate(learn, dl=None, out: Path | None = None) -> dict:
    """Accuracy overall and per class on `dl` (default: the validation set), the confusion matrix,
    expected calibration error, the errors; with `out`, fastai's confusion-matrix and top-losses
    plots and a reliability diagram there. One pass over the images, through ClassificationInterpretation."""
    dl = dl or learn.dls.valid.new(shuffle=False, drop_last=False)
    probs, targets, losses = (t.as_subclass(torch.Tensor).cpu() for t in learn.get_preds(dl=dl, with_loss=True))
    interp = ClassificationInterpretation(learn, dl, losses)
    vocab, files = list(learn.dls.vocab), list(dl.items)
    preds = probs.argmax(1)
    confusion = torch.zeros(len(vocab), len(vocab), dtype=torch.long).index_put_(
        (targets, preds), torch.ones_like(targets), accumulate=True)
    per_class = {vocab[c]: round(confusion[c, c].item() / confusion[c].sum().item(), 4)
                 for c in range(len(vocab)) if confusion[c].sum() > 0}
    errors = [dict(file=str(files[i]), label=vocab[targets[i]], predicted=vocab[preds[i]],
                   probability=round(probs[i, preds[i]].item(), 4))
              for i in losses.argsort(descending=True).tolist() if preds[i] != targets[i]]
    if out is not None:
        import matplotlib.pyplot as plt

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        interp.plot_confusion_matrix()  # a second pass over `dl`: fastai recomputes the matrix it draws
        plt.savefig(out / "confusion_matrix.png", bbox_inches="tight")
        interp.plot_top_losses(min(9, len(targets)), nrows=3 if len(targets) >= 9 else 1)
        plt.savefig(out / "top_losses.png", bbox_inches="tight")
        plt.close("all")
        plot_reliability(probs, targets, out / "reliability.png")
    return dict(n=len(targets), accuracy=round((preds == targets).float().mean().item(), 4), per_class=per_class,
                ece=round(expected_calibration_error(probs, targets), 4), confusion=confusion.tolist(), errors=errors)


def validation_files(learn, data: Path, valid_csv: Path | None, labels_csv: Path | None = None,
                     seed: int = 42) -> list[Path]:
    """The photos of `valid_csv`; without one, the validation part of `data` as training split it (same seed)."""
    if valid_csv:
        return [Path(data) / f for f in read_labels(valid_csv)]
    from .data import verify_photos
    from .train import labelled_items

    kept = verify_photos(image_files(data)).kept
    return [p for p, _ in labelled_items(Path(data), kept, learner_classes(learn), labels_csv, None, seed)[1]]


def evaluate_model(model: Path, data: Path, valid_csv: Path | None, negatives: Path | None = None,
                   out: Path | None = None, labels_csv: Path | None = None) -> dict:
    """`evaluate` for an exported learner on the validation photos plus the negatives of subjects it
    never trained on (see data.negatives_split), with which subjects it took for one of the classes."""
    learn = load_model(model)
    card = read_card(model)
    seed = (card.get("recipe") or {}).get("seed", card.get("seed", 42))  # the recipe's; older cards had it at the top
    files = validation_files(learn, data, valid_csv, labels_csv, seed)
    held_out = negatives_split(image_files(negatives))[1] if negatives and Path(negatives).is_dir() else []
    result = evaluate(learn, learn.dls.test_dl(files + held_out, with_labels=True), out)
    for error in result["errors"]:  # relative to the data folders: the card names no machine's paths
        error["file"] = Path(error["file"]).relative_to(Path(data).parent).as_posix()
    if held_out:
        none = learner_classes(learn).none_label
        missed = [Path(e["file"]) for e in result["errors"] if e["label"] == none]
        result[none] = dict(n=len(held_out), subjects=len({subject(f) for f in held_out}),
                                  rejected=result["per_class"][none],
                                  missed_by_subject=dict(Counter(subject(f) for f in missed).most_common()))
    return result
