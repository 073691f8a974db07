"""Leave-sources-out cross-validation: how the training recipe does on photos from sources it never saw.

A validation set drawn from the training sources measures memory of those sources (the same
photographers, the same search engine's taste). Here each fold holds out whole source
repositories (SOURCES.csv) and half of the not-bear subjects, fine-tunes on the rest with the
recipe `train_model` uses, and records what the held-out photos get. The out-of-fold answers
then give per-fold accuracy, the confusion matrix, the gate's two variants, and the temperature.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..model.calibrate import expected_calibration_error, fit_temperature, plot_reliability
from ..classes import Classes
from .data import grouped_folds, image_files, label_items, make_dataloaders, negatives_split, read_labels, read_sources, verify_photos
from .clean import suspicious_labels
from ..model.backbone import normalization
from ..model.classifier import answer_log_probs, heads, view_features
from .recipe import Recipe
from .train import create_learner, train_model


def four_way(species: torch.Tensor, gate: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The model's probabilities (N, K + 1) from its two heads' logits, at temperature T (see GatedNet.combine)."""
    return answer_log_probs(species / temperature, gate).exp()


def summarise(records: list[dict], temperature: float, classes: Classes) -> dict:
    """Accuracy (mean and worst fold, per class), the "not a bear" gate's two variants, ECE before/after T.

    Three sets of held-out bears are scored: the hand-checked ones (data/valid.csv: clean labels, the
    main figure), those the probe and the ImageNet head don't flag ("clean"), and all as labelled.
    """
    def share(hits: torch.Tensor, among: torch.Tensor | None = None) -> float:
        return round(float((hits if among is None else hits[among]).float().mean()), 4)

    folds = []
    for r in records:
        y, clean, checked = r["y"], r["clean"], r["checked"]
        right = four_way(r["species"], r["gate"]).argmax(1) == y
        right_frozen = four_way(r["species"], r["gate_original"]).argmax(1) == y
        species_right = r["species"].argmax(1) == y
        folds.append(dict(
            sources=r["sources"], n_hand_checked=int(checked.sum()), n_clean=int(clean.sum()), n_as_labelled=len(y),
            hand_checked_accuracy=share(right, checked), hand_checked_species_accuracy=share(species_right, checked),
            hand_checked_accuracy_frozen_copy=share(right_frozen, checked),
            accuracy_lwf=share(right, clean), not_bear_rejected_lwf=share(r["neg_gate"] < 0),
            accuracy_frozen_copy=share(right_frozen, clean), not_bear_rejected_frozen_copy=share(r["neg_gate_original"] < 0),
            species_accuracy=share(species_right, clean), accuracy_as_labelled=share(right),
            per_class={c: share(right, clean & (y == i)) for i, c in enumerate(classes.labels) if (clean & (y == i)).any()}))
    cat = {k: torch.cat([r[k] for r in records]) for k in ("y", "clean", "species", "gate")}
    clean = cat["clean"]
    before = four_way(cat["species"], cat["gate"])[clean]
    after = four_way(cat["species"], cat["gate"], temperature)[clean]
    pred = before.argmax(1)
    k = len(classes.vocab)
    confusion = torch.zeros(k, k, dtype=torch.long).index_put_((cat["y"][clean], pred), torch.ones_like(pred),
                                                               accumulate=True)
    keys = [k for k in folds[0] if k.startswith(("hand_checked", "accuracy", "not_bear", "species"))]
    return dict(
        folds=folds,
        mean={k: round(sum(f[k] for f in folds) / len(folds), 4) for k in keys},
        worst={k: min(f[k] for f in folds) for k in keys},
        confusion_clean=dict(classes=classes.vocab, rows_actual=confusion.tolist()),
        temperature=round(temperature, 3),
        ece_before=round(expected_calibration_error(before, cat["y"][clean]), 4),
        ece_after=round(expected_calibration_error(after, cat["y"][clean]), 4),
    ), (before, after, cat["y"][clean])


def cross_validate(root: Path, labels_csv: Path | None, valid_csv: Path | None, negatives: Path, out: Path,
                   n_folds: int = 5, classes: Classes | None = None, recipe: Recipe = Recipe()) -> dict:
    """Fine-tune once per fold of held-out source repositories; write out/cv.json and reliability diagrams."""
    start, root, out = time.perf_counter(), Path(root), Path(out)
    classes = classes or Classes.for_data(root)
    out.mkdir(parents=True, exist_ok=True)
    report = verify_photos(image_files(root))
    items = [(p, y) for p, y in label_items(root, report.kept, read_labels(labels_csv) if labels_csv else None)
             if y in classes.labels]
    sources = read_sources(root)
    if not sources:
        raise ValueError(f"Cross-validation holds out whole sources: {root}/SOURCES.csv (file,label,source_repo) "
                         f"is missing.")
    checked = set(read_labels(valid_csv)) if valid_csv else set()
    groups = [sources[p.relative_to(root).as_posix()] for p, _ in items]
    _, neg_held_out = negatives_split(image_files(negatives))
    # The untouched network, once: the "frozen copy" gate, and which held-out labels are clean enough to score.
    dls = make_dataloaders(items, (list(range(len(items))), []), classes.vocab, stats=normalization(recipe.arch))
    original = create_learner(dls, classes, recipe)
    views, targets = view_features(original, dls.test_dl([p for p, _ in items], with_labels=True))
    suspicious = suspicious_labels(original, views, targets)
    with torch.inference_mode():
        gate_original = original.model.cpu().gate(views)
        neg_gate_original = heads(original, neg_held_out)[1]
    records = []
    for k, (train_idx, valid_idx) in enumerate(grouped_folds(groups, n_folds)):
        held = sorted({groups[i] for i in valid_idx})
        print(f"fold {k + 1}/{n_folds}: holding out {', '.join(held)}")
        learn, _ = train_model(root, recipe.but(temperature=1.0), classes, negatives=negatives,
                               items=[items[i] for i in train_idx], valid_items=[items[i] for i in valid_idx])
        species, gate = heads(learn, [items[i][0] for i in valid_idx])
        records.append(dict(
            sources=held, species=species, gate=gate, gate_original=gate_original[valid_idx],
            y=torch.tensor([classes.labels.index(items[i][1]) for i in valid_idx]),
            clean=torch.tensor([i not in suspicious for i in valid_idx]),
            checked=torch.tensor([items[i][0].relative_to(root).as_posix() in checked for i in valid_idx]),
            files=[items[i][0].relative_to(root).as_posix() for i in valid_idx],
            neg_gate=heads(learn, neg_held_out)[1], neg_gate_original=neg_gate_original))
        print(json.dumps(summarise(records[-1:], 1.0, classes)[0]["folds"][0]), flush=True)
    species = torch.cat([r["species"] for r in records])
    ys = torch.cat([r["y"] for r in records])
    clean = torch.cat([r["clean"] for r in records])
    temperature = fit_temperature(species[clean], ys[clean])
    result, (before, after, y) = summarise(records, temperature, classes)
    result.update(n_folds=n_folds, bears=len(items), suspicious_excluded=len(suspicious),
                  not_bear_held_out=len(neg_held_out), seconds=round(time.perf_counter() - start, 1),
                  recipe=recipe.card())
    plot_reliability(before, y, out / "reliability_cv_before.png", title="Unseen sources, before temperature")
    plot_reliability(after, y, out / "reliability_cv_after.png", title=f"Unseen sources, T = {temperature:.2f}")
    (out / "cv.json").write_text(json.dumps(result, indent=2) + "\n")
    torch.save(records, out / "cv_out_of_fold.pt")  # every held-out answer, for any other figure
    return result
