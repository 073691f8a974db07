"""The classes a model tells apart, in the words its page uses: from classes.toml, or else the folder names.

Training copies them into the model card (export.json) and the ONNX file's metadata; the page, the
CLI and `review` read them from the model they serve, so another model gives another page.
"""
from __future__ import annotations

import logging
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)
FILE = "classes.toml"  # at the top of a checkout, next to app.ipynb


@dataclass(frozen=True)
class Kind:
    """One class: its folder name (the model's label), the words the page uses, and what `gather` searches for."""

    label: str
    name: str = ""  # "Grizzly bear"; the label, made readable, when empty
    search: str = ""  # the image-search query; the name when empty
    imagenet: tuple[int, ...] = ()  # ImageNet-1k rows that show this class, if any: optional help, never needed

    def __post_init__(self):
        object.__setattr__(self, "name", self.name or self.label.replace("_", " ").capitalize())
        object.__setattr__(self, "search", self.search or self.name.lower())
        object.__setattr__(self, "imagenet", tuple(self.imagenet))
        if not imagenet_rows(self.imagenet):
            raise ValueError(f"Class {self.label!r}: imagenet must list ImageNet-1k rows, 0 to 999 (docs/classes.md).")


@dataclass(frozen=True)
class Classes:
    """What a model answers: one of `kinds`, or "none of these" (`none_label`), with the page's words for each."""

    kinds: tuple[Kind, ...]
    title: str = "What is it?"
    question: str = ""  # the line under the title; made from the names when empty
    none_label: str = "none"  # the model's label for "none of these" (the folder of negatives, if any)
    none_name: str = "None of these"  # the verdict's words
    none_sentence: str = ""  # why there is no answer; made from the names when empty
    none_person: str = ""  # instead of none_sentence where the photo is mainly a person; made when empty

    def __post_init__(self):
        object.__setattr__(self, "kinds", tuple(self.kinds))
        if not self.kinds:
            raise ValueError("There are no classes: give the data folder one sub-folder of photos per class.")
        labels = self.labels
        if len(set(labels)) != len(labels) or self.none_label in labels:
            raise ValueError(f"Class labels must be distinct and differ from {self.none_label!r}: {labels}.")
        names = _listed([k.name.lower() for k in self.kinds])
        if not self.question:
            each = _listed([with_article(k.name.lower()) for k in self.kinds])
            object.__setattr__(self, "question", f"Give me photos: I'll tell you for each whether it is {each}.")
        if not self.none_sentence:
            object.__setattr__(self, "none_sentence", f"That doesn't look like any of these: {names}.")
        if not self.none_person:  # "Not a bear" says it already; else the names do
            verdict = self.none_name[:1].lower() + self.none_name[1:]
            each = _listed([with_article(k.name.lower()) for k in self.kinds])
            object.__setattr__(self, "none_person",
                               f"That looks like a person, {verdict if verdict.startswith('not ') else 'not ' + each}.")

    @property
    def labels(self) -> list[str]:
        return [k.label for k in self.kinds]

    @property
    def head_from_imagenet(self) -> bool:
        """Whether every class names ImageNet rows, so the class head starts from them (model.class_head) and
        needs no linear probe (train.probe_head)."""
        return all(k.imagenet for k in self.kinds)

    @property
    def vocab(self) -> list[str]:
        """The model's outputs, in order: every class, then "none of these"."""
        return [*self.labels, self.none_label]

    def name(self, label: str) -> str:
        """The page's words for a label of `vocab`."""
        if label == self.none_label:
            return self.none_name
        return next((k.name for k in self.kinds if k.label == label), label)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kinds"] = [dict(k, imagenet=list(k["imagenet"])) for k in d["kinds"]]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Classes":
        """From `to_dict()` (a model card), or from a classes file's table."""
        d = dict(d)
        kinds = d.pop("kinds", None) or d.pop("class", [])
        none = d.pop("none", {})
        known = {"title", "question", "none_label", "none_name", "none_sentence", "none_person"}
        fields = {k: d.pop(k) for k in list(d) if k in known}
        fields |= {f"none_{k}": v for k, v in none.items() if f"none_{k}" in known}
        d.pop("extra", None)  # cards written before 1.1 kept the file's other tables here; the recipe has them now
        if d:
            raise ValueError(f"a classes file holds classes and the page's words; {', '.join(sorted(d))} "
                             "belong{} in a recipe file (recipe.toml) or nowhere".format("s" * (len(d) == 1)))
        return cls(kinds=tuple(Kind(**k) for k in kinds), **fields)

    @classmethod
    def from_file(cls, path: Path) -> "Classes":
        try:
            return cls.from_dict(tomllib.loads(Path(path).read_text()))
        except (tomllib.TOMLDecodeError, TypeError, ValueError) as e:
            raise ValueError(f"{path} is not a valid classes file ({e}); see docs/classes.md.") from None

    @classmethod
    def from_folders(cls, root: Path) -> "Classes":
        """One class per sub-folder of `root` that holds files, in sorted order."""
        if not Path(root).is_dir():
            raise FileNotFoundError(f"The data folder {root} does not exist: give a folder of <class>/ sub-folders "
                                    "(train --data DIR, or train.ipynb's `path`).")
        folders = sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
        return cls(kinds=tuple(Kind(f) for f in folders))

    @classmethod
    def for_data(cls, root: Path, path: Path | None = None) -> "Classes":
        """The classes for training on `root`: the classes file at `path`, whose labels must be `root`'s
        sub-folders; without one, classes.toml in the working directory or else at the top of this
        checkout where its labels are those sub-folders; else the folder names."""
        folders = cls.from_folders(root).labels
        if path is not None:
            classes = cls.from_file(path)
            if sorted(classes.labels) != folders:
                raise ValueError(f"{path} names the classes {', '.join(sorted(classes.labels))} but {root} has the "
                                 f"folders {', '.join(folders)}: make them the same (docs/classes.md).")
            return classes
        found = [cls.from_file(p) for p in (Path.cwd() / FILE, Path(__file__).resolve().parent.parent / FILE)
                 if p.exists()]
        for classes in found:
            if sorted(classes.labels) == folders:
                return classes
        if (Path.cwd() / FILE).exists():  # a file written for these photos, with a typo, would otherwise go unseen
            log.warning("%s names the classes %s, but %s has the folders %s: the folder names are the classes, in "
                        "their own words. Make them the same to use the file's words (docs/classes.md).",
                        FILE, ", ".join(sorted(found[0].labels)), root, ", ".join(folders))
        return cls.from_folders(root)


def imagenet_rows(rows) -> bool:
    """Whether `rows` are rows of ImageNet-1k's classifier: whole numbers from 0 to 999."""
    return all(isinstance(r, int) and not isinstance(r, bool) and 0 <= r < 1000 for r in rows)


def with_article(words: str) -> str:
    """"a hat", "an otter", "a pair of shoes", and none for a plural: "pants", "shoes" (folder names often are)."""
    low = words.lower()
    head = low.split(" of ")[0]  # "pair of shoes", "bowl of noodles": the first noun says how many
    if head.endswith("s") and not head.endswith(("ss", "us", "is")):
        return words
    return f"{'an' if low[:1] in 'aeiou' else 'a'} {words}"


def _listed(words: list[str]) -> str:
    """"a", "a or b", "a, b or c"."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"
