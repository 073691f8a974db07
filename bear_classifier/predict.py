"""Load export.pkl safely and classify one image fast."""
from __future__ import annotations

import hashlib
import json
import pathlib
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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

    `learn.predict` builds a DataLoader and runs fastai's transform pipelines for every call.
    For one image, the validation transforms of our DataBlock come down to a PIL resize and a
    normalisation, which we read off the learner and apply directly: the same numbers (tested
    against `learn.predict`), without the per-call set-up.
    """

    def __init__(self, learn):
        from fastai.vision.all import Normalize, Resize, ResizeMethod

        self.learn = learn
        self.vocab = list(learn.dls.vocab)
        resize = [t for t in learn.dls.valid.after_item.fs if isinstance(t, Resize)]
        norm = [t for t in learn.dls.valid.after_batch.fs if isinstance(t, Normalize)]
        if len(resize) != 1 or resize[0].method != ResizeMethod.Squish or len(norm) != 1:
            raise ModelError("This learner's transforms are not the ones bear_classifier trains with "
                             "(a squish Resize and a Normalize); retrain it with `python -m bear_classifier train`.")
        self.size = tuple(resize[0].size)[::-1]  # fastai stores (h, w); PIL wants (w, h)
        self.resample = resize[0].mode
        self.mean, self.std = norm[0].mean.cpu(), norm[0].std.cpu()

    @classmethod
    def load(cls, path: Path = MODEL_PATH) -> "Classifier":
        return cls(load_model(path))

    def tensor(self, img: Image.Image) -> torch.Tensor:
        """The model's input for one image: squish-resize, scale to [0, 1], normalise. (1, 3, H, W)"""
        x = torch.from_numpy(np.asarray(img.convert("RGB").resize(self.size, self.resample)).copy())
        return (x.permute(2, 0, 1)[None].float() / 255 - self.mean) / self.std

    def probabilities(self, img: Image.Image) -> torch.Tensor:
        with torch.inference_mode():
            return self.learn.model(self.tensor(img))[0].exp()

    def predict(self, img: Image.Image) -> Prediction:
        probs = self.probabilities(img)
        i = int(probs.argmax())
        return Prediction(self.vocab[i], float(probs[i]), dict(zip(self.vocab, probs.tolist())))
