"""Export a trained learner: `learn.export()` (export.pkl), the ONNX file the app serves, and the model card
(export.json): its recipe, data, gate, library versions and checksums."""
from __future__ import annotations

import hashlib
import json
import platform
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from ..classes import Classes, Kind
from .classifier import GatedNet, bounded_view_logits, gate_views, pooled_views

ONNX_OPSET = 17


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def library_versions() -> dict[str, str]:
    """Exact versions of everything the pickle in export.pkl depends on."""
    import fastai
    import fastcore
    import PIL
    import timm
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__.split("+")[0],
            "torchvision": torchvision.__version__.split("+")[0], "fastai": fastai.__version__,
            "fastcore": fastcore.__version__, "timm": timm.__version__, "pillow": PIL.__version__}


class Serving(nn.Module):
    """The learner's model with its input normalisation: uint8 pixels (1, H, W, 3) in; class probabilities
    (1, classes) and class activation maps (1, classes, h, w) out, from one forward pass; and, for a gate that reads
    each view (ImageNetGate), its logit per view (1, 5), so that the server can leave out a view showing a face."""

    def __init__(self, model: GatedNet, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.reshape(1, 3, 1, 1))
        self.register_buffer("std", std.reshape(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = (pixels.permute(0, 3, 1, 2).float() / 255 - self.mean) / self.std
        fmap = self.model.feature_map(x)
        views = pooled_views(fmap)
        out = (self.model.combine(views).exp(), self.model.class_maps(fmap))
        per_view = bounded_view_logits(self.model.gate, views)
        return out if per_view is None else out + (per_view,)


def serving_transforms(learn) -> tuple[tuple[int, int], int, torch.Tensor, torch.Tensor]:
    """(size as PIL's (w, h), resample, mean, std): what the learner's validation transforms do to one image.

    For our DataBlock they come down to a squish resize and a normalisation; anything else is refused.
    """
    from fastai.vision.all import Normalize, Resize, ResizeMethod

    resize = [t for t in learn.dls.valid.after_item.fs if isinstance(t, Resize)]
    norm = [t for t in learn.dls.valid.after_batch.fs if isinstance(t, Normalize)]
    if len(resize) != 1 or resize[0].method != ResizeMethod.Squish or len(norm) != 1:
        raise ValueError("This learner's transforms are not the ones bear_classifier trains with "
                         "(a squish Resize and a Normalize); retrain it with `python -m bear_classifier train`.")
    return tuple(resize[0].size)[::-1], int(resize[0].mode), norm[0].mean.flatten().cpu(), norm[0].std.flatten().cpu()


def learner_classes(learn) -> Classes:
    """The classes the learner's network was made for (create_learner keeps them on it); a network
    without them gets its vocab's labels, the last one being "none of these"."""
    classes = getattr(learn.model, "classes", None)
    if classes is None:
        *labels, none = learn.dls.vocab
        classes = Classes(kinds=tuple(Kind(label) for label in labels), none_label=none)
    return classes


def save_onnx(learn, path: Path) -> None:
    """The learner's network, normalisation and heatmaps included, as ONNX for onnxruntime (no torch needed to serve).

    What a server must know to prepare the input travels inside the file as metadata.
    """
    import onnx

    size, resample, mean, std = serving_transforms(learn)
    model = Serving(learn.model.cpu(), mean, std).eval()
    example = torch.zeros(1, size[1], size[0], 3, dtype=torch.uint8)
    with torch.no_grad():
        outputs = model(example)  # with the gate's logit per view or without, and the heatmaps' size
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on tracing; the test compares its outputs with learn.predict
        torch.onnx.export(model, (example,), str(path), input_names=["pixels"],
                          output_names=["probs", "heatmaps", "gate_views"][:len(outputs)],
                          opset_version=ONNX_OPSET, dynamo=False)
    graph = onnx.load(str(path))
    meta = {"vocab": list(learn.dls.vocab), "classes": learner_classes(learn).to_dict(), "size": list(size),
            "resample": resample, "heatmaps": "heatmaps"}
    if len(outputs) == 3:  # where each view lies in the photo (the heatmaps' size is the feature map's)
        meta["gate_views"] = gate_views(*outputs[1].shape[-2:])
    onnx.helper.set_model_props(graph, {"bear_classifier": json.dumps(meta)})
    onnx.save(graph, str(path))


def export(learn, path: Path, card: dict) -> dict:
    """`learn.export()` to `path`, the ONNX file the app serves next to it (.onnx), and the model card (.json)."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    learn.export(path)
    served = path.with_suffix(".onnx")
    save_onnx(learn, served)
    card = dict(card, file=path.name, sha256=sha256(path), size_mb=round(path.stat().st_size / 2**20, 2),
                serving=dict(file=served.name, sha256=sha256(served), size_mb=round(served.stat().st_size / 2**20, 2),
                             runtime="onnxruntime", opset=ONNX_OPSET),
                versions=library_versions(), classes=learner_classes(learn).to_dict(),
                exported=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card
