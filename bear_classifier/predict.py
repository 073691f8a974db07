"""Load the exported model safely (export.pkl for fastai, export.pt for serving) and classify one image fast."""
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
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
MODEL_PATH = ROOT / "export.pkl"  # the fastai learner: retrain, evaluate, inspect
SERVE_PATH = ROOT / "export.pt"  # the same model as TorchScript: what the app and the CLI serve
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
    from .train import library_versions

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


class Serving(nn.Module):
    """A learner's model with its input normalisation and softmax: uint8 pixels (1, H, W, 3) in, probabilities out."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.reshape(1, 3, 1, 1))
        self.register_buffer("std", std.reshape(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float() / 255
        return self.model((x - self.mean) / self.std).exp()  # the model outputs log-probabilities


def serving_transforms(learn) -> tuple[tuple[int, int], int, torch.Tensor, torch.Tensor]:
    """(size as PIL's (w, h), resample, mean, std): what the learner's validation transforms do to one image.

    For our DataBlock they come down to a squish resize and a normalisation; anything else is refused.
    """
    from fastai.vision.all import Normalize, Resize, ResizeMethod

    resize = [t for t in learn.dls.valid.after_item.fs if isinstance(t, Resize)]
    norm = [t for t in learn.dls.valid.after_batch.fs if isinstance(t, Normalize)]
    if len(resize) != 1 or resize[0].method != ResizeMethod.Squish or len(norm) != 1:
        raise ModelError("This learner's transforms are not the ones bear_classifier trains with "
                         "(a squish Resize and a Normalize); retrain it with `python -m bear_classifier train`.")
    return tuple(resize[0].size)[::-1], int(resize[0].mode), norm[0].mean.cpu(), norm[0].std.cpu()


def save_torchscript(learn, path: Path) -> None:
    """Compile the learner's model, normalisation included, to the TorchScript file the app serves."""
    size, resample, mean, std = serving_transforms(learn)
    example = torch.zeros(1, size[1], size[0], 3, dtype=torch.uint8)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # see Classifier.load on TorchScript's deprecation
        traced = torch.jit.freeze(torch.jit.trace(Serving(learn.model.cpu(), mean, std).eval(), example))
        meta = {"vocab": list(learn.dls.vocab), "size": list(size), "resample": resample}
        torch.jit.save(traced, str(path), _extra_files={"meta.json": json.dumps(meta)})


class Classifier:
    """export.pt, the learner compiled to TorchScript at export time: one PIL image in, a Prediction out.

    Serving this way needs torch only. Unpickling export.pkl imports fastai, timm and torchvision
    (torchvision in turn imports torch's compiler stack): half the kernel's memory and seconds of
    start-up, for nothing a single prediction uses. `learn.predict` also builds a DataLoader per
    call; here one image is a PIL resize and one forward pass (tested equal to `learn.predict`).
    """

    def __init__(self, model: torch.jit.ScriptModule, vocab: list[str], size: tuple[int, int], resample: int):
        self.model, self.vocab, self.size, self.resample = model, vocab, tuple(size), resample

    @classmethod
    def load(cls, path: Path = SERVE_PATH) -> "Classifier":
        card = read_card(path)
        check_sha256(path, card.get("serving", {}).get("sha256"))
        meta = {"meta.json": ""}
        try:
            # torch 2.14 marks torch.jit deprecated in favour of torch.export, but loading an
            # ExportedProgram imports the compiler stack (+180 MiB, +3 s, measured) and runs slower.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                model = torch.jit.load(str(path), map_location="cpu", _extra_files=meta)
            meta = json.loads(meta["meta.json"])
        except Exception as e:
            raise ModelError(f"Could not load {Path(path).name} ({type(e).__name__}: {e}). "
                             f"It needs torch=={card.get('versions', {}).get('torch')}: `pip install -r requirements.txt`.") from None
        clf = cls(model.eval(), meta["vocab"], meta["size"], meta["resample"])
        for _ in range(2):  # TorchScript optimises the graph during the first calls: make them here, not on an upload
            clf.probabilities(Image.new("RGB", clf.size))
        return clf

    def tensor(self, img: Image.Image) -> torch.Tensor:
        """The model's input for one image: squish-resized uint8 pixels, (1, H, W, 3)."""
        return torch.from_numpy(np.asarray(img.convert("RGB").resize(self.size, self.resample)).copy())[None]

    def probabilities(self, img: Image.Image) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(self.tensor(img))[0]

    def predict(self, img: Image.Image) -> Prediction:
        probs = self.probabilities(img)
        i = int(probs.argmax())
        return Prediction(self.vocab[i], float(probs[i]), dict(zip(self.vocab, probs.tolist())))
