"""The network: an ImageNet CNN whose late layers are fine-tuned, a class head, and a pluggable gate.

The ImageNet network is cut in two. The trunk (early layers: edges, textures) stays frozen; the
tail (late layers: parts, objects) is fine-tuned with the class head. The gate answers "does the
photo show one of the classes at all?" from the pooled views (the whole picture and its four
corners). For bears it reads the network's own ImageNet head (`ImageNetGate`): its bear and teddy
classes, in the most convincing view, so a bear beside a car or a house is not outvoted by them.
Fine-tuning moves the tail, so while it trains, `train.LearningWithoutForgetting` holds the ImageNet
head's answers to those of a frozen copy of the original tail; one forward pass then still serves
the class head, the gate and the heatmaps.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from . import GateGroup

# The gate's logit is bounded to ±9, so no answer is ever certain: p <= 99.99%. A gate measures how much a photo
# looks like the classes, not how sure that makes it; and a page that shows 100% claims too much.
LOGIT_BOUND = 9.0


class Frozen(nn.Module):
    """Wraps a module that must never change: no gradients, BatchNorm always in eval mode."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "Frozen":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def class_head(imagenet: nn.Linear, rows: Sequence[Sequence[int]], ps: float = 0.25) -> nn.Sequential:
    """Dropout and a linear layer with one output per class. A class that names ImageNet rows
    (`classes.Kind.imagenet`) starts from their mean, so before any training it already answers as
    the ImageNet classifier does; any other class starts from nn.Linear's usual initialisation."""
    linear = nn.Linear(imagenet.in_features, len(rows))
    with torch.no_grad():
        for i, ids in enumerate(rows):
            if ids:
                linear.weight[i] = imagenet.weight[list(ids)].mean(0)
                linear.bias[i] = imagenet.bias[list(ids)].mean()
    return nn.Sequential(nn.Dropout(ps), linear)


def pooled_views(fmap: torch.Tensor) -> torch.Tensor:
    """Pooled features (N, 5, C) of the whole picture and of its four corner windows (4/7 of each side).

    Averaged features are what the ImageNet head was trained to read, and averaging over a window is
    close to reading a crop of the photo, without another forward pass. A bear that fills a corner
    of a garden, a road or a car park gets a view where it is the main subject (docs/model.md).
    """
    h, w = (int(n) for n in fmap.shape[-2:])  # plain ints: the ONNX export fixes the input size anyway
    kh, kw = corner_size(h, w)
    corners = [fmap[..., :kh, :kw], fmap[..., :kh, w - kw:], fmap[..., h - kh:, :kw], fmap[..., h - kh:, w - kw:]]
    return torch.stack([fmap.mean((2, 3))] + [c.mean((2, 3)) for c in corners], dim=1)


def corner_size(h: int, w: int) -> tuple[int, int]:
    """A corner window's height and width on a feature map of h x w: 4/7 of each side."""
    return max(1, round(h * 4 / 7)), max(1, round(w * 4 / 7))


def view_boxes(h: int, w: int) -> list[list[float]]:
    """Where each of `pooled_views`' five views lies in the photo, as (left, top, right, bottom) fractions: what the
    server needs to know which views show a face (inference/predict.py)."""
    kh, kw = corner_size(h, w)
    left, top = [0.0, 1 - kw / w], [0.0, 1 - kh / h]
    return [[0.0, 0.0, 1.0, 1.0]] + [[x, y, x + kw / w, y + kh / h] for y in top for x in left]


def bounded_view_logits(gate: nn.Module, views: torch.Tensor) -> torch.Tensor | None:
    """The gate's logit per view (N, V), bounded as the answers are, for a gate that reads each view (ImageNetGate);
    None for any other. A server leaves a view out with it (inference/predict.py)."""
    return gate.view_logits(views).clamp(-LOGIT_BOUND, LOGIT_BOUND) if hasattr(gate, "view_logits") else None


def gate_views(h: int, w: int) -> dict:
    """What a server needs beside `bounded_view_logits`, for a feature map of h x w: where each view lies in the
    photo, and the bound of its logit."""
    return dict(boxes=view_boxes(h, w), bound=LOGIT_BOUND)


