"""Load the served model safely (export.onnx on ONNX Runtime, after its sha256 check) and classify one image fast.

No torch and no fastai here: the lesson's own path, export.pkl with load_learner, is model/learner.py."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import environment
from ..classes import FILE as CLASSES_FILE
from ..classes import Classes, Kind
from .people import PersonDetector

POINTER = "served"  # a models folder's file naming the version it serves (inference/versions.py)
CHECKOUT = Path(__file__).resolve().parents[2]  # where a checkout keeps its trained model, next to app.ipynb


def model_file(name: str) -> Path:
    """`name` (export.pkl: the fastai learner; export.onnx: the same network for ONNX Runtime) in the working
    directory, where a notebook and its model live; else the one of the checkout this package came from."""
    here = Path.cwd() / name
    return here if here.exists() or not (CHECKOUT / name).exists() else CHECKOUT / name


class ModelError(RuntimeError):
    """The learner can't be loaded; str(error) says why and what to do."""


@dataclass
class Prediction:
    label: str  # a vocab entry: one of the classes' labels, or the "none of these" label
    probability: float
    probs: dict[str, float]  # every class, in vocab order, "none of these" last
    heatmap: np.ndarray | None = None  # (h, w) class activation map of `label`: higher = more evidence
    none_label: str = "none"  # the model's label for "none of these" (Classes.none_label)
    version: str = ""  # the model version that answered (model_version), recorded with every answer
    person: bool = False  # a "none of these" answer for a photo that is mainly a person (inference/people.py)

    @property
    def in_set(self) -> bool:
        """The photo shows one of the classes."""
        return self.label != self.none_label

    def __iter__(self):
        """`pred, pred_idx, probs = prediction`, as with fastai's `learn.predict`: the label, its index in the
        vocab, and every class's probability in vocab order (a numpy array rather than a tensor)."""
        return iter((self.label, list(self.probs).index(self.label), np.array(list(self.probs.values()))))

    def __str__(self) -> str:
        return f"Prediction: {self.label}; Probability: {self.probability:.4f}"


def served_model_path() -> Path:
    """The model the page and the CLI serve: BEAR_MODEL where it is set; else the version the models folder
    (BEAR_MODELS) serves; else export.onnx in the working directory, else the checkout's."""
    fixed, folder = environment.model_path(), environment.models_folder()
    name = served_version(folder) if folder is not None else None
    return fixed or (folder / name / "export.onnx" if name else model_file("export.onnx"))


def served_version(folder: Path) -> str | None:
    """The name of the version a models folder serves, from its pointer file (inference/versions.py keeps the
    folder); None before the first promote."""
    try:
        return (Path(folder) / POINTER).read_text().strip() or None
    except FileNotFoundError:
        return None


def served_classes(path: Path | None = None) -> Classes:
    """The classes of the model at `path` (default: the served one), in the page's words, from its model card
    alone (nothing is loaded)."""
    return card_classes(read_card(Path(path or served_model_path())), Path(path or served_model_path()))


def card_classes(card: dict, path: Path) -> Classes:
    """The classes a model card names. A card from before classes were data (a plain list of labels)
    falls back to classes.toml beside the model, else to the labels themselves."""
    info = card.get("classes")
    if isinstance(info, dict):
        return Classes.from_dict(info)
    beside = Path(path).parent / CLASSES_FILE
    if beside.exists():
        return Classes.from_file(beside)
    return Classes(kinds=tuple(Kind(label) for label in info[:-1]), none_label=info[-1])


def read_card(path: Path) -> dict:
    """The model card written next to export.pkl at export time."""
    card = Path(path).with_suffix(".json")
    if not card.exists():
        raise ModelError(f"The model card {card.name} is missing next to {Path(path).name}; re-export the model.")
    return json.loads(card.read_text())


def model_version(card: dict) -> str:
    """A model's version: the day it was exported and its ONNX file's sha256 prefix ("2026-12-07-3b6651a3"), or the
    prefix alone for a card from before export dates. The same bytes get the same name on every machine."""
    digest = card.get("serving", {}).get("sha256") or card.get("sha256") or ""
    day = str(card.get("exported", ""))[:10]
    return f"{day}-{digest[:8]}" if day else digest[:8]


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


