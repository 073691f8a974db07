"""The network and what it is exported as: the pretrained ImageNet backbone, the classifier with its "none of these"
gate, calibration, the ONNX export and its model card, and the lesson's load_learner path. Needs torch and fastai."""

from dataclasses import dataclass

from ..classes import imagenet_rows

# Named here, without torch, so that the command line can offer them (and read a recipe) without importing it.
OFFLINE_ARCH = "tf_efficientnet_lite0"  # weights from a pip package: no download
COURSE_ARCHS = ("resnet18", "resnet34")  # the lesson's networks: torchvision downloads their weights once


@dataclass(frozen=True)
class GateGroup:
    """One group of an ImageNetGate (classifier.py): ImageNet rows whose probability mass is set against `threshold`,
    in the most convincing view, a corner view's mass divided by `corners` (docs/model.md)."""

    rows: tuple[int, ...]
    threshold: float
    corners: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "rows", tuple(self.rows))
        if not (self.rows and imagenet_rows(self.rows) and 0 < self.threshold <= 1 and self.corners >= 1):
            raise ValueError(f"An imagenet_gate group needs ImageNet rows (0-999), a threshold in (0, 1] and corners "
                             f">= 1, not {self}: see docs/classes.md.")
