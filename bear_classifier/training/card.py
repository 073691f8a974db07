"""The model card's account of how a model was made: the recipe, the data (how many photos each step kept or
dropped, per class and split), the gate, and the machine it trained on."""
from __future__ import annotations

import platform
from collections import Counter
from pathlib import Path

import torch

from .data import read_labels


def model_card(learn, root: Path, report, labels_csv: Path | None, dropped: dict, **recipe) -> dict:
    """What the model card says about the recipe and the data, read off the trained learner itself."""

    def counts(ds) -> Counter:
        return Counter(learn.dls.vocab[int(y)] for y in ds.tls[1])  # labels only: no image is opened

    train, valid = counts(learn.dls.train_ds), counts(learn.dls.valid_ds)
    gate = learn.model.gate
    return dict(
        recipe, gate=gate.card() if hasattr(gate, "card") else dict(kind=type(gate).__name__),
        data=dict(root=Path(root).name, files=(len(report.kept) + len(report.dropped)) if report else None,
                  dropped_by_verify=len(report.dropped) if report else None,
                  relabelled_or_dropped_by_hand=len(read_labels(labels_csv)) if labels_csv else 0,
                  dropped_by_auto_clean=len(dropped), train={c: train[c] for c in learn.dls.vocab},
                  valid={c: valid[c] for c in learn.dls.vocab}),
        auto_cleaned=sorted(f"{Path(p).relative_to(root).as_posix()}: {why}" for p, why in dropped.items()),
        machine=machine(),
    )


def machine() -> str:
    """Where training ran, for the model card: the GPU's name, or the CPU and its threads."""
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