class Answers:
    """A network's outputs for one photo made into its Prediction: the ONNX Classifier's and the lesson's
    (model/learner.py's LessonClassifier) alike, so that the page answers the same whichever file it serves."""

    vocab: list[str]
    classes: Classes
    version: str
    people: PersonDetector | None  # says which photos are mainly a person; None: never asked
    gate_views: dict | None  # where the gate's views lie in the photo, and its logit's bound (model/export.py)

    def answer(self, img: Image.Image, probs: np.ndarray, maps: np.ndarray, views: np.ndarray | None) -> Prediction:
        """The Prediction from the probabilities (classes,), class activation maps (classes, h, w) and the gate's logit
        per view (views,) or None. A photo let in by a corner alone, or answered "none of these", asks whether it is
        mainly a person. A bear answer that the whole photo gives stands even beside a large face (a child holding a
        teddy, a man holding a cub): overriding it cost bears (docs/model.md, "Photos of people")."""
        corner_only = views is not None and views[0] < 0 <= views.max()
        ask = self.people is not None and (corner_only or int(probs.argmax()) == len(probs) - 1)
        face = self.people.main_face(img) if ask else None
        if face is not None and corner_only:
            # A corner showing the person (the face, or the body below it) counts only where the gate can't be surer
            # (its logit at the bound): a child's lace dress or a brown sweater in warm light was read there as a
            # teddy (0.99, 0.55), while a teddy held up beside the face fills its corner (docs/model.md).
            boxes, bound = self.gate_views["boxes"], self.gate_views["bound"]
            keep = [i for i, box in enumerate(boxes) if i == 0 or views[i] >= bound or not face.holds_person(box)]
            probs = gated(probs, float(views[keep].max()))
        i = int(probs.argmax())
        pred = Prediction(self.vocab[i], float(probs[i]), dict(zip(self.vocab, probs.tolist())), maps[i],
                          self.classes.none_label, self.version)
        pred.person = not pred.in_set and face is not None
        return pred


class Classifier(Answers):
    """export.onnx on ONNX Runtime: one PIL image in, a Prediction (with its heatmap) out.

    Serving this way needs onnxruntime, numpy and Pillow: no torch, no fastai. Unpickling
    export.pkl would import fastai, timm, torchvision and torch (about 650 MiB and seconds per
    kernel) for what is one resize and one forward pass (tested equal to `learn.predict`).
    """

    def __init__(self, session, classes: Classes, size: tuple[int, int], resample: int, sha256: str = "",
                 version: str = "", people: PersonDetector | None = None, gate_views: dict | None = None):
        self.session, self.classes, self.size, self.resample = session, classes, tuple(size), resample
        self.gate_views = gate_views
        self.vocab = classes.vocab
        self.sha256 = sha256  # of the model file: stored with every "That's wrong" answer
        self.version = version or sha256[:8]  # model_version(card): on every answer, card and stored correction
        self.people = people
        self.card: dict = {}  # the model card it was loaded with (Classifier.load)

    @classmethod
    def load(cls, path: Path | None = None, threads: int = 1, people: bool = True) -> "Classifier":
        """Load after the sha256 check (default: served_model_path(); for an export.pkl, the export.onnx beside it).
        One thread by default: a kernel serves one visitor, one photo at a time. `people`: look for a large face
        (Answers.answer)."""
        import onnxruntime as ort

        path = Path(path or served_model_path())
        if path.suffix == ".pkl":  # the lesson's load_learner file: export() wrote the same network beside it as ONNX
            path = path.with_suffix(".onnx")
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
        classes = Classes.from_dict(meta["classes"]) if "classes" in meta else card_classes(card, path)
        classifier = cls(session, classes, meta["size"], meta["resample"], card["serving"]["sha256"],
                         model_version(card), PersonDetector() if people else None, meta.get("gate_views"))
        classifier.card = card  # its figures and export date, for the API's /api/model
        return classifier

    def pixels(self, img: Image.Image) -> np.ndarray:
        """The model's input for one image: squish-resized uint8 pixels, (1, H, W, 3)."""
        return np.asarray(img.convert("RGB").resize(self.size, self.resample))[None]

    def run(self, img: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(probabilities (classes,), class activation maps (classes, h, w), the gate's logit per view (views,) or
        None for a model without one) for one image."""
        probs, maps, *views = self.session.run(None, {"pixels": self.pixels(img)})
        return probs[0], maps[0], (views[0][0] if views and self.gate_views else None)

    def probabilities(self, img: Image.Image) -> np.ndarray:
        """The network's probabilities, before the face rule (`predict`'s answer may differ)."""
        return self.run(img)[0]

    def predict(self, img: Image.Image) -> Prediction:
        return self.answer(img, *self.run(img))


def gated(probs: np.ndarray, logit: float) -> np.ndarray:
    """`probs` (*classes, none) with the gate's logit of p(one of the classes) replaced by `logit`: the classes keep
    their shares of it."""
    inside = 1 / (1 + np.exp(-logit))
    return np.append(probs[:-1] / probs[:-1].sum() * inside, 1 - inside).astype(probs.dtype)
