"""Build the learner, train its head with fastai, evaluate, and export with a model card."""
from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path

import torch

from .data import CLASSES, make_dataloaders
from .model import OFFLINE_ARCH, BearNet, bear_splitter, create_imagenet_model, imagenet_classifier, lite0_weights_file
from .predict import save_torchscript


def create_learner(dls, arch: str = OFFLINE_ARCH, **gate):
    """A fastai vision learner whose model is a BearNet on an ImageNet-pretrained `arch`.

    vision_learner loads the body and adds the right input normalisation to `dls`; the ImageNet
    classifier it drops is taken back from the same weights to drive the "not a bear" gate.
    """
    from fastai.vision.all import accuracy, create_head, models, vision_learner

    imagenet = create_imagenet_model(arch)  # first, so missing weights fail with a clear message
    kwargs = dict(pretrained_cfg_overlay=dict(file=str(lite0_weights_file()))) if arch == OFFLINE_ARCH else {}
    nf = imagenet_classifier(imagenet).in_features
    head = create_head(nf, len(CLASSES), lin_ftrs=[], pool=False, ps=0.25)  # acts on pooled features
    learn = vision_learner(dls, arch if arch == OFFLINE_ARCH else getattr(models, arch),
                           n_out=len(CLASSES), custom_head=head, metrics=accuracy, **kwargs)
    learn.model = BearNet(learn.model[0], head, imagenet_classifier(imagenet), **gate)
    learn.splitter = bear_splitter
    learn.freeze()
    return learn