def view_features(learn, dl) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One pass of the network over `dl`: its pooled views (N, 5, C; model.pooled_views), and targets (N,) if labelled."""
    from fastprogress.fastprogress import progress_bar

    views, targets = [], []
    learn.model.to(dl.device).eval()
    with torch.inference_mode():
        for xb, *yb in progress_bar(dl, leave=False):
            views.append(pooled_views(learn.model.feature_map(xb)).as_subclass(torch.Tensor).cpu())
            targets += [y.as_subclass(torch.Tensor).cpu() for y in yb]
    return torch.cat(views), (torch.cat(targets) if targets else None)


def heads(learn, files: list, bs: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(class logits at temperature 1 (N, K), gate logits (N,)) of `learn`'s network for image files."""
    views, _ = view_features(learn, learn.dls.test_dl(files, bs=bs))
    model = learn.model.cpu().eval()
    with torch.inference_mode():
        return model.head(views[:, 0]), model.gate(views)


class NoGate(nn.Module):
    """A placeholder for a network without a fitted gate: every photo shows one of the classes, as surely as any
    answer is shown (the bound on the gate's logit)."""

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return views.new_full(views.shape[:1], LOGIT_BOUND)

    def card(self) -> dict:
        return dict(kind="none: every photo is one of the classes")


class ImageNetGate(nn.Module):
    """p(one of the classes) from the ImageNet head on each of the five `pooled_views`.

    Each group of ImageNet rows (for bears: the four wild bears; teddy) has its own threshold on its
    probability mass, in the most convincing view; p = 0.5 exactly at a threshold. Bears need two
    groups: a teddy is rarely the top class of a toy photo (toyshop, piggy bank...), while a little
    wild-bear mass shows up in many forest scenes. A group's `corners` divides the mass it reads in a
    corner view: four corners are four more chances for a dark dog, a forest or a snowy glacier to
    show a little wild bear, where a bear filling a corner shows it plainly (docs/model.md).
    """

    corners: Sequence[float] = ()  # a network exported before this setting: its corners count as the whole photo

    def __init__(self, imagenet: nn.Module, groups: Sequence[tuple[Sequence[int], float]], sharpness: float = 2.0,
                 corners: Sequence[float] = ()):
        super().__init__()
        self.imagenet = imagenet  # the network's own frozen ImageNet head (the same module, not a copy)
        self.rows = [list(ids) for ids, _ in groups]
        self.register_buffer("thresholds", torch.tensor([t for _, t in groups]))
        self.sharpness, self.corners = sharpness, list(corners)

    def view_mass(self, views: torch.Tensor) -> torch.Tensor:
        """ImageNet probability mass (N, V, groups) on each group's rows in each view of `views` (N, V, C); a corner
        view's mass divided by its group's `corners`."""
        probs = self.imagenet(views).softmax(-1)
        mass = torch.stack([probs[..., ids].sum(-1) for ids in self.rows], dim=-1)  # (N, V, groups)
        if self.corners:
            mass = torch.cat([mass[:, :1], mass[:, 1:] / mass.new_tensor(self.corners)], dim=1)
        return mass

    def scores(self, views: torch.Tensor) -> torch.Tensor:
        """ImageNet probability mass (N, groups) on each group's rows, each in its best view."""
        return self.view_mass(views).amax(1)

    def view_logits(self, views: torch.Tensor) -> torch.Tensor:
        """The gate's logit (N, V) as each view alone would give it: the server may leave a view out (a corner
        showing a large face, inference/predict.py) by taking the largest of the others."""
        ratio = (self.view_mass(views) / self.thresholds).amax(-1)
        return self.sharpness * ratio.clamp_min(1e-12).log()

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        """Logit of p(one of the classes): positive when any group's mass clears its threshold, in any view."""
        return self.view_logits(views).amax(1)

    def card(self) -> dict:
        corners = self.corners or [1.0] * len(self.rows)
        return dict(kind="imagenet", sharpness=self.sharpness,
                    groups=[dict(rows=ids, threshold=round(float(t), 6), corners=c)
                            for ids, t, c in zip(self.rows, self.thresholds, corners)])


