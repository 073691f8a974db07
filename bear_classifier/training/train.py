"""Build the learner, clean the labels, fine-tune with fastai, and evaluate with ClassificationInterpretation."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from fastai.callback.core import Callback
from fastai.callback.hook import hook_outputs
from fastai.vision.all import Learner, accuracy, set_seed
from torch import nn
from torch.nn import functional as F

from ..model import openset
from ..model.backbone import create_imagenet_model, normalization, split_imagenet_model
from ..classes import Classes
from .data import make_dataloaders
from .card import model_card
from .recipe import Recipe
from ..model.classifier import Frozen, GatedNet, class_head, gate_for, heads, pooled_views, splitter, view_features

# The class head's temperature, where the recipe gives none, is fitted on the validation photos and kept
# within these bounds: it may soften the head, never sharpen it. Fitted on a dozen photos and judged on a dozen
# others, sharpening (down to 0.25) doubled the negative log-likelihood and took more wrong answers past 95%
# (`python -m bench.temperature`: 0.51 against 0.32; 7 against 4 of 180): a few dozen validation photos, every one
# right, ask for certainty they cannot vouch for.
TEMPERATURE_BOUNDS = (1.0, 4.0)


class SpeciesLoss(nn.Module):
    """What training minimises: the class head's cross-entropy on the classes' photos, nothing on negatives.

    The model outputs log p for (classes..., none) = log softmax(head) + log p(in set), then log p(none).
    Subtracting the classes' logsumexp cancels log p(in set) exactly, so no gradient reaches the
    gate: "none of these" is the gate's business (for bears the ImageNet head's, held there by
    LearningWithoutForgetting: fine-tuning the gate on bears taught it that forests are bears). Per
    item (`reduction="none"`, fastai's top losses), the loss is that of the whole answer, gate included.
    With `negative_weight` (the recipe's; 0 as shipped), −weight · mean log p(none) over the batch's negatives is
    added: they push the tail to show the ImageNet gate less of a bear, and only they (docs/model.md).
    """

    def __init__(self, reduction: str = "mean", negative_weight: float = 0.0):
        super().__init__()
        self.reduction, self.negative_weight = reduction, negative_weight

    def forward(self, logp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.as_subclass(torch.Tensor).long()
        logp = logp.as_subclass(torch.Tensor)
        if self.reduction == "none":
            return F.nll_loss(logp, target, reduction="none")
        classes = logp[:, :-1] - logp[:, :-1].logsumexp(1, keepdim=True)
        in_set = target < classes.shape[1]
        loss = F.nll_loss(classes[in_set], target[in_set]) if in_set.any() else classes.sum() * 0
        weight = getattr(self, "negative_weight", 0.0)  # a learner pickled before this knob: none
        if weight and (~in_set).any():  # only the negatives push the gate, and only towards "none of these"
            loss = loss - weight * logp[~in_set, -1].mean()
        return loss

    def activation(self, logp: torch.Tensor) -> torch.Tensor:
        return logp.exp()

    def decodes(self, probs: torch.Tensor) -> torch.Tensor:
        return probs.argmax(-1)


def create_learner(dls, classes: Classes, recipe: Recipe = Recipe()) -> Learner:
    """`vision_learner` for this project: a GatedNet on the recipe's ImageNet-pretrained arch, frozen but for its head.

    The class head starts from ImageNet's own rows where the classes file names them (bears: brown
    bear, American black bear, teddy), so before any training it answers as the ImageNet classifier
    does; otherwise `probe_head` starts it from the photos. The gate reads ImageNet's rows where the recipe says
    so (`model.gate_for`); the network keeps `classes`, so an exported learner knows its own labels and words.
    """
    trunk, tail, imagenet = split_imagenet_model(create_imagenet_model(recipe.arch))
    model = GatedNet(trunk, tail, class_head(imagenet, [k.imagenet for k in classes.kinds]), imagenet)
    model.gate = gate_for(classes, model.imagenet, recipe.imagenet_gate, recipe.gate_sharpness)
    model.classes = classes
    loss = SpeciesLoss(negative_weight=recipe.negative_weight)
    learn = Learner(dls, model, loss_func=loss, metrics=accuracy, splitter=splitter)
    learn.freeze()
    return learn


def probe_head(learn, items: list[tuple[Path, str]], c: float = 0.5, views: torch.Tensor | None = None) -> bool:
    """Start the whole class head from a logistic regression on the pretrained network's features of `items`
    (`views`, its pooled views of them, where at hand) (linear probing, then fine-tuning: Kumar et al., 2022),
    unless every class has ImageNet rows to start from, or the items hold fewer than two classes (a
    cross-validation fold, after auto-clean).

    A fresh head starts at chance, and a small folder gives fine_tune few steps to leave it: on small folders
    the probe's start was clearly ahead (docs/model.md; `python -m bench.small_folders`). Returns whether it did."""
    from sklearn.linear_model import LogisticRegression

    if learn.model.classes.head_from_imagenet:
        return False
    targets = [learn.dls.vocab.o2i[y] for _, y in items]
    if len(set(targets)) < 2:
        return False
    if views is None:
        views, _ = view_features(learn, learn.dls.test_dl([p for p, _ in items]))
    probe = LogisticRegression(C=c, max_iter=2000).fit(views[:, 0].numpy(), targets)
    weight, bias = torch.as_tensor(probe.coef_).float(), torch.as_tensor(probe.intercept_).float()
    if len(probe.classes_) == 2:  # scikit-learn's binary model: one row, the logit of the second class
        weight, bias = torch.cat([-weight, weight]) / 2, torch.cat([-bias, bias]) / 2
    linear = learn.model.head[-1]
    with torch.no_grad():
        linear.weight[torch.as_tensor(probe.classes_)] = weight.to(linear.weight.device)
        linear.bias[torch.as_tensor(probe.classes_)] = bias.to(linear.bias.device)
    return True


class LearningWithoutForgetting(Callback):
    """Keep the ImageNet head's answers while the tail is fine-tuned (Li & Hoiem, 2016).

    Adds to the loss the KL divergence between the ImageNet head reading the tail being trained
    and reading a frozen copy of the original tail, on the same augmented batch (the classes' photos
    and negatives alike), in each of the five pooled views. The trunk is frozen, so both read
    the same trunk output and the copy costs a forward pass of the tail only. The copy is made when
    the callback is created, so one callback serves both of `fine_tune`'s fits.
    """

    order = 60  # after the loss is computed, before the backward pass

    def __init__(self, model: GatedNet, weight: float = 1.0, temperature: float = 2.0):
        self.teacher = Frozen(copy.deepcopy(model.tail))
        self.weight, self.temperature = weight, temperature

    def before_fit(self):
        self.teacher.to(self.dls.device)
        self.hooks = hook_outputs([self.learn.model.trunk, self.learn.model.tail], detach=False)

    def after_fit(self):
        self.hooks.remove()

    def after_loss(self):
        if not self.training:
            return
        trunk_out, fmap = self.hooks.stored
        imagenet, t = self.learn.model.imagenet, self.temperature
        with torch.no_grad():
            target = imagenet(pooled_views(self.teacher(trunk_out))).flatten(0, 1) / t
        student = imagenet(pooled_views(fmap)).flatten(0, 1) / t
        kl = F.kl_div(student.log_softmax(-1), target.log_softmax(-1), log_target=True, reduction="batchmean")
        self.learn.loss_grad = self.learn.loss_grad + self.weight * kl * t * t
        self.learn.loss = self.learn.loss_grad.clone()


def fine_tune(learn, epochs: int = 3, base_lr: float = 2e-3, freeze_epochs: int = 1, forget_weight: float = 1.0):
    """The lesson's `learn.fine_tune`: the head alone for `freeze_epochs`, then head and tail with
    discriminative learning rates, every batch augmented, the ImageNet head held by LwF."""
    lwf = LearningWithoutForgetting(learn.model, weight=forget_weight)
    learn.fine_tune(epochs, base_lr, freeze_epochs=freeze_epochs, cbs=[lwf])
    return learn


MIN_PHOTOS = 5  # per class: the fewest that leave photos on both sides of the split (50 or more learn well)


def check_items(items: list, classes: Classes, root: Path) -> None:
    """Refuse, in one line that says what to do, data a classifier can't be trained on."""
    from collections import Counter

    counts = Counter(y for _, y in items)
    if not counts:
        raise ValueError(f"No photos found in {root}: put each class's photos in {root}/<class>/ (JPEG, PNG...).")
    if len(classes.labels) < 2:
        raise ValueError(f"{root} has one class ({classes.labels[0]}): a classifier needs two or more; "
                         f"add a sub-folder of photos for each other class.")
    for label in classes.labels:
        if counts[label] < MIN_PHOTOS:
            raise ValueError(f"Class {label!r} has {counts[label]} usable photos in {root}/{label}: it needs at "
                             f"least {MIN_PHOTOS} (50 or more to learn well); add photos, or remove the folder.")


def labelled_items(root: Path, kept: list[Path], classes: Classes, labels_csv: Path | None = None,
                   valid_csv: Path | None = None, seed: int = 42) -> tuple[list, list, str]:
    """(train, valid, how it was split) for the photos `kept` by verify_photos: (path, label) lists, the
    folder's label unless the cleaning CSV says otherwise; see data.split_items for the validation set."""
    from .data import label_items, read_labels, read_sources, split_items

    relabel = read_labels(labels_csv) if labels_csv else None
    items = [(p, y) for p, y in label_items(root, kept, relabel) if y in classes.labels]
    check_items(items, classes, root)
    valid = set(read_labels(valid_csv)) if valid_csv else None
    train_idx, valid_idx, how = split_items(items, root, valid, read_sources(root), seed=seed)
    return [items[i] for i in train_idx], [items[i] for i in valid_idx], how


def with_negatives(train: list, valid: list, negatives: Path | None, none_label: str,
                   seed: int = 42) -> tuple[list, list]:
    """Add negatives (photos of none of the classes): a sample of half the subjects to training (what LwF
    keeps the ImageNet head on), a few hundred photos of the other half to validation (so the
    per-epoch metric sees the gate)."""
    from .data import image_files, negatives_split

    if negatives is None:
        return train, valid
    neg_train, neg_valid = negatives_split(image_files(negatives), seed=seed)
    neg_valid = neg_valid[::max(1, len(neg_valid) // 300)]
    return train + [(p, none_label) for p in neg_train], valid + [(p, none_label) for p in neg_valid]


def split_dataloaders(train: list, valid: list, **kwargs):
    """`make_dataloaders` over train + valid (path, label) lists, split where they meet."""
    return make_dataloaders(train + valid, (list(range(len(train))), list(range(len(train), len(train) + len(valid)))),
                            **kwargs)


def batch_size(n_train: int, bs: int = 64) -> int:
    """`bs`, or less for a small folder, so that an epoch is at least 8 steps: a fork's 100 photos in batches of
    64 made 4 updates in all (fastai drops the last, incomplete batch), and the class head barely moved from
    chance (docs/model.md)."""
    return max(4, min(bs, n_train // 8))


def train_model(root: Path, recipe: Recipe = Recipe(), classes: Classes | None = None, labels_csv: Path | None = None,
                valid_csv: Path | None = None, negatives: Path | None = None, items: list | None = None,
                valid_items: list | None = None):
    """The lesson-2 pipeline from folders to a trained learner, made as `recipe` says: verify, label, clean, fine-tune.

    train.ipynb runs the same steps one cell each. `classes` default to Classes.for_data(root).
    `negatives` is a folder of photos of none of the classes (see with_negatives). `items`/`valid_items`
    ((path, label) lists) replace the folders' own, for the cross-validation folds. A class head without ImageNet
    rows starts from a linear probe (`probe_head`; `recipe.probe=False` starts it at chance, for
    bench/small_folders.py). After fine-tuning, the "none of these" gate is fitted on the training photos' features
    and calibrated to keep `recipe.keep` of the validation photos, and the class head's temperature set
    (`head_temperature`, unless the recipe gives one). Returns (learn, card).
    """
    r = recipe
    from .clean import auto_clean
    from .data import image_files, verify_photos

    start, root = time.perf_counter(), Path(root)
    classes = classes or Classes.for_data(root)
    set_seed(r.seed, reproducible=True)
    report, how = None, "given"
    if items is None:
        report = verify_photos(image_files(root))
        print("verify:", report.summary())
        items, valid_items, how = labelled_items(root, report.kept, classes, labels_csv, valid_csv, r.seed)
    loaders = dict(vocab=classes.vocab, bs=batch_size(len(items), r.bs), size=r.size, stats=normalization(r.arch),
                   num_workers=r.workers)
    learn = create_learner(split_dataloaders(items, valid_items, **loaders), classes, r)
    views = None  # the pretrained network's views of the training photos: one pass for auto-clean and the probe
    if r.clean or (r.probe and not classes.head_from_imagenet):
        views, _ = view_features(learn, learn.dls.test_dl([p for p, _ in items]))
    dropped = auto_clean(learn, items, views) if r.clean else {}
    still = [i for i, (p, _) in enumerate(items) if p not in dropped]  # (`keep` is the gate's share)
    kept = [items[i] for i in still]
    probed = r.probe and probe_head(learn, kept, views=None if views is None else views[still])
    head_start = "linear probe" if probed else "ImageNet rows" if classes.head_from_imagenet else "random"
    learn.dls = split_dataloaders(*with_negatives(kept, valid_items, negatives, classes.none_label, r.seed), **loaders)
    fine_tune(learn, r.epochs, r.lr, freeze_epochs=r.freeze_epochs, forget_weight=r.forget_weight)
    fit_none_of_these(learn, kept, valid_items, r.keep)
    temperature = set_temperature(learn, classes, valid_items, r.temperature)
    card = model_card(learn, root, report, labels_csv, dropped, arch=r.arch, validation=how, bs=loaders["bs"],
                      head_start=head_start, temperature=temperature, recipe=r.card())  # the keys train.ipynb writes
    card["train_seconds"] = round(time.perf_counter() - start, 1)
    return learn, card


def fit_none_of_these(learn: Learner, train: list[tuple[Path, str]], valid: list[tuple[Path, str]],
                      keep: float | None = None) -> nn.Module:
    """Fit the "none of these" gate on the fine-tuned network from the photos of the classes (not the negatives),
    and put it in the learner's model (openset.fit_for_learner says how; bears keep ImageNet's rows). The gate."""
    learn.model.gate = openset.fit_for_learner(learn, train, valid, keep)
    return learn.model.gate


def set_temperature(learn: Learner, classes: Classes, valid: list[tuple[Path, str]],
                    temperature: float | None = None) -> float:
    """Set how sure the class head sounds, so that "0.97" is right 97% of the time: `temperature` where the recipe
    gives one, else head_temperature's. The temperature."""
    temperature = temperature or head_temperature(learn, classes, valid)
    learn.model.temperature.fill_(temperature)
    return temperature


def head_temperature(learn, classes: Classes, valid: list[tuple[Path, str]]) -> float:
    """How sure the class head sounds: the temperature under which the answers on the validation photos of the
    classes are most likely (calibrate.fit_temperature), within TEMPERATURE_BOUNDS. (The bear model's recipe gives
    its own, fitted on the grouped folds' unseen sources: `python -m bear_classifier cv`.)"""
    from ..model.calibrate import fit_temperature

    photos = [(p, y) for p, y in valid if y in classes.labels]
    if not photos:
        return 1.0
    logits, _ = heads(learn, [p for p, _ in photos])
    targets = torch.tensor([learn.dls.vocab.o2i[y] for _, y in photos])
    low, high = TEMPERATURE_BOUNDS  # (a clone outside inference mode: the fit takes gradients through the logits)
    return round(min(high, max(low, fit_temperature(logits.clone(), targets))), 3)