def pooled_features(learn, dl) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the frozen body once over `dl`: pooled features (N, C), and targets (N,) if `dl` has labels."""
    from fastprogress.fastprogress import progress_bar

    feats, targets = [], []
    with torch.inference_mode():
        for xb, *yb in progress_bar(dl, leave=False):
            feats.append(learn.model.features(xb).as_subclass(torch.Tensor))
            targets += [y.as_subclass(torch.Tensor) for y in yb]
    return torch.cat(feats), (torch.cat(targets) if targets else None)


def fit_head(learn, train: tuple, valid: tuple, epochs: int = 30, lr: float = 3e-3, wd: float = 0.1):
    """Train the species head with fastai on cached body features (seconds, not an hour).

    The body is frozen, so the features of an image never change: computing them once and
    training the head on them (fastai v0.7's `precompute=True`) gives the same model as
    passing every image through the body every epoch, at a fraction of the cost.
    """
    from fastai.vision.all import CrossEntropyLossFlat, DataLoaders, Learner, accuracy

    dls = DataLoaders.from_dsets(list(zip(*train)), list(zip(*valid)), bs=64, device="cpu")
    head_learn = Learner(dls, learn.model.head, loss_func=CrossEntropyLossFlat(), metrics=accuracy, wd=wd)
    head_learn.fit_one_cycle(epochs, lr)
    return head_learn


def evaluate(learn, dl=None, out: Path | None = None) -> dict:
    """Accuracy overall and per class on `dl` (default: the validation set), the errors, and,
    with `out`, confusion-matrix and top-losses PNGs there. One pass over the images."""
    dl = dl or learn.dls.valid.new(shuffle=False, drop_last=False)
    probs, targets, losses = (t.as_subclass(torch.Tensor) for t in learn.get_preds(dl=dl, with_loss=True))
    preds, vocab = probs.argmax(1), list(learn.dls.vocab)
    files = list(dl.items)
    confusion = torch.zeros(len(vocab), len(vocab), dtype=torch.long)
    for t, p in zip(targets.tolist(), preds.tolist()):
        confusion[t, p] += 1
    per_class = {vocab[c]: round(confusion[c, c].item() / confusion[c].sum().item(), 4)
                 for c in range(len(vocab)) if confusion[c].sum() > 0}
    errors = [dict(file=str(files[i]), label=vocab[targets[i]], predicted=vocab[preds[i]],
                   probability=round(probs[i, preds[i]].item(), 4))
              for i in losses.argsort(descending=True).tolist() if preds[i] != targets[i]]
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        plot_confusion(confusion, vocab, Path(out) / "confusion_matrix.png")
        plot_top_losses(files, probs, targets, losses, vocab, Path(out) / "top_losses.png")
    return dict(n=len(targets), accuracy=round((preds == targets).float().mean().item(), 4),
                per_class=per_class, confusion=confusion.tolist(), errors=errors)


def plot_confusion(confusion: torch.Tensor, vocab: list[str], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(confusion.numpy(), cmap="Blues")
    for (i, j), n in zip(torch.cartesian_prod(torch.arange(len(vocab)), torch.arange(len(vocab))).tolist(),
                         confusion.flatten().tolist()):
        ax.text(j, i, n, ha="center", va="center", color="white" if n > confusion.max() / 2 else "black")
    ax.set(xticks=range(len(vocab)), yticks=range(len(vocab)), xticklabels=vocab, yticklabels=vocab,
           xlabel="Predicted", ylabel="Actual", title="Confusion matrix")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def plot_top_losses(files: list, probs, targets, losses, vocab: list[str], path: Path, k: int = 9) -> None:
    import matplotlib.pyplot as plt
    from PIL import Image

    top = losses.argsort(descending=True)[:k].tolist()
    fig, axes = plt.subplots(3, 3, figsize=(10, 10))
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, top):
        p = probs[i].argmax().item()
        ax.imshow(Image.open(files[i]).convert("RGB"))
        ax.set_title(f"{vocab[targets[i]]} → {vocab[p]} {probs[i, p]:.2f}\nloss {losses[i]:.2f}", fontsize=9)
    fig.suptitle("Top losses: actual → predicted probability")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def library_versions() -> dict[str, str]:
    """Exact versions of everything the pickle in export.pkl depends on."""
    import fastai
    import fastcore
    import PIL
    import timm
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__.split("+")[0],
            "torchvision": torchvision.__version__.split("+")[0], "fastai": fastai.__version__,
            "fastcore": fastcore.__version__, "timm": timm.__version__, "pillow": PIL.__version__}


def export(learn, path: Path, card: dict) -> dict:
    """`learn.export()` to `path`, the TorchScript the app serves next to it (.pt), and the model card (.json)."""
    path = Path(path).resolve()
    learn.export(path)
    served = path.with_suffix(".pt")
    save_torchscript(learn, served)
    card = dict(card, file=path.name, sha256=sha256(path), size_mb=round(path.stat().st_size / 2**20, 2),
                serving=dict(file=served.name, sha256=sha256(served), size_mb=round(served.stat().st_size / 2**20, 2)),
                versions=library_versions(), classes=list(learn.dls.vocab))
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def suspicious_labels(learn, feats: torch.Tensor, targets: torch.Tensor, min_prob: float = 0.1,
                      min_bear: float = 0.01) -> dict[int, str]:
    """Training items to drop automatically, {index: reason}, from two independent signals:

    - the backbone's ImageNet head sees no bear at all (drawings, footprints, placeholders);
    - a linear probe that never saw the item (5-fold cross-validation) gives its label < min_prob
      (brown bears filed under black/, plush toys under black/, cubs under teddy/...).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    with torch.inference_mode():
        wild, teddy = learn.model.bear_scores(feats)
    probe = LogisticRegression(C=0.5, max_iter=2000)
    oof = cross_val_predict(probe, feats.numpy(), targets.numpy(), cv=5, method="predict_proba")
    vocab, out = list(learn.dls.vocab), {}
    for i, (y, w, t) in enumerate(zip(targets.tolist(), wild.tolist(), teddy.tolist())):
        if w + t < min_bear:
            out[i] = "no bear seen by the backbone"
        elif oof[i, y] < min_prob:
            out[i] = f"label {vocab[y]} contradicted (probe says {vocab[oof[i].argmax()]})"
    return out


def train_model(root: Path, labels_csv: Path | None = None, valid_csv: Path | None = None, arch: str = OFFLINE_ARCH,
                epochs: int = 30, lr: float = 3e-3, size: int = 224, bs: int = 64, seed: int = 42,
                auto_clean: bool = True, **gate):
    """The lesson-2 pipeline from folders to a trained learner: verify, clean, split, fit the head.

    Returns (learn, card): card holds the data counts and timings for the model card.
    """
    from fastai.vision.all import set_seed

    from .data import image_files, label_items, read_labels, split_items, verify_images

    start, root = time.perf_counter(), Path(root)
    set_seed(seed, reproducible=True)
    report = verify_images(image_files(root))
    print("verify:", report.summary())
    items = label_items(root, report.kept, read_labels(labels_csv) if labels_csv else None)
    items = [(p, y) for p, y in items if y in CLASSES]
    valid = set(read_labels(valid_csv)) if valid_csv else None
    splits = split_items(items, seed=seed, valid_files=valid, root=root)
    dls = make_dataloaders(items, splits, bs=bs, size=size)
    learn = create_learner(dls, arch, **gate)
    # Features of un-augmented images (test_dl applies validation transforms): the body is frozen,
    # so they are exactly what inference sees.
    train_feats = pooled_features(learn, dls.test_dl(dls.train.items, with_labels=True))
    valid_feats = pooled_features(learn, dls.test_dl(dls.valid.items, with_labels=True))
    dropped = suspicious_labels(learn, *train_feats) if auto_clean else {}
    keep = torch.tensor([i not in dropped for i in range(len(train_feats[0]))])
    print(f"auto-clean: dropped {len(dropped)} of {len(keep)} training images")
    fit_head(learn, (train_feats[0][keep], train_feats[1][keep]), valid_feats, epochs=epochs, lr=lr)
    label_of = dict(items)
    train_items = [(p, label_of[p]) for p in dls.train.items]
    kept = [item for item, k in zip(train_items, keep.tolist()) if k] + [items[i] for i in splits[1]]
    card = dict(
        arch=arch, size=size, epochs=epochs, lr=lr, seed=seed, gate=dict(
            wild_threshold=learn.model.wild_threshold, teddy_threshold=learn.model.teddy_threshold),
        data=dict(root=root.name, files=len(report.kept) + len(report.dropped), dropped_by_verify=len(report.dropped),
                  relabelled_or_dropped_by_hand=len(read_labels(labels_csv)) if labels_csv else 0,
                  dropped_by_auto_clean=len(dropped), train=int(keep.sum()), valid=len(splits[1]),
                  per_class={c: sum(1 for _, y in kept if y == c) for c in CLASSES}),
        auto_cleaned=sorted(f"{train_items[i][0].relative_to(root).as_posix()}: {why}" for i, why in dropped.items()),
        train_seconds=round(time.perf_counter() - start, 1),
        machine=f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
    )
    return learn, card
