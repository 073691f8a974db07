"""Why "not a bear" is a gate on the ImageNet head, read on five views, and not a trained fourth class: the numbers.

Splits the not_bear photos by subject (file-name prefix) into halves: one half may be used for
training, the other is never seen. Compares, on the hand-checked bears (data/valid.csv), on every
bear photo as labelled (noisy: drawings, footprints...), and on the not-bear photos:
  - the ImageNet head's bear/teddy probability against thresholds, read on the whole picture, or in
    the best of five views (the whole and its four corners, model.pooled_views);
  - a fourth class trained on the same features with the seen half as negatives.
Usage: python bench/gate_study.py   (about 10 minutes on 2 CPU cores: it embeds ~6,000 photos)
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bear_classifier.training.data import CLASSES, image_files, read_labels, subject  # noqa: E402
from bear_classifier.model.learner import load_model  # noqa: E402
from bear_classifier.model.classifier import view_features  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def embed(learn, files: list[Path]) -> torch.Tensor:
    """Pooled views (N, 5, C) of each photo."""
    return view_features(learn, learn.dls.test_dl(files, num_workers=0))[0]


def fourth_class(train_x, train_y, test_x) -> torch.Tensor:
    """Logistic regression on the frozen features: species + not_bear, the usual recipe."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=0.5, max_iter=3000).fit(train_x.numpy(), train_y.numpy())
    return torch.tensor(clf.predict(test_x.numpy()))


def main() -> None:
    learn = load_model(ROOT / "export.pkl")
    net = learn.model
    valid = read_labels(ROOT / "data" / "valid.csv")
    valid_files = [DATA / "bears" / f for f in valid]
    train_files = [p for p in image_files(DATA / "bears") if f"{p.parent.name}/{p.name}" not in valid
                   and p.parent.name in CLASSES]
    neg_files = image_files(DATA / "not_bear")
    print(f"embedding {len(valid_files)} valid bears, {len(train_files)} training bears, {len(neg_files)} not_bear")
    fv, ft, fn = embed(learn, valid_files), embed(learn, train_files), embed(learn, neg_files)
    yv = torch.tensor([CLASSES.index(v) for v in valid.values()])
    yt = torch.tensor([CLASSES.index(p.parent.name) for p in train_files])

    print("\nThe ImageNet gate (no negatives seen), against all 3,406 not_bear photos:")
    print(f"{'read on':>12} {'wild thr':>9} {'teddy thr':>9} {'checked bears kept':>19} {'all bears kept':>15} "
          f"{'not_bear rejected':>18}")
    for name, views in [("whole photo", slice(0, 1)), ("five views", slice(0, 5))]:
        with torch.inference_mode():
            (wv, tv), (wt, tt), (wn, tn) = (net.bear_scores(f[:, views]) for f in (fv, ft, fn))
        for w_thr, t_thr in [(0.05, 0.02), (0.075, 0.03), (0.1, 0.04)]:
            kept = ((wv > w_thr) | (tv > t_thr)).float().mean()
            kept_all = ((torch.cat([wv, wt]) > w_thr) | (torch.cat([tv, tt]) > t_thr)).float().mean()
            rejected = ((wn <= w_thr) & (tn <= t_thr)).float().mean()
            print(f"{name:>12} {w_thr:>9} {t_thr:>9} {kept:>19.2%} {kept_all:>15.2%} {rejected:>18.2%}")

    print("\nFourth class trained on half the subjects, tested on the other half:")
    print(f"{'split':>5} {'held-out photos':>15} {'bears correct':>14} {'held-out rejected':>18}  most missed")
    subjects = [subject(p) for p in neg_files]
    for seed in range(3):
        held = torch.tensor([int(hashlib.md5(f"{s}{seed}".encode()).hexdigest(), 16) % 2 == 0 for s in subjects])
        x = torch.cat([ft[:, 0], fn[~held, 0]])
        y = torch.cat([yt, torch.full((int((~held).sum()),), len(CLASSES))])
        pv, pn = fourth_class(x, y, fv[:, 0]), fourth_class(x, y, fn[held, 0])
        missed = [s for s, h in zip(subjects, held.tolist()) if h]
        missed = [s for s, p in zip(missed, pn.tolist()) if p != len(CLASSES)]
        top = ", ".join(f"{s} {missed.count(s)}" for s in sorted(set(missed), key=missed.count, reverse=True)[:3])
        print(f"{seed:>5} {int(held.sum()):>15} {(pv == yv).float().mean():>14.2%} "
              f"{(pn == len(CLASSES)).float().mean():>18.2%}  {top}")


if __name__ == "__main__":
    main()