class GatedNet(nn.Module):
    """Outputs log-probabilities for (*classes, none of these).

    p(class_i) = p(in set) * softmax(head / temperature)_i and p(none) = 1 - p(in set). The class head
    reads the whole picture; `gate` maps the pooled views (N, V, C) to the logit of p(in set) (N,).
    The output is log p, so fastai's cross-entropy, argmax decoding and `learn.predict` work as for
    any classifier. `temperature` is fitted after training (calibrate.py). The frozen ImageNet head
    stays in the network whatever the gate: LearningWithoutForgetting holds the tail to it.
    """

    def __init__(self, trunk: nn.Module, tail: nn.Module, head: nn.Sequential, imagenet: nn.Linear,
                 gate: nn.Module | None = None):
        super().__init__()
        self.trunk, self.tail, self.head, self.imagenet = Frozen(trunk), tail, head, Frozen(imagenet)
        self.gate = gate if gate is not None else NoGate()
        self.register_buffer("temperature", torch.tensor(1.0))

    def train(self, mode: bool = True) -> "GatedNet":
        """Train mode, except that every BatchNorm keeps ImageNet's statistics: batches of a few classes
        would re-estimate them for those alone, and the ImageNet head (LwF, a gate) reads through them."""
        super().train(mode)
        for m in self.tail.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional features (N, C, h, w): what the heads read, and what the heatmap shows."""
        return self.tail(self.trunk(x))

    def class_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features) / self.temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(pooled_views(self.feature_map(x)))

    def combine(self, views: torch.Tensor) -> torch.Tensor:
        """Log-probabilities from `views` (N, V, C): the class head on the whole picture (view 0),
        weighted by the gate on every view."""
        return answer_log_probs(self.class_logits(views[:, 0]), self.gate(views))

    def class_maps(self, fmap: torch.Tensor) -> torch.Tensor:
        """Class activation maps (N, classes + 1, h, w), fastbook chapter 18: where each class's evidence lies.

        The class head is linear on averaged features, so its logit is the average over the map
        of `weight · feature`: that map, per class. "None of these" has no weights of its own; its
        map is the opposite of the strongest class map (least of any class where it is brightest).
        """
        linear = self.head[-1]
        maps = torch.einsum("kc,nchw->nkhw", linear.weight, fmap) / self.temperature
        return torch.cat([maps, -maps.amax(1, keepdim=True)], dim=1)


def gate_for(classes, imagenet: nn.Module, groups: Sequence[GateGroup] = (), sharpness: float = 2.0) -> nn.Module:
    """The gate a new network for `classes` (classes.Classes) starts with: an ImageNetGate on `groups` where the
    recipe gives them (bears), else NoGate until one is fitted. The groups must cover every class's ImageNet rows:
    a gate on other rows would say "none of these" to every photo of a class it doesn't read."""
    if not groups:
        return NoGate()
    read = {r for g in groups for r in g.rows}
    unread = [k.label for k in classes.kinds if not k.imagenet or not set(k.imagenet) <= read]
    if unread or sharpness <= 0:
        raise ValueError(f"The recipe's imagenet_gate doesn't read the ImageNet rows of {', '.join(unread) or 'any class'}"
                         f"{' (and its gate_sharpness must be > 0)' if sharpness <= 0 else ''}: name each class's rows "
                         "in the classes file, or train without an imagenet_gate (Recipe's default), docs/classes.md.")
    return ImageNetGate(imagenet, [(g.rows, g.threshold) for g in groups], sharpness, [g.corners for g in groups])


def answer_log_probs(class_logits: torch.Tensor, gate_logits: torch.Tensor) -> torch.Tensor:
    """log p for (*classes, none) from the class logits (N, K) and the gate's logit of p(in set) (N,), bounded."""
    gate_logits = gate_logits.clamp(-LOGIT_BOUND, LOGIT_BOUND)
    log_in, log_none = nn.functional.logsigmoid(gate_logits), nn.functional.logsigmoid(-gate_logits)
    return torch.cat([class_logits.log_softmax(-1) + log_in[:, None], log_none[:, None]], dim=1)


def splitter(model: GatedNet) -> list:
    """Parameter groups for fastai's discriminative learning rates: the tail, then the class head."""
    return [list(model.tail.parameters()), list(model.head.parameters())]
