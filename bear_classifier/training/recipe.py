"""The training recipe: every choice that makes a model, each with its default, in one place. `train` and `cv` on the
command line, train.ipynb and the benches all start from `Recipe()`, or from a recipe file (the bear model's is
recipe.toml), and change only what they need."""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from ..model import OFFLINE_ARCH, GateGroup


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
    negative_weight: float = 0.0  # −log p(none of these) on the negatives (train.SpeciesLoss); 0: off
    temperature: float | None = None  # how sure the class head sounds; None: fitted on the validation photos
    keep: float | None = None  # the share of validation photos "none of these" keeps (None: openset's default)
    # "None of these" read from ImageNet's own rows (bears), instead of a gate fitted on the training photos' features.
    imagenet_gate: tuple[GateGroup, ...] = ()
    gate_sharpness: float = 2.0  # how steeply the ImageNet gate turns from "none of these" to "one of the classes"

    def __post_init__(self):
        groups = tuple(g if isinstance(g, GateGroup) else GateGroup(**g) for g in self.imagenet_gate)
        object.__setattr__(self, "imagenet_gate", groups)
        if self.negative_weight < 0 or (self.negative_weight and not groups):
            raise ValueError(f"negative_weight = {self.negative_weight}: it must be 0 or more, and it needs an "
                             "imagenet_gate to train (the 'none of these' gate of other classes is fitted after)")

    def but(self, **changes) -> "Recipe":
        """This recipe with `changes` (a ValueError names any knob it doesn't have)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"a recipe has no {', '.join(sorted(unknown))}; its knobs: "
                             f"{', '.join(f.name for f in fields(self))}")
        return replace(self, **changes)

    @classmethod
    def from_file(cls, path: Path) -> "Recipe":
        """The recipe a TOML file writes: the knobs it sets, Recipe()'s defaults for the rest."""
        try:
            return cls().but(**tomllib.loads(Path(path).read_text()))
        except (OSError, tomllib.TOMLDecodeError, TypeError, ValueError) as e:
            raise ValueError(f"{path} is not a recipe file ({e}): see recipe.toml and training/recipe.py.") from None

    def card(self) -> dict:
        """What the model card records of it."""
        return asdict(self)
