"""Load the exported model safely (export.pkl for fastai, export.onnx for serving) and classify one image fast."""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .classes import FILE as CLASSES_FILE
from .classes import Classes, Kind

ROOT = Path(__file__).resolve().parent.parent
MODEL_PATH = ROOT / "export.pkl"  # the fastai learner: retrain, evaluate, inspect
SERVE_PATH = ROOT / "export.onnx"  # the same network for ONNX Runtime: what the app and the CLI serve


class ModelError(RuntimeError):
    """The learner can't be loaded; str(error) says why and what to do."""


@dataclass
class Prediction:
    label: str  # a vocab entry: "black", "grizzly", "teddy" or "not_bear"
    probability: float
    probs: dict[str, float]  # every class, in vocab order
    heatmap: np.ndarray | None = None  # (h, w) class activation map of `label`: higher = more evidence

    @property
    def is_bear(self) -> bool:
        return self.label != "not_bear"

    def __str__(self) -> str:
        return f"Prediction: {self.label}; Probability: {self.probability:.4f}"


def served_model_path() -> Path:
    """The model the page and the CLI serve: BEAR_MODEL where it is set, else export.onnx in this checkout."""
    return Path(os.environ.get("BEAR_MODEL") or SERVE_PATH)


def served_classes(path: Path | None = None) -> Classes:
    """The classes of the model at `path` (default: the served one), in the page's words, from its model card
    alone (nothing is loaded). A card from before classes were data falls back to classes.toml beside the model."""
    path = Path(path or served_model_path())
    info = read_card(path).get("classes")
    if isinstance(info, dict):
        return Classes.from_dict(info)
    beside = path.parent / CLASSES_FILE
    if beside.exists():
        return Classes.from_file(beside)
    return Classes(kinds=tuple(Kind(label) for label in info[:-1]), none_label=info[-1])


def read_card(path: Path = MODEL_PATH) -> dict:
    """The model card written next to export.pkl at export time."""
    card = Path(path).with_suffix(".json")
    if not card.exists():
        raise ModelError(f"The model card {card.name} is missing next to {Path(path).name}; re-export the model.")
    return json.loads(card.read_text())


def check_sha256(path: Path, expected: str | None) -> None:
    """Refuse a model file whose bytes differ from the ones the model card vouches for.

    Unpickling runs code, so this check comes before loading, never after.
    """
    if not Path(path).exists():
        raise ModelError(f"{Path(path).name} was not found; train one with `python -m bear_classifier train`.")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if digest != expected:
        raise ModelError(
            f"{Path(path).name} does not match its model card (sha256 {digest[:12]}… expected "
            f"{str(expected)[:12]}…): the file was changed or corrupted, so it was not loaded. "
            f"Restore it from the repository (git checkout {Path(path).name}) or re-export it."
        )


def version_drift(card: dict) -> dict[str, tuple[str, str]]:
    """{library: (needed, installed)} for every library whose installed version differs from the card."""
    from .export import library_versions

    installed = library_versions()
    return {k: (v, installed.get(k)) for k, v in card.get("versions", {}).items()
            if k != "python" and installed.get(k) != v}


def load_model(path: Path = MODEL_PATH):
    """`load_learner` after the sha256 check, with human messages for the classic failures."""
    from fastai.learner import load_learner

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


class Classifier:
    """export.onnx on ONNX Runtime: one PIL image in, a Prediction (with its heatmap) out.

    Serving this way needs onnxruntime, numpy and Pillow: no torch, no fastai. Unpickling
    export.pkl would import fastai, timm, torchvision and torch (about 650 MiB and seconds per
    kernel) for what is one resize and one forward pass (tested equal to `learn.predict`).
    """

    def __init__(self, session, vocab: list[str], size: tuple[int, int], resample: int, sha256: str = ""):
        self.session, self.vocab, self.size, self.resample = session, vocab, tuple(size), resample
        self.sha256 = sha256  # of the model file: stored with every "That's wrong" answer

    @classmethod
    def load(cls, path: Path = SERVE_PATH, threads: int = 1) -> "Classifier":
        """Load after the sha256 check. One thread by default: a kernel serves one visitor, one photo at a time."""
        import onnxruntime as ort

        card = read_card(path)
        check_sha256(path, card.get("serving", {}).get("sha256"))
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            meta = json.loads(session.get_modelmeta().custom_metadata_map["bear_classifier"])
        except Exception as e:
            raise ModelError(f"Could not load {Path(path).name} ({type(e).__name__}: {e}). "
                             f"Reinstall the serving requirements, or re-export the model.") from None
        return cls(session, meta["vocab"], meta["size"], meta["resample"], card["serving"]["sha256"])

    def pixels(self, img: Image.Image) -> np.ndarray:
        """The model's input for one image: squish-resized uint8 pixels, (1, H, W, 3)."""
        return np.asarray(img.convert("RGB").resize(self.size, self.resample))[None]

    def run(self, img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (classes,), class activation maps (classes, h, w)) for one image."""
        probs, maps = self.session.run(None, {"pixels": self.pixels(img)})
        return probs[0], maps[0]

    def probabilities(self, img: Image.Image) -> np.ndarray:
        return self.run(img)[0]

    def predict(self, img: Image.Image) -> Prediction:
        probs, maps = self.run(img)
        i = int(probs.argmax())
        return Prediction(self.vocab[i], float(probs[i]), dict(zip(self.vocab, probs.tolist())), maps[i])


class LessonClassifier:
    """The course's own code path: `load_learner("export.pkl")` and `learn.predict`, for people who want it
    (the app uses it when BEAR_MODEL names a .pkl file). Needs requirements.txt (torch, fastai); slower."""

    def __init__(self, learn, sha256: str = ""):
        self.learn, self.vocab, self.sha256 = learn, list(learn.dls.vocab), sha256

    @classmethod
    def load(cls, path: Path = MODEL_PATH) -> "LessonClassifier":
        return cls(load_model(path), read_card(path).get("sha256", ""))

    def predict(self, img: Image.Image) -> Prediction:
        import torch
        from fastai.vision.core import PILImage

        _, _, probs = self.learn.predict(PILImage.create(np.asarray(img.convert("RGB"))))
        i = int(probs.argmax())
        with torch.inference_mode():  # where it looked: the same maps the ONNX file exports, from one more pass
            xb = self.learn.dls.test_dl([PILImage.create(np.asarray(img.convert("RGB")))]).one_batch()[0]
            maps = self.learn.model.class_maps(self.learn.model.feature_map(xb))[0].cpu().numpy()
        return Prediction(self.vocab[i], float(probs[i]), dict(zip(self.vocab, probs.tolist())), maps[i])
