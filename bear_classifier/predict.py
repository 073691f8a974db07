"""Load export.pkl safely and classify one image fast."""
from __future__ import annotations

import hashlib
import json
import pathlib
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MODEL_PATH = ROOT / "export.pkl"
LABELS = {"black": "black bear", "grizzly": "grizzly bear", "teddy": "teddy bear", "not_bear": "not a bear"}


class ModelError(RuntimeError):
    """The learner can't be loaded; str(error) says why and what to do."""


@dataclass
class Prediction:
    label: str  # a vocab entry: "black", "grizzly", "teddy" or "not_bear"
    probability: float
    probs: dict[str, float]  # every class, in vocab order

    @property
    def is_bear(self) -> bool:
        return self.label != "not_bear"

    def __str__(self) -> str:
        return f"Prediction: {self.label}; Probability: {self.probability:.4f}"


def read_card(path: Path = MODEL_PATH) -> dict:
    """The model card written next to export.pkl at export time."""
    card = Path(path).with_suffix(".json")
    if not card.exists():
        raise ModelError(f"The model card {card.name} is missing next to {Path(path).name}; re-export the model.")
    return json.loads(card.read_text())


def check_sha256(path: Path, card: dict) -> None:
    """Refuse a pickle whose bytes differ from the ones the model card vouches for.

    Unpickling runs code, so this check comes before `load_learner`, never after.
    """
    if not Path(path).exists():
        raise ModelError(f"{Path(path).name} was not found; train one with `python -m bear_classifier train`.")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if digest != card.get("sha256"):
        raise ModelError(
            f"{Path(path).name} does not match its model card (sha256 {digest[:12]}… expected "
            f"{str(card.get('sha256'))[:12]}…): the file was changed or corrupted, so it was not loaded. "
            "Restore it from the repository (git checkout export.pkl) or re-export it."
        )


def version_drift(card: dict) -> dict[str, tuple[str, str]]:
    """{library: (needed, installed)} for every library whose installed version differs from the card."""
    from .train import library_versions

    installed = library_versions()
    return {k: (v, installed.get(k)) for k, v in card.get("versions", {}).items()
            if k != "python" and installed.get(k) != v}


def load_model(path: Path = MODEL_PATH):
    """`load_learner` after the sha256 check, with human messages for the classic failures."""
    from fastai.learner import load_learner

    card = read_card(path)
    check_sha256(path, card)
    if platform.system() == "Windows":  # exports made on Linux pickle PosixPath, which Windows can't build
        pathlib.PosixPath = pathlib.WindowsPath
    try:
        with warnings.catch_warnings():  # fastai warns that pickles run code: the sha256 check above is our answer
            warnings.filterwarnings("ignore", message=".*insecure pickle.*")
            learn = load_learner(path, cpu=True)
    except Exception as e:
        drift = version_drift(card)
        needs = ", ".join(f"{k}=={want} (installed: {have})" for k, (want, have) in drift.items())
        hint = f" It was exported with {needs}: `pip install -r requirements.txt`." if drift else ""
        raise ModelError(f"Could not load {Path(path).name} ({type(e).__name__}: {e}).{hint}") from None
    learn.model.eval()
    return learn


class Classifier:
    """A loaded learner plus the fast path for one image.

    `learn.predict` builds a DataLoader per call; for a single image it is enough to run the
    learner's own item and batch transforms and the model, which gives the same numbers.
    """

    def __init__(self, learn):
        self.learn = learn
        self.vocab = list(learn.dls.vocab)
        self.item_tfms = learn.dls.valid.after_item  # Resize, ToTensor
        self.batch_tfms = learn.dls.valid.after_batch  # IntToFloatTensor, (augmentations), Normalize
        for pipeline in (self.item_tfms, self.batch_tfms):
            pipeline.split_idx = 1  # validation behaviour: augmentations off (fastai sets this per iteration)

    @classmethod
    def load(cls, path: Path = MODEL_PATH) -> "Classifier":
        return cls(load_model(path))

    def probabilities(self, img: Image.Image) -> torch.Tensor:
        from fastai.vision.core import PILImage

        x = self.item_tfms(PILImage(img.convert("RGB")))
        with torch.inference_mode():
            return self.learn.model(self.batch_tfms(x[None]))[0].exp()

    def predict(self, img: Image.Image) -> Prediction:
        probs = self.probabilities(img)
        i = int(probs.argmax())
        return Prediction(self.vocab[i], float(probs[i]), dict(zip(self.vocab, probs.tolist())))
