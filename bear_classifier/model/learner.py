"""The lesson's own code path: export.pkl through fastai's `load_learner` (after the sha256 check) and `learn.predict`,
behind the same Prediction as the ONNX Classifier. Needs requirements.txt (torch, fastai)."""
from __future__ import annotations

import pathlib
import platform
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..inference.people import PersonDetector
from ..inference.predict import (Answers, ModelError, Prediction, check_sha256, model_file, model_version,
                                 read_card)


def version_drift(card: dict) -> dict[str, tuple[str, str]]:
    """{library: (needed, installed)} for every library whose installed version differs from the card."""
    from .export import library_versions

    installed = library_versions()
    return {k: (v, installed.get(k)) for k, v in card.get("versions", {}).items()
            if k != "python" and installed.get(k) != v}


def load_model(path: Path | None = None):
    """`load_learner` after the sha256 check, with human messages for the classic failures.
    Default: export.pkl in the working directory, else the checkout's."""
    from fastai.learner import load_learner

    path = Path(path or model_file("export.pkl"))
    card = read_card(path)
    check_sha256(path, card.get("sha256"))
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


class LessonClassifier(Answers):
    """The course's own code path: `load_learner("export.pkl")` and `learn.predict`, for people who want it
    (the app uses it when BEAR_MODEL names a .pkl file), answered as the ONNX Classifier answers (Answers). Needs
    requirements.txt (torch, fastai); slower."""

    def __init__(self, learn, sha256: str = "", version: str = "", people: bool = True):
        from .export import learner_classes

        self.learn, self.vocab, self.sha256 = learn, list(learn.dls.vocab), sha256
        self.version = version or sha256[:8]  # its ONNX twin's (model_version): the same network, the same name
        self.classes = learner_classes(learn)
        self.people = PersonDetector() if people else None
        self.gate_views = None  # set by the first photo: the views lie where the feature map's windows do

    @classmethod
    def load(cls, path: Path | None = None) -> "LessonClassifier":
        path = Path(path or model_file("export.pkl"))
        card = read_card(path)
        return cls(load_model(path), card.get("sha256", ""), model_version(card))

    def predict(self, img: Image.Image) -> Prediction:
        import torch
        from fastai.vision.core import PILImage

        from .classifier import bounded_view_logits, gate_views, pooled_views

        photo = PILImage.create(np.asarray(img.convert("RGB")))
        _, _, probs = self.learn.predict(photo)
        model = self.learn.model
        with torch.inference_mode():  # where it looked, and the gate per view, as the ONNX file exports them
            fmap = model.feature_map(self.learn.dls.test_dl([photo]).one_batch()[0])
            maps = model.class_maps(fmap)[0].cpu().numpy()
            views = bounded_view_logits(model.gate, pooled_views(fmap))
            if views is not None:
                views, self.gate_views = views[0].cpu().numpy(), gate_views(*fmap.shape[-2:])
        return self.answer(img, probs.cpu().numpy(), maps, views)
