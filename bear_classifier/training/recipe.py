"""The training recipe: every choice that makes a model, each with its default, in one place. `train` and `cv` on the
command line, train.ipynb and the benches all start from `Recipe()` and change only what they need."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..model import OFFLINE_ARCH


@dataclass(frozen=True)
class Recipe:
    arch: str = OFFLINE_ARCH  # EfficientNet-Lite0: its ImageNet weights come in a pip package, no download
    freeze_epochs: int = 1  # fine_tune's first phase: the head alone
    epochs: int = 3  # then with the late layers unfrozen
    lr: float = 2e-3
    size: int = 224  # the square every photo is squished to
    bs: int = 64  # at most an eighth of the training photos (train.batch_size)
    workers: int = 0  # processes decoding photos: worth it on a GPU machine, not on a 2-core CPU
    seed: int = 42  # the split, the negatives' draw and the training's randomness
    clean: bool = True  # drop the training photos that the untouched network contradicts (clean.auto_clean)
    probe: bool = True  # a head without ImageNet rows starts from a linear probe (train.probe_head)
    forget_weight: float = 1.0  # learning without forgetting's share of the loss
    temperature: float | None = None  # the head's: None, the classes file's, else fitted on the validation photos
    keep: float | None = None  # the share of validation photos "none of these" keeps (None: openset's default)

    def but(self, **changes) -> "Recipe":
        """This recipe with `changes` (a ValueError names any knob it doesn't have)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"a recipe has no {', '.join(sorted(unknown))}; its knobs: "
                             f"{', '.join(f.name for f in fields(self))}")
        return replace(self, **changes)

    def card(self) -> dict:
        """What the model card records of it."""
        return asdict(self)
