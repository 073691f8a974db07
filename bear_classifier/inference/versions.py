"""The models folder: every exported version with its card, one of them served, named by a pointer file that
`promote` and `rollback` replace atomically, and which running servers watch (a stat per answer).

    models/
      2026-12-07-3b6651a3/export.onnx, export.json   one folder per version (the name is model_version(card))
      served                                         the served version's name, one line
      history.csv                                    when each version was served, and by which command

No torch here: the page's kernels and the API load from this folder.
"""
from __future__ import annotations

import csv
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import environment
from .predict import (POINTER, Classifier, ModelError, check_sha256, model_version, read_card, served_model_path,
                      served_version)

log = logging.getLogger(__name__)
HISTORY = "history.csv"


@dataclass
class Version:
    name: str
    path: Path  # its export.onnx
    card: dict


class Models:
    """The models folder at `root` (BEAR_MODELS)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def pointer(self) -> Path:
        return self.root / POINTER

    def versions(self) -> list[Version]:
        """Every version in the folder, oldest export first."""
        found = []
        for card_path in sorted(self.root.glob("*/export.json")):
            try:
                found.append(Version(card_path.parent.name, card_path.with_suffix(".onnx"), read_card(card_path)))
            except (ModelError, ValueError):
                log.warning("%s is not a readable model card: skipped", card_path)
        return sorted(found, key=lambda v: (str(v.card.get("exported", "")), v.name))

    def get(self, name: str) -> Version:
        path = self.root / name / "export.onnx"
        if not name or "/" in name or name.startswith(".") or not path.exists():
            known = ", ".join(v.name for v in self.versions()) or "none yet"
            raise ValueError(f"There is no version {name!r} in {self.root} (versions: {known}); "
                             f"add one with `python -m bear_classifier models promote PATH/export.onnx`.")
        return Version(name, path, read_card(path))

    def served(self) -> str | None:
        """The served version's name; None before the first promote."""
        return served_version(self.root)

    def add(self, onnx: Path) -> Version:
        """Copy an exported model (export.onnx and its card) into the folder under its version name, after its
        sha256 check; a version already there is left as it is."""
        onnx = Path(onnx)
        if onnx.is_dir():
            onnx = onnx / "export.onnx"
        if onnx.suffix != ".onnx":
            raise ValueError(f"{onnx} is not an export.onnx: give the .onnx file `train` wrote (or its folder).")
        card = read_card(onnx)
        check_sha256(onnx, card.get("serving", {}).get("sha256"))
        name = model_version(card)
        folder = self.root / name
        if not (folder / "export.onnx").exists():
            staging = self.root / f".{name}.incoming"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            shutil.copyfile(onnx, staging / "export.onnx")
            shutil.copyfile(onnx.with_suffix(".json"), staging / "export.json")
            os.replace(staging, folder)  # whole or not at all: a watcher never sees half a version
        return Version(name, folder / "export.onnx", card)

    def serve(self, name: str, how: str) -> None:
        """Make `name` the served version: the pointer is replaced in one rename, so a reader sees old or new."""
        self.get(name)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{POINTER}.{os.getpid()}"
        tmp.write_text(name + "\n")
        os.replace(tmp, self.pointer)
        new = not (self.root / HISTORY).exists()
        with open(self.root / HISTORY, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["time", "version", "how"])
            w.writerow([datetime.now(timezone.utc).isoformat(timespec="seconds"), name, how])

    def history(self) -> list[dict]:
        try:
            with open(self.root / HISTORY, newline="") as f:
                return list(csv.DictReader(f))
        except FileNotFoundError:
            return []

    def previous(self) -> str:
        """The version served before the current one took over (what `rollback` serves)."""
        served, seen = self.served(), [row["version"] for row in self.history()]
        while seen and seen[-1] == served:
            seen.pop()
        if not seen:
            raise ValueError("No version was served before this one: there is nothing to roll back to.")
        return seen[-1]


def models_folder() -> Models | None:
    """The models folder where BEAR_MODELS names one and BEAR_MODEL (a fixed file) is not set; else None."""
    root = environment.models_folder()
    return Models(root) if root is not None and environment.model_path() is None else None


class Served:
    """The served model, loaded once and loaded again when the pointer changes: `get()` costs one stat of the
    pointer file per call, so a server may call it for every answer. Without a models folder, the fixed
    model (BEAR_MODEL, else export.onnx) is loaded once."""

    def __init__(self, models: Models | None = None, loader=Classifier.load, path: Path | None = None):
        """`loader(path)` loads one version (Classifier.load; a lambda for other threads); `path`: the fixed
        model where there is no models folder (default served_model_path())."""
        self.models, self.loader, self.path = models, loader, path
        self._stamp: tuple | None = None
        self._model = None
        self._lock = threading.Lock()

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.models.pointer)
            return st.st_ino, st.st_mtime_ns, st.st_size
        except FileNotFoundError:
            return None

    def changed(self) -> bool:
        """The pointer was replaced since the model in hand was loaded."""
        return self.models is not None and self._model is not None and self._stat() != self._stamp

    @property
    def current(self):
        """The model in hand, as loaded by the last `get()` (None before the first)."""
        return self._model

    def get(self):
        """The served version's classifier (its .version names it). A version that fails to load keeps the one in
        hand answering, with the reason in the log."""
        if self._model is not None and not self.changed():
            return self._model
        with self._lock:
            if self.models is None:
                if self._model is None:
                    self._model = self.loader(self.path or served_model_path())
                return self._model
            stamp = self._stat()
            if self._model is not None and stamp == self._stamp:
                return self._model
            name = self.models.served()
            if name is None and self._model is not None:  # the pointer went: the version in hand keeps answering
                log.error("no version is served from %s any more: %s keeps answering", self.models.root,
                          self._model.version)
                self._stamp = stamp
                return self._model
            if name is None:
                raise ModelError(f"No version is served from {self.models.root} yet: "
                                 f"`python -m bear_classifier models promote PATH/export.onnx`.")
            try:
                model = self.loader(self.models.get(name).path)
            except Exception:
                if self._model is None:
                    raise
                log.exception("version %s could not be loaded: %s keeps answering", name, self._model.version)
                self._stamp = stamp
                return self._model
            model.version = name  # the folder's name: what `models list` shows and the pointer holds
            log.info("now serving version %s", name)
            self._model, self._stamp = model, stamp
            return model

